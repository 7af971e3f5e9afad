"""Issue 20, item 4: the ACT config (configs/act_aloha.yaml, random weights) on one GPU. Run by
tools/gpu_speed.sh, which says how; the targets on one H100/H200 are <= 2 ms per chunk at batch 1
and >= 40 training steps/s at batch 8.

Latency: `model.sample` (z = prior mean, a chunk of 100 actions) at batch 1 on a ready 480x640
camera image and a random joint vector, the median of `--calls` calls each followed by
torch.cuda.synchronize, the variants alternating call by call: eager fp32, eager under bf16
autocast, and the bf16 call captured once as a CUDA graph on fixed input buffers and replayed
(were the capture to fail, torch.compile(mode="reduce-overhead") is timed instead and the error
printed). PyTorch's default precision settings throughout (no TF32 matrix products, no cuDNN
benchmark mode), as the Trainer and the policy run. The graph replays no Python: the model's per-call input check, a read of the inputs'
range on the host, is run on the first (eager) calls and left out of the capture. The chunks'
largest differences from eager fp32 are printed beside the timings.

Training: the real Trainer (bf16 autocast, fused AdamW, DataLoader workers with pinned memory)
on a small ACT-layout HDF5 dataset of random frames that this script writes, steps per second
from the log's examples_per_s over the log intervals after the first (warm-up: cuDNN's algorithm
search, the workers' start); the host synchronisations that the training run made are counted with
torch.cuda.set_sync_debug_mode("warn") (log steps read their figures on purpose).

    python tools/gpu_speed.py OUT                 # a CUDA device; writes OUT/summary.json
    python tools/gpu_speed.py OUT --dry-run       # the same code paths on a CPU at tiny sizes
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from act_benchmark import ALOHA_FEATURES, CAMERA, ROOT, timings  # tools/act_benchmark.py, beside this script

from cvae_bridge import ConditionalVAE
from cvae_bridge.config import RunConfig, load_run_config
from cvae_bridge.data.act_hdf5 import write_act_hdf5
from cvae_bridge.data.resolve import resolve_run_config
from cvae_bridge.training import train

TARGETS = {"latency_ms": 2.0, "steps_per_s": 40.0}
# The dry run's model: configs/act_aloha.yaml's structure at tiny sizes (as tools/gpu_act_aloha.sh's).
DRY_OVERRIDES = [
    "model.d_model=32",
    "model.targets.action.decoder.ff_dim=64",
    "model.targets.action.decoder.encoder_layers=1",
    "model.targets.action.decoder.decoder_layers=1",
    "model.posterior.layers=1",
    "model.posterior.ff_dim=64",
]
DRY_CAMERA = (48, 64)
GRAPH = "cuda graph bf16"


def act_config(path: str, overrides: list[str], camera: tuple[int, int]) -> RunConfig:
    """The config at `camera`'s size, its data-dependent sizes those of an ALOHA sim dataset."""
    size = f"[{camera[0]}, {camera[1]}]"
    config = load_run_config(
        path, [*overrides, f"data.image_size={size}", f"model.conditions.top.size={size}"]
    )
    features = {**ALOHA_FEATURES, "observation.images.top": {"dtype": "image", "shape": [*camera, 3]}}
    return resolve_run_config(config, features)[0]


def act_model(config: RunConfig, device: torch.device) -> ConditionalVAE:
    """Random weights and normalisation statistics that leave values as they are."""
    torch.manual_seed(0)
    model = ConditionalVAE(config.model)
    model.set_normalization(
        {n: (torch.zeros(m.mean.shape), torch.ones(m.std.shape)) for n, m in model.normalizers.items()}
    )
    return model.to(device).eval()


