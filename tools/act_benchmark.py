"""A3: ACT's default image config (configs/act_aloha.yaml): parameter count, inference latency per
action chunk at batch 1 with one 480x640 camera, and the time of one training step.

    python tools/act_benchmark.py                              # CPU, all cores
    python tools/act_benchmark.py --threads 1 --train-steps 0  # latency on one core only
    python tools/act_benchmark.py --device cuda

Latency: `ActionChunkPolicy.select_action` re-planning at every call (image conversion, model
normalisation, the backbone, both transformers, z = 0), under torch.inference_mode; and the model's
`sample` alone on a ready float image. Training: forward, backward and an AdamW step on a batch of
8 (ACT's batch size). Weights are random: the timings do not depend on them. Figures are printed,
nothing is asserted; on a shared machine compare them with the load average printed beside them.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from cvae_bridge import ConditionalVAE
from cvae_bridge.config import load_run_config
from cvae_bridge.pipelines import ActionChunkPolicy

ROOT = Path(__file__).resolve().parents[1]
CAMERA = (480, 640)


def timings(fn: Callable[[], object], warmup: int, calls: int, device: torch.device) -> list[float]:
    """Seconds per call of `fn`, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    return seconds


def summary(seconds: list[float]) -> str:
    p90 = float(np.percentile(seconds, 90))
    return f"median {statistics.median(seconds) * 1e3:8.1f} ms   p90 {p90 * 1e3:8.1f} ms   ({len(seconds)} calls)"


def cpu_name() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default=str(ROOT / "configs" / "act_aloha.yaml"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--threads",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="intra-op threads (default: all cores)",
    )
    parser.add_argument("--calls", type=int, default=50, help="timed inference calls (default: 50)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls first (default: 5)")
    parser.add_argument(
        "--train-steps", type=int, default=20, help="timed training steps; 0 skips training (default: 20)"
    )
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    config = load_run_config(args.config)
    torch.manual_seed(0)
    model = ConditionalVAE(config.model)
    # Statistics that leave values as they are: timings do not depend on them.
    model.set_normalization(
        {n: (torch.zeros(m.mean.shape), torch.ones(m.std.shape)) for n, m in model.normalizers.items()}
    )
    model.to(device)
    print(f"config     {args.config}")
    print(
        f"machine    {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, {args.threads} threads, device {device}"
    )
    print(f"load       {' '.join(f'{x:.2f}' for x in os.getloadavg())} (1, 5, 15 min) before")
    print(f"parameters {sum(p.numel() for p in model.parameters()):,}")
    for name, part in model.named_children():
        print(f"  {name:<20} {sum(p.numel() for p in part.parameters()):>12,}")

    # One environment: a qpos vector per vector input, a uint8 camera frame per image input.
    policy = ActionChunkPolicy(model, config.data.features, config.data.image_size, query_period=1)
    rng = np.random.default_rng(0)
    observation = {
        key: rng.integers(0, 256, (*CAMERA, 3), dtype=np.uint8)
        if name in policy.images
        else rng.normal(size=config.model.conditions[name].shape).astype(np.float32)
        for name, key in policy.inputs.items()
    }
    batch, _ = policy.model_inputs(observation)
    chunk = policy.chunk_size
    with torch.inference_mode():
        cameras = f", {len(policy.images)} camera(s) of {CAMERA[0]}x{CAMERA[1]}" if policy.images else ""
        print(f"latency per chunk of {chunk} actions, batch 1{cameras}")
        print(
            f"  select_action        {summary(timings(lambda: policy.select_action(observation), args.warmup, args.calls, device))}"
        )
        print(
            f"  model.sample         {summary(timings(lambda: model.sample(batch, latent='mean'), args.warmup, args.calls, device))}"
        )

    if args.train_steps:
        model.train()
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=config.train.lr, weight_decay=config.train.weight_decay
        )
        size, action = args.batch_size, model.decoders[policy.action_key]
        train_batch = {
            name: torch.rand(size, 3, *CAMERA, device=device)
            if name in policy.images
            else torch.randn(size, *config.model.conditions[name].shape, device=device)
            for name in policy.inputs
        }
        train_batch[policy.action_key] = torch.randn(size, *action.event_shape, device=device)
        train_batch[f"{policy.action_key}_mask"] = torch.ones(size, chunk, dtype=torch.bool, device=device)

        def step() -> None:
            model(train_batch)["loss"].backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        seconds = timings(step, warmup=3, calls=args.train_steps, device=device)
        print(f"training step, batch {size} (forward + backward + AdamW)")
        print(f"  step                 {summary(seconds)}")
    print(f"load       {' '.join(f'{x:.2f}' for x in os.getloadavg())} (1, 5, 15 min) after")
    return 0


if __name__ == "__main__":
    sys.exit(main())
