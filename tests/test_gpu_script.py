"""tools/gpu_act_aloha.sh, the one-command GPU run of configs/act_aloha.yaml, in its CPU dry run:
the same demos -> train (bf16) -> parallel rollout commands at tiny sizes, and its summary."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "gpu_act_aloha.sh"


def test_gpu_script_dry_run(tmp_path):
    pytest.importorskip("gym_aloha")
    pytest.importorskip("mujoco")
    # `python` in the script is this interpreter; one thread per process, as the script runs several
    env = {
        **os.environ,
        "DRY_RUN": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "OMP_NUM_THREADS": "1",
    }
    run = subprocess.run(
        ["bash", str(SCRIPT), str(tmp_path / "out")], env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (
        summary["episodes"] == 2
        and summary["seeds"] == [100000, 100001]
        and 0 <= summary["success_rate"] <= 1
    )
    assert (
        summary["steps_per_s"] > 0
        and summary["total_s"] == summary["demos_s"] + summary["train_s"] + summary["rollout_s"]
    )
    demos = json.loads((tmp_path / "out" / "data" / "demos.json").read_text())
    assert demos["image_size"] == [48, 64] and demos["workers"] == 2
    run_config = json.loads((tmp_path / "out" / "run" / "model" / "run_config.json").read_text())
    assert (
        run_config["train"]["mixed_precision"] == "bf16"
        and run_config["model"]["conditions"]["top"]["type"] == "image_backbone"
    )
