"""A3: ACT's default image config (configs/act_aloha.yaml): parameter count, inference latency per
action chunk at batch 1 with one 480x640 camera, and the time of one training step.

    python tools/act_benchmark.py                              # CPU, all cores
    python tools/act_benchmark.py --threads 1 --train-steps 0  # latency on one core only
    python tools/act_benchmark.py --device cuda
    python tools/act_benchmark.py --onnx --train-steps 0       # ONNX Runtime beside PyTorch (the onnx extra)

Latency: `ActionChunkPolicy.select_action` re-planning at every call (image conversion, model
normalisation, the backbone, both transformers, z = 0), under torch.inference_mode; and the model's
`sample` alone on a ready float image. With --onnx the model is also exported (`cvae-bridge export
--format onnx`, into a temporary folder) and the same two figures are measured with ONNX Runtime
(`backend="onnxruntime"`, as many threads as PyTorch), the calls alternating with PyTorch's one by
one so that both see the same load. Training: forward, backward and an AdamW step on a batch of
8 (ACT's batch size). Weights are random: the timings do not depend on them. Figures are printed,
nothing is asserted; on a shared machine compare them with the load average printed beside them.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from cvae_bridge import ConditionalVAE
from cvae_bridge.config import RunConfig, load_run_config
from cvae_bridge.data.resolve import resolve_run_config
from cvae_bridge.pipelines import ActionChunkPolicy

ROOT = Path(__file__).resolve().parents[1]
CAMERA = (480, 640)
# An ALOHA sim dataset's features (`cvae-bridge demos --suite aloha --image-size 480 640`).
ALOHA_FEATURES = {
    "observation.state": {"dtype": "float32", "shape": [14]},
    "observation.images.top": {"dtype": "image", "shape": [*CAMERA, 3]},
    "action": {"dtype": "float32", "shape": [14]},
}


def timings(
    fns: dict[str, Callable[[], object]], warmup: int, calls: int, device: torch.device
) -> dict[str, list[float]]:
    """Seconds per call of each function, called in turn (one call of each per round, so that a
    change in the machine's load reaches all alike), after `warmup` untimed rounds."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    seconds: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(calls):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds[name].append(time.perf_counter() - start)
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


def onnx_policy(model: ConditionalVAE, config: RunConfig, folder: Path) -> ActionChunkPolicy:
    """The model saved, exported to ONNX and loaded back with the onnxruntime backend."""
    from cvae_bridge.export import ExportConfig, export_onnx

    model.save_pretrained(folder / "model", config)
    start = time.perf_counter()
    graph = export_onnx(ExportConfig(model=str(folder / "model"), out=str(folder / "onnx")))
    print(
        f"onnx       exported in {time.perf_counter() - start:.0f} s, opset {graph['opset']}, max |ONNX Runtime - "
        f"PyTorch| {graph['check']['max_abs_difference']:.2g} on {graph['check']['batch']} random examples"
    )
    return ActionChunkPolicy.from_pretrained(folder / "onnx", query_period=1, backend="onnxruntime")


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
    parser.add_argument(
        "--onnx", action="store_true", help="also time the exported ONNX graph in ONNX Runtime (CPU only)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    # configs/act_aloha.yaml takes its sizes and camera from the data: an ALOHA sim dataset's here
    config, _ = resolve_run_config(load_run_config(args.config), ALOHA_FEATURES)
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
    calls = {
        "select_action": lambda: policy.select_action(observation),
        "model.sample": lambda: model.sample(batch, latent="mean"),
    }
    with tempfile.TemporaryDirectory() as folder:
        if args.onnx:
            onnx = onnx_policy(model, config, Path(folder))
            cpu_batch = {name: value.cpu() for name, value in batch.items()}
            calls["select_action, onnxruntime"] = lambda: onnx.select_action(observation)
            calls["graph, onnxruntime"] = lambda: onnx.network(cpu_batch)
        with torch.inference_mode():
            cameras = f", {len(policy.images)} camera(s) of {CAMERA[0]}x{CAMERA[1]}" if policy.images else ""
            print(f"latency per chunk of {chunk} actions, batch 1{cameras}")
            for name, seconds in timings(calls, args.warmup, args.calls, device).items():
                print(f"  {name:<28} {summary(seconds)}")

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

        seconds = timings({"step": step}, warmup=3, calls=args.train_steps, device=device)["step"]
        print(f"training step, batch {size} (forward + backward + AdamW)")
        print(f"  step                 {summary(seconds)}")
    print(f"load       {' '.join(f'{x:.2f}' for x in os.getloadavg())} (1, 5, 15 min) after")
    return 0


if __name__ == "__main__":
    sys.exit(main())
