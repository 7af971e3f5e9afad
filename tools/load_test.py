"""Load test: a long CPU training run of a tiny model, watching memory and data-loading stalls.

    OMP_NUM_THREADS=1 python tools/load_test.py                      # 10,000 steps, num_workers 0 and 2
    OMP_NUM_THREADS=1 python tools/load_test.py --steps 2000 --num-workers 2

Each num_workers setting trains in a fresh process: the label-conditioned conv VAE of
tests/test_training.py on the 8x8 digits, batch 64, through `cvae_bridge.training.train`
unchanged. The trainer is only observed, by wrapping `Trainer._batches` (time blocked in
`next(batches)`) and `Trainer._step` (the optimiser step) from here. Every `--every` steps it
samples VmRSS and VmHWM (peak RSS) from /proc of the main process and of its DataLoader workers.

Reported per setting: RSS and peak RSS at each mark (flat memory: compare the 1k and last mark),
the fraction of the training loop's wall time spent waiting for data, and steps/s. Linux only.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODEL = {
    "d_model": 32,
    "latent_dim": 4,
    "conditions": {"label": {"type": "vector", "num_classes": 10}},
    "targets": {
        "image": {
            "encoder": {
                "type": "image",
                "channels": 1,
                "widths": [8],
                "blocks": 0,
                "tokens": "flat",
                "size": [8, 8],
            },
            "decoder": {"type": "image", "channels": 1, "size": [8, 8], "widths": [8], "blocks": 0},
            "likelihood": {"type": "bernoulli"},
        }
    },
}


def memory_mb(pid: int | str = "self") -> dict[str, float]:
    """VmRSS (resident now) and VmHWM (peak resident) of a process, in MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024  # kB
    return fields


def children() -> list[int]:
    """PIDs of this process's live children (the DataLoader workers)."""
    pids = []
    for task in Path("/proc/self/task").iterdir():
        pids += [int(p) for p in (task / "children").read_text().split()]
    return pids


def run_one(steps: int, num_workers: int, every: int, output_dir: Path) -> dict:
    """Train in this process and return the measurements."""
    from cvae_bridge.config import RunConfig, from_dict
    from cvae_bridge.training import Trainer, train

    clock = {"wait": 0.0, "step": 0.0, "steps": 0, "start": None}
    marks: list[dict] = []
    original_batches, original_step = Trainer._batches, Trainer._step

    def timed_batches(self: Trainer, micro_step: int):
        batches = original_batches(self, micro_step)
        while True:
            start = time.perf_counter()
            if clock["start"] is None:
                clock["start"] = start  # the loop's wall time starts with its first batch
            batch = next(batches)
            clock["wait"] += time.perf_counter() - start
            yield batch

    def timed_step(self: Trainer, micro_batches, step: int):
        start = time.perf_counter()
        figures = original_step(self, micro_batches, step)
        clock["step"] += time.perf_counter() - start
        clock["steps"] += 1
        if clock["steps"] % every == 0:
            wall = time.perf_counter() - clock["start"]
            workers = [memory_mb(pid) for pid in children()]
            marks.append(
                {
                    "step": clock["steps"],
                    "wall_s": wall,
                    "data_wait_s": clock["wait"],
                    "step_s": clock["step"],
                    "main": memory_mb(),
                    "workers": workers,
                }
            )
        return figures

    Trainer._batches, Trainer._step = timed_batches, timed_step
    config = from_dict(
        RunConfig,
        {
            "model": MODEL,
            "data": {"type": "digits", "binarize": "dynamic"},
            "train": {
                "output_dir": str(output_dir),
                "steps": steps,
                "batch_size": 64,
                "num_workers": num_workers,
                "log_every": 100,
                "checkpoint_every": 0,
                "eval_every": 0,
                "trackers": [],
                "progress_bar": False,
            },
        },
    )
    result = train(config)
    assert result.status == "completed", result
    return {"num_workers": num_workers, "steps": steps, "marks": marks}


def summary(run: dict) -> str:
    marks = run["marks"]
    first, last = marks[0], marks[-1]
    lines = [f"num_workers={run['num_workers']}: {run['steps']} steps"]
    for mark in marks:
        workers = " ".join(f"{w['VmRSS']:.0f}/{w['VmHWM']:.0f}" for w in mark["workers"]) or "-"
        lines.append(
            f"  step {mark['step']:>6}: main RSS {mark['main']['VmRSS']:7.1f} MiB, peak {mark['main']['VmHWM']:7.1f} MiB; "
            f"workers RSS/peak MiB {workers}; data wait {mark['data_wait_s'] / mark['wall_s']:6.1%} of {mark['wall_s']:7.1f} s"
        )
    span = last["step"] - first["step"]
    rate = span / (last["wall_s"] - first["wall_s"]) if span else float("nan")
    growth = last["main"]["VmHWM"] - first["main"]["VmHWM"]
    lines.append(
        f"  peak RSS {first['main']['VmHWM']:.1f} MiB at step {first['step']} -> {last['main']['VmHWM']:.1f} MiB at step "
        f"{last['step']} ({growth:+.1f} MiB); data wait {last['data_wait_s'] / last['wall_s']:.1%} of the loop; "
        f"{rate:.1f} steps/s (steps {first['step']}..{last['step']})"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--num-workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--every", type=int, default=1000, help="sample memory and timings every N steps")
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    parser.add_argument(
        "--child", action="store_true", help=argparse.SUPPRESS
    )  # one setting, results on stdout
    args = parser.parse_args(argv)

    if args.child:
        with tempfile.TemporaryDirectory() as out:
            print(json.dumps(run_one(args.steps, args.num_workers[0], args.every, Path(out) / "run")))
        return 0
    runs = []
    for workers in args.num_workers:
        # A fresh process per setting: peak RSS must not carry over from the previous run.
        command = [
            sys.executable,
            __file__,
            "--child",
            "--steps",
            str(args.steps),
            "--num-workers",
            str(workers),
            "--every",
            str(args.every),
        ]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            sys.stderr.write(done.stderr)
            return done.returncode
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(summary(runs[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(runs, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
