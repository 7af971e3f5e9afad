"""T1-T4: text-to-image quality on MNIST / Fashion-MNIST, trained and evaluated in one run.

Trains CONFIG (unless --model names a trained folder; a run already in the config's output folder
is resumed), then evaluates it with the reporting settings: faithfulness on held-out phrasings
(a project-trained classifier), test NLL by IWAE with K samples on dynamically binarised images,
Frechet distance on EfficientNet-Lite0 features next to the train-vs-test floor, diversity; all
sampled at the config's eval temperature unless --temperature is given. Prints the figures and
the wall time of each part.

    python tools/text_to_image_benchmark.py configs/mnist_text_to_image.yaml --k 5000 --nll-examples 1000
    python tools/text_to_image_benchmark.py configs/fashion_text_to_image.yaml --k 1000 --nll-examples 1000
    python tools/text_to_image_benchmark.py --model runs/mnist_text_to_image/model --temperature 1.0
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from cvae_bridge.config import load_run_config
from cvae_bridge.evaluation import evaluate
from cvae_bridge.training import train


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("config", nargs="?", help="run config to train (not with --model)")
    parser.add_argument("--model", help="evaluate this trained model folder instead of training")
    parser.add_argument("--set", action="append", default=[], help="training overrides, key=value")
    parser.add_argument("--k", type=int, default=5000, help="IWAE samples per test image")
    parser.add_argument("--nll-examples", type=int, default=10000)
    parser.add_argument("--fid-samples", type=int, default=10000)
    parser.add_argument(
        "--temperature", type=float, help="sampling temperature (default: the config's eval.temperature)"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", help="evaluation folder (default: eval_benchmark/ beside the model)")
    args = parser.parse_args()
    if (args.config is None) == (args.model is None):
        parser.error("give either CONFIG (train, then evaluate) or --model (evaluate a trained folder)")

    times = {}
    model_dir = args.model
    if model_dir is None:
        start = time.perf_counter()
        result = train(load_run_config(args.config, args.set), resume=True)
        if result.status == "interrupted":
            raise SystemExit(
                f"training stopped at step {result.step}; run the same command again to resume it"
            )
        model_dir = result.model_dir
        times["train_s"] = time.perf_counter() - start
    out = Path(args.out or Path(model_dir).parent / "eval_benchmark")
    start = time.perf_counter()
    metrics = evaluate(
        model_dir,
        out,
        device=args.device,
        overrides=[
            f"eval.nll_samples={args.k}",
            f"eval.nll_examples={args.nll_examples}",
            f"eval.fid_samples={args.fid_samples}",
        ]
        + ([f"eval.temperature={args.temperature}"] if args.temperature is not None else []),
    )
    times["eval_s"] = time.perf_counter() - start
    print(
        json.dumps({**metrics, **{k: round(v, 1) for k, v in times.items()}, "device": args.device}, indent=2)
    )


if __name__ == "__main__":
    main()
