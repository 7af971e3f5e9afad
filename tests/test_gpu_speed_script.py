"""tools/gpu_speed.sh, the one-command GPU measurement of issue 20 item 4 (batch-1 latency, training
steps/s of configs/act_aloha.yaml), in its CPU dry run: the same code paths at tiny sizes, and the
summary's figures."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "gpu_speed.sh"


def positive(value: float) -> bool:
    return math.isfinite(value) and value > 0


def test_gpu_speed_dry_run(tmp_path):
    pytest.importorskip("h5py")
    env = {
        **os.environ,
        "DRY_RUN": "1",
        "CI": "true",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "OMP_NUM_THREADS": "1",
    }
    out = tmp_path / "out"
    run = subprocess.run(
        ["bash", str(SCRIPT), str(out)], env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    assert "no CUDA device: the CUDA graph is not captured" in run.stdout
    summary = json.loads((out / "summary.json").read_text())
    latency = summary["latency"]
    assert summary["dry_run"] and summary["camera"] == [48, 64] and not latency["errors"]
    assert {"eager fp32", "eager bf16"} <= set(latency["median_ms"]) and len(latency["median_ms"]) == 3
    assert all(positive(v) for v in [*latency["median_ms"].values(), *latency["p90_ms"].values()])
    # bf16 changes the chunk, but only by bf16's rounding
    assert all(0 <= d < 0.5 for d in latency["max_abs_difference_from_fp32"].values())
    training = summary["training"]
    assert training["mixed_precision"] == "bf16" and training["steps"] == 6 and training["workers"] == 1
    assert len(training["steps_per_s_per_interval"]) == 2  # three intervals of two steps, less the first
    assert positive(training["steps_per_s"]) and 0 <= training["data_wait"] <= 1
    log = (out / "run" / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in log] == [2, 4, 6]