def captured(fn: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    """`fn` captured as a CUDA graph after warm-up calls on a side stream (torch's recipe); each
    call replays it and returns the same output buffer."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()

    def replay() -> torch.Tensor:
        graph.replay()
        return out

    return replay


def latency(
    config: RunConfig, camera: tuple[int, int], device: torch.device, args: argparse.Namespace
) -> dict:
    model = act_model(config, device)
    batch = {
        name: torch.rand(1, 3, *camera, device=device)
        if encoder.input_kind == "image"
        else torch.randn(1, *config.model.conditions[name].shape, device=device)
        for name, encoder in model.condition_encoders.items()
    }
    (action,) = model.decoders

    def chunk() -> torch.Tensor:
        return model.sample(batch, latent="mean")[action]

    def chunk_bf16() -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            return chunk()

    def unchecked_bf16() -> torch.Tensor:
        # The batch was checked by the eager calls; the check reads values on the host.
        model.check_batch = lambda conditions, targets=True: 1
        try:
            return chunk_bf16()
        finally:
            del model.check_batch

    calls: dict[str, Callable[[], torch.Tensor]] = {"eager fp32": chunk, "eager bf16": chunk_bf16}
    notes, errors = [], {}
    with torch.inference_mode():
        if device.type != "cuda":
            calls["bf16 without the input check (no CUDA graph on a CPU)"] = unchecked_bf16
            notes.append("no CUDA device: the CUDA graph is not captured; its function is timed eagerly")
        else:
            try:
                calls[GRAPH] = captured(unchecked_bf16)
            except Exception as error:  # reported below and in the summary; the compiled call instead
                errors[GRAPH] = f"{type(error).__name__}: {error}"
                print(f"CUDA graph capture failed ({errors[GRAPH][:500]}); timing torch.compile instead")
                # With the input check: its host reads break the graph there, the rest is captured.
                calls["torch.compile reduce-overhead bf16"] = torch.compile(
                    chunk_bf16, mode="reduce-overhead"
                )
        reference = chunk().clone()
        difference = {name: (fn().float() - reference).abs().max().item() for name, fn in calls.items()}
        seconds = timings(calls, args.warmup, args.calls, device)
    return {
        "median_ms": {name: statistics.median(v) * 1e3 for name, v in seconds.items()},
        "p90_ms": {name: float(np.percentile(v, 90)) * 1e3 for name, v in seconds.items()},
        "max_abs_difference_from_fp32": difference,
        "calls": args.calls,
        "notes": notes,
        "errors": errors,
    }


def random_episodes(count: int, frames: int, camera: tuple[int, int]) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [
        {
            "observation.state": rng.normal(size=(frames, 14)).astype(np.float32),
            "observation.images.top": rng.integers(0, 256, (frames, *camera, 3), dtype=np.uint8),
            "action": rng.normal(size=(frames, 14)).astype(np.float32),
        }
        for _ in range(count)
    ]


def training(
    path: str, overrides: list[str], camera: tuple[int, int], out: Path, args: argparse.Namespace
) -> dict:
    data = write_act_hdf5(out / "data", random_episodes(args.episodes, args.frames, camera))
    settings = {
        "data.type": "act_hdf5",
        "data.path": str(data),
        "train.output_dir": str(out / "run"),
        "train.steps": args.steps,
        "train.log_every": args.log_every,
        "train.batch_size": args.batch_size,
        "train.num_workers": args.workers,
        "train.checkpoint_every": 0,
        "train.eval_every": 0,
        "train.progress_bar": "false",
        "train.trackers": "[]",
    }
    config = act_config(path, [*overrides, *(f"{k}={v}" for k, v in settings.items())], camera)
    cuda = torch.cuda.is_available()
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if cuda:
            torch.cuda.set_sync_debug_mode("warn")
        try:
            train(config)
        finally:
            if cuda:
                torch.cuda.set_sync_debug_mode("default")
    seconds = time.perf_counter() - start
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    log = [json.loads(line) for line in (out / "run" / "log.jsonl").read_text().splitlines()]
    rows = [row for row in log if row["split"] == "train"][1:]  # the first interval warms up
    rates = [row["examples_per_s"] / args.batch_size for row in rows]
    return {
        "steps_per_s": statistics.median(rates),
        "steps_per_s_per_interval": rates,
        "data_wait": statistics.median(row["data_wait"] for row in rows),
        "batch_size": args.batch_size,
        "steps": args.steps,
        "log_every": args.log_every,
        "workers": args.workers,
        "mixed_precision": config.train.mixed_precision,
        "host_syncs": len(syncs) if cuda else None,  # counted on a CUDA device only
        "host_syncs_per_step": len(syncs) / args.steps if cuda else None,
        "first_syncs": sorted({str(w.filename) + ":" + str(w.lineno) for w in syncs})[:10],
        "run_s": seconds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out", type=Path)
    parser.add_argument("--config", default=str(ROOT / "configs" / "act_aloha.yaml"))
    parser.add_argument("--dry-run", action="store_true", help="a CPU, tiny sizes: the code paths only")
    parser.add_argument(
        "--calls", type=int, default=200, help="timed calls per latency variant (default: 200)"
    )
    parser.add_argument("--warmup", type=int, default=20, help="untimed calls first (default: 20)")
    parser.add_argument("--steps", type=int, default=400, help="training steps (default: 400)")
    parser.add_argument("--log-every", type=int, default=50, help="the log interval timed (default: 50)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=min(8, len(os.sched_getaffinity(0))))
    parser.add_argument("--episodes", type=int, default=4, help="random episodes written (default: 4)")
    parser.add_argument("--frames", type=int, default=100, help="frames per episode (default: 100)")
    args = parser.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_speed: no CUDA device (torch.cuda.is_available() is False); --dry-run runs on a CPU")
        return 2
    device = torch.device("cuda" if torch.cuda.is_available() and not args.dry_run else "cpu")
    overrides, camera = (DRY_OVERRIDES, DRY_CAMERA) if args.dry_run else ([], CAMERA)
    if device.type == "cpu":
        overrides = [*overrides, "train.cpu=true"]
    args.out.mkdir(parents=True, exist_ok=True)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(
        f"device     {name}, torch {torch.__version__}; {args.config} at {camera[0]}x{camera[1]}, random weights"
    )

    start = time.perf_counter()
    inference = latency(act_config(args.config, overrides, camera), camera, device, args)
    print(f"latency per chunk, batch 1 ({inference['calls']} calls each, alternating)")
    print(f"  {'':<54} {'median ms':>10} {'p90 ms':>8} {'max |d| vs fp32':>16}")
    for variant, median in inference["median_ms"].items():
        difference = inference["max_abs_difference_from_fp32"][variant]
        print(f"  {variant:<54} {median:10.3f} {inference['p90_ms'][variant]:8.3f} {difference:16.3g}")
    for note in inference["notes"]:
        print(f"  note: {note}")

    fit = training(args.config, overrides, camera, args.out, args)
    syncs = "" if fit["host_syncs"] is None else f", {fit['host_syncs_per_step']:.2f} host syncs per step"
    print(
        f"training   batch {fit['batch_size']}, {fit['mixed_precision']}, {fit['workers']} workers: "
        f"{fit['steps_per_s']:.1f} steps/s (median of {len(fit['steps_per_s_per_interval'])} intervals of "
        f"{fit['log_every']} steps), data wait {fit['data_wait']:.1%}{syncs}"
    )
    best = min(inference["median_ms"].values())
    summary = {
        "device": name,
        "torch": torch.__version__,
        "dry_run": args.dry_run,
        "camera": list(camera),
        "latency": inference,
        "training": fit,
        "targets": TARGETS,
        "met": {
            "latency_ms": best <= TARGETS["latency_ms"],
            "steps_per_s": fit["steps_per_s"] >= TARGETS["steps_per_s"],
        },
        "total_s": time.perf_counter() - start,
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"targets    latency {best:.2f} ms (<= {TARGETS['latency_ms']}), {fit['steps_per_s']:.1f} steps/s "
        f"(>= {TARGETS['steps_per_s']:.0f}); {summary['total_s']:.0f} s in all; {args.out / 'summary.json'}"
    )
    return 1 if inference["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
