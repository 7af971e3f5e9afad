"""A3: ACT's default image config (configs/act_aloha.yaml) against ACT's original network
(tools/act_reference.py), in one process: parameters, FLOPs per action chunk, the machine's
measured peak, latency at batch 1 with one 480x640 camera, the fraction of the peak each reaches,
where the time goes by part, and one training step at batch 8.

    python tools/act_benchmark.py                              # CPU, all cores
    python tools/act_benchmark.py --train-steps 1 --calls 3    # a quick look
    python tools/act_benchmark.py --threads 1 --train-steps 0  # latency on one core only
    python tools/act_benchmark.py --device cuda
    python tools/act_benchmark.py --onnx --train-steps 0       # ONNX Runtime beside PyTorch (the onnx extra)
    python tools/act_benchmark.py --dtype bfloat16 --train-steps 0  # a bf16 policy beside the float32 one

FLOPs (tools/act_flops.py): torch.utils.flop_counter.FlopCounterMode over one call (matrix products, convolutions and
attention; a multiply-add is 2), with PyTorch's fused transformer fast path off (its kernels hide
their matrix products from the counter), and two of the counter's formulas corrected: attention on
a CPU is counted (it knows only the GPU kernels), and a grouped convolution's backward is (it leaves
out the groups: a depthwise convolution's came out a channel count too high). Peak: the best of a
few runs of a 4096x4096 fp32 matrix product and of a large 3x3 convolution, in this process with
the same threads; the fraction of peak is FLOPs / median latency / the larger of the two.

Latency: `ActionChunkPolicy.select_action` re-planning at every call (image conversion, model
normalisation, the backbone, both transformers, z = 0), under torch.inference_mode; the model's
`sample` alone on a ready float image; and the reference's forward on a ready normalised image.
The calls alternate one by one, so that a change in the machine's load reaches all alike. With
--onnx the model is also exported (`cvae-bridge export --format onnx`, into a temporary folder) and
timed in ONNX Runtime (`backend="onnxruntime"`, as many threads as PyTorch) among the others.
With --dtype bfloat16 a second policy over the same model runs under bf16 autocast, timed among
the others; its chunk is compared with the float32 policy's on the same observation (max |bf16 -
fp32| in action units, and over the fp32 chunk's largest |action|). The peak stays fp32's.

Parts (--profile): one torch.profiler session over a few calls of `model.sample` and of the
reference, alternating, split into backbone (the CNN), encoder and decoder (the transformer's
halves) and the rest, each with its FLOPs and its top operators by self time. The parts are found
by module, in both models alike: forward hooks installed here open and close a record_function
label around them (and count their FLOPs), nothing in either model changes. As in ACT's code, the
reference computes all 7 decoder layers and reads the first one's output.

Training: forward, backward and an AdamW step at batch 8 (ACT's batch size) for both, alternating;
the reference with ACT's loss (L1 + 10 KL) through its CVAE encoder and ACT's optimiser
(torch.optim.AdamW), cvae_bridge with its own loss and its trainer's optimiser (build_optimizer:
fused AdamW, same learning rate and weight decay); the first step of each is counted for FLOPs and
not timed. Weights are random: the timings do not depend on them. Figures are printed, nothing is
asserted; on a shared machine compare them with the load average printed beside them.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from act_flops import around, count_flops  # tools/act_flops.py, beside this script
from act_reference import ACTReference
from torch import nn
from torch.profiler import ProfilerActivity, record_function

from cvae_bridge import ConditionalVAE
from cvae_bridge.config import RunConfig, load_run_config
from cvae_bridge.data.resolve import resolve_run_config
from cvae_bridge.pipelines import ActionChunkPolicy
from cvae_bridge.training.optimizer import build_optimizer

ROOT = Path(__file__).resolve().parents[1]
CAMERA = (480, 640)
# An ALOHA sim dataset's features (`cvae-bridge demos --suite aloha --image-size 480 640`).
ALOHA_FEATURES = {
    "observation.state": {"dtype": "float32", "shape": [14]},
    "observation.images.top": {"dtype": "image", "shape": [*CAMERA, 3]},
    "action": {"dtype": "float32", "shape": [14]},
}
OURS, THEIRS = "cvae_bridge", "reference (ACT)"
REFERENCE = f"{THEIRS} forward"  # its latency row
PARTS = (
    "backbone",
    "encoder",
    "decoder",
)  # the CNN and the transformer's two halves; the remainder is "rest"
PROFILED_CALLS = 3


def timings(
    fns: dict[str, Callable[[], object]], warmup: int, calls: int, device: torch.device
) -> dict[str, list[float]]:
    """Seconds per call of each function, called in turn (one call of each per round, so that a
    change in the machine's load reaches all alike), after `warmup` untimed rounds."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(calls):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds[name].append(time.perf_counter() - start)
    return seconds


@torch.inference_mode()
def peak_rates(device: torch.device, repeats: int = 3) -> dict[str, float]:
    """GFLOP/s of a 4096x4096 fp32 matrix product and of a 3x3 convolution (256 -> 256 channels on
    4 x 60 x 80), the best of `repeats` timed runs each, after the untimed one that counts them."""
    a, b = torch.randn(4096, 4096, device=device), torch.randn(4096, 4096, device=device)
    images, weight = torch.randn(4, 256, 60, 80, device=device), torch.randn(256, 256, 3, 3, device=device)
    cases = {
        "matmul 4096x4096 fp32": lambda: a @ b,
        "conv 3x3 256ch 4x60x80": lambda: F.conv2d(images, weight, padding=1),
    }
    rates = {}
    for name, fn in cases.items():
        flops = count_flops(fn)["total"]
        rates[name] = flops / min(timings({name: fn}, 0, repeats, device)[name]) / 1e9
    return rates


def part_times(
    calls: dict[str, Callable[[], object]], parts: dict[str, dict[str, list[nn.Module]]], device: torch.device
) -> dict[str, dict[str, dict[str, float]]]:
    """For each model (the keys of both): milliseconds per call by part (PARTS and "rest") and, within
    a part, by operator (self time: CPU time on a CPU, kernel time on a GPU), from one torch.profiler
    session over PROFILED_CALLS calls of each, alternating. A part's time outside any operator
    (Python, hooks) is listed as "(between operators)"."""
    ranges: list[record_function] = []

    def enter(part: str) -> None:
        ranges.append(record_function(part).__enter__())

    def leave(part: str) -> None:
        ranges.pop().__exit__(None, None, None)

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    every_part = {part: [module for model in parts.values() for module in model[part]] for part in PARTS}
    with torch.profiler.profile(activities=activities) as profiler, around(every_part, enter, leave):
        for _ in range(PROFILED_CALLS):
            for model, fn in calls.items():
                with record_function(model):
                    fn()
                if device.type == "cuda":
                    torch.cuda.synchronize()
    times = {model: {part: defaultdict(float) for part in (*PARTS, "rest")} for model in calls}
    for event in profiler.events():
        part, ancestor = None, event
        while ancestor is not None and ancestor.name not in calls:
            if part is None and ancestor.name in PARTS:
                part = ancestor.name
            ancestor = ancestor.cpu_parent
        if ancestor is None:  # the profiler's own events, or kernels listed apart from their operators
            continue
        spent = event.self_device_time_total if device.type == "cuda" else event.self_cpu_time_total
        name = "(between operators)" if event.name in (*PARTS, *calls) else event.name
        times[ancestor.name][part or "rest"][name] += spent / PROFILED_CALLS / 1e3
    return times


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


def print_rates(title: str, seconds: dict[str, list[float]], flops: dict[str, int], peak: float) -> None:
    """A table: GFLOP per call, median and p90 time, GFLOP/s at the median, its fraction of `peak`."""
    print(title)
    print(f"  {'':<28} {'GFLOP':>7} {'median ms':>10} {'p90 ms':>8} {'GFLOP/s':>8} {'of peak':>8}")
    for name, values in seconds.items():
        median, p90 = statistics.median(values), float(np.percentile(values, 90))
        rate = flops[name] / median / 1e9
        print(
            f"  {name:<28} {flops[name] / 1e9:7.1f} {median * 1e3:10.1f} {p90 * 1e3:8.1f} {rate:8.1f} {rate / peak:8.1%}"
        )


def print_parts(
    times: dict[str, dict[str, dict[str, float]]], flops: dict[str, dict[str, int]], top: int = 4
) -> None:
    """Per model (the keys of both): each part's profiled ms, share, GFLOP and GFLOP/s; then each
    part's `top` operators by self time."""
    print(f"time per part (torch.profiler, {PROFILED_CALLS} calls each, ms per call)")
    print(f"  {'':<9}" + "".join(f"   {model:<32}" for model in times))
    print(f"  {'part':<9}" + f"   {'ms':>8} {'share':>6} {'GFLOP':>7} {'GFLOP/s':>8}" * len(times))
    rows: dict[str, list[str]] = defaultdict(list)
    for model, parts in times.items():
        ms = {part: sum(ops.values()) for part, ops in parts.items()}
        ms["total"] = sum(ms.values())
        counted = {part: flops[model].get(part, 0) for part in PARTS}
        counted["rest"] = flops[model]["total"] - sum(counted.values())
        counted["total"] = flops[model]["total"]
        for part, spent in ms.items():
            gflop = counted[part] / 1e9
            rows[part].append(
                f"   {spent:8.1f} {spent / ms['total']:6.1%} {gflop:7.1f} {gflop / spent * 1e3:8.1f}"
            )
    for part, cells in rows.items():
        print(f"  {part:<9}" + "".join(cells))
    print("  top operators per part (self time, ms per call)")
    for model, parts in times.items():
        for part, ops in parts.items():
            ranked = sorted(ops.items(), key=lambda item: -item[1])[:top]
            print(f"    {model:<16} {part:<9} " + ", ".join(f"{name} {ms:.1f}" for name, ms in ranked))


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
        "--profile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="split the inference time by part with torch.profiler (default: on)",
    )
    parser.add_argument(
        "--onnx", action="store_true", help="also time the exported ONNX graph in ONNX Runtime (CPU only)"
    )
    parser.add_argument(
        "--dtype",
        choices=["bfloat16"],
        help="also time a policy at this inference precision (ActionChunkPolicy's dtype)",
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
    reference = ACTReference().to(device).eval()
    print(f"config     {args.config}")
    print(
        f"machine    {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, {args.threads} threads, device {device}"
    )
    print(f"load       {' '.join(f'{x:.2f}' for x in os.getloadavg())} (1, 5, 15 min) before")
    rates = peak_rates(device)
    peak = max(rates.values())
    print(
        "peak       "
        + ", ".join(f"{name} {rate:.1f} GFLOP/s" for name, rate in rates.items())
        + " (best of 3)"
    )
    print(f"parameters {sum(p.numel() for p in model.parameters()):,}")
    for name, part in model.named_children():
        print(f"  {name:<20} {sum(p.numel() for p in part.parameters()):>12,}")
    print(
        f"  reference (ACT)      {sum(p.numel() for p in reference.parameters()):>12,}"
        f"  (ResNet-18 {sum(p.numel() for p in reference.backbone.parameters()):,}; as in ACT's code all"
        " 7 decoder layers run and the first one's output is read)"
    )

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
    qpos, image = torch.randn(1, 14, device=device), torch.randn(1, 3, *CAMERA, device=device)
    calls = {
        "select_action": lambda: policy.select_action(observation),
        "model.sample": lambda: model.sample(batch, latent="mean"),
        REFERENCE: lambda: reference(qpos, image),
    }
    # The parts to split time and FLOPs by: the CNN, the transformer's encoder and decoder.
    action = model.decoders[policy.action_key]
    parts = {
        OURS: {
            "backbone": [model.condition_encoders[name].backbone for name in policy.images],
            "encoder": [action.encoder],
            "decoder": [action.decoder],
        },
        THEIRS: {
            "backbone": [reference.backbone],
            "encoder": [reference.transformer.encoder],
            "decoder": [reference.transformer.decoder],
        },
    }
    with tempfile.TemporaryDirectory() as folder:
        if args.dtype:
            low = ActionChunkPolicy(
                model, config.data.features, config.data.image_size, query_period=1, dtype=args.dtype
            )
            calls[f"select_action, {args.dtype}"] = lambda: low.select_action(observation)
        if args.onnx:
            onnx = onnx_policy(model, config, Path(folder))
            cpu_batch = {name: value.cpu() for name, value in batch.items()}
            calls["select_action, onnxruntime"] = lambda: onnx.select_action(observation)
            calls["graph, onnxruntime"] = lambda: onnx.network(cpu_batch)
        with torch.inference_mode():
            counts = {
                OURS: count_flops(calls["model.sample"], parts[OURS]),
                THEIRS: count_flops(calls[REFERENCE], parts[THEIRS]),
            }
            ours, theirs = counts[OURS]["total"], counts[THEIRS]["total"]
            flops = {name: theirs if name == REFERENCE else ours for name in calls}
            seconds = timings(calls, args.warmup, args.calls, device)
            cameras = f", {len(policy.images)} camera(s) of {CAMERA[0]}x{CAMERA[1]}" if policy.images else ""
            print_rates(
                f"latency per chunk of {chunk} actions, batch 1{cameras} ({args.calls} calls each, alternating)",
                seconds,
                flops,
                peak,
            )
            median = {name: statistics.median(values) for name, values in seconds.items()}
            print(
                f"  cvae_bridge / reference: select_action {median['select_action'] / median[REFERENCE]:.2f}, "
                f"model.sample {median['model.sample'] / median[REFERENCE]:.2f} (medians); FLOPs {ours / theirs:.2f}"
            )
            if args.dtype:
                fp32, low_chunk = (
                    policy.predict_action_chunk(observation),
                    low.predict_action_chunk(observation),
                )
                difference = float((low_chunk - fp32).abs().max())
                print(
                    f"  {args.dtype} / reference fp32: select_action "
                    f"{median[f'select_action, {args.dtype}'] / median[REFERENCE]:.2f}; max |{args.dtype} - fp32| "
                    f"{difference:.3g} in action units, {difference / float(fp32.abs().max()):.2%} of max |action| "
                    f"{float(fp32.abs().max()):.3g} (chunk {tuple(fp32.shape)}, returned as {low_chunk.dtype})"
                )
            if args.profile:
                sample = {OURS: calls["model.sample"], THEIRS: calls[REFERENCE]}
                times = part_times(sample, parts, device)
                print_parts(times, counts)

    if args.train_steps:
        model.train()
        reference.train()
        size = args.batch_size
        train_batch = {
            name: torch.rand(size, 3, *CAMERA, device=device)
            if name in policy.images
            else torch.randn(size, *config.model.conditions[name].shape, device=device)
            for name in policy.inputs
        }
        train_batch[policy.action_key] = torch.randn(size, *action.event_shape, device=device)
        train_batch[f"{policy.action_key}_mask"] = torch.ones(size, chunk, dtype=torch.bool, device=device)
        # ACT's inputs: qpos, a normalised image, the action chunk and its padding (none)
        act_batch = {
            "qpos": torch.randn(size, 14, device=device),
            "image": torch.randn(size, 3, *CAMERA, device=device),
            "actions": torch.randn(size, reference.query_embed.num_embeddings, 14, device=device),
            "is_pad": torch.zeros(
                size, reference.query_embed.num_embeddings, dtype=torch.bool, device=device
            ),
        }
        lr, decay = config.train.lr, config.train.weight_decay
        optimizers = {
            OURS: build_optimizer(model, config.train),  # the trainer's: fused AdamW
            THEIRS: torch.optim.AdamW(reference.parameters(), lr=lr, weight_decay=decay),  # ACT's
        }
        losses = {
            OURS: lambda: model(train_batch)["loss"],
            THEIRS: lambda: reference.loss(**act_batch)["loss"],
        }

        def step(name: str) -> Callable[[], None]:
            def run() -> None:
                losses[name]().backward()
                optimizers[name].step()
                optimizers[name].zero_grad(set_to_none=True)

            return run

        steps = {name: step(name) for name in losses}
        step_flops = {name: count_flops(fn)["total"] for name, fn in steps.items()}  # the untimed first steps
        seconds = timings(steps, warmup=0, calls=args.train_steps, device=device)
        print_rates(
            f"training step, batch {size} (forward + backward + AdamW; {args.train_steps} steps each, alternating)",
            seconds,
            step_flops,
            peak,
        )
        median = {name: statistics.median(values) for name, values in seconds.items()}
        print(
            f"  cvae_bridge / reference: {median[OURS] / median[THEIRS]:.2f} (medians); "
            f"FLOPs {step_flops[OURS] / step_flops[THEIRS]:.2f}"
        )
    print(f"load       {' '.join(f'{x:.2f}' for x in os.getloadavg())} (1, 5, 15 min) after")
    return 0


if __name__ == "__main__":
    sys.exit(main())
