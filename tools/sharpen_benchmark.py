"""Sharper decoders: Frechet distance of prior samples with and without the perceptual and
adversarial terms (train.sharpen.image), on MNIST and Fashion-MNIST.

Each dataset trains configs/beta_vae.yaml's convolutional VAE (10-D latent) at beta = 1 twice, for
the same number of steps: with the Bernoulli likelihood alone, and with the perceptual and
patch-adversarial terms switched on for the last --sharpen-steps (start_step), as image
autoencoders fine-tune with them. Both are scored by the Frechet distance on EfficientNet-Lite0
features between samples from the prior and the real test images, beside the floor (real train
vs real test images). Runs are trained into --out and resumed from there.

    python tools/sharpen_benchmark.py --steps 3000 --sharpen-steps 1000 --fid-samples 2000
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from classic_vaes import run  # the same train-then-evaluate step

DATASETS = ("mnist", "fashion_mnist")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=3000, help="training steps of every run (default: 3000)")
    parser.add_argument(
        "--sharpen-steps",
        type=int,
        default=1000,
        help="last steps with the sharpening terms on (default: 1000)",
    )
    parser.add_argument(
        "--perceptual-weight",
        type=float,
        default=100.0,
        help="beside a likelihood of ~100-250 nats per image (default: 100)",
    )
    parser.add_argument("--adversarial-weight", type=float, default=10.0, help="(default: 10)")
    parser.add_argument(
        "--perceptual-resolution",
        type=int,
        default=32,
        help="input size of the feature network (default: 32, for CPUs)",
    )
    parser.add_argument("--fid-samples", type=int, default=2000)
    parser.add_argument(
        "--out", type=Path, default=Path("runs/sharpen"), help="folder of the runs (default: runs/sharpen)"
    )
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", help="device of the evaluation"
    )
    args = parser.parse_args(argv)
    if not 0 < args.sharpen_steps <= args.steps:
        parser.error(f"--sharpen-steps must lie in [1, --steps = {args.steps}], got {args.sharpen_steps}")

    sharpen = "train.sharpen.image"
    variants = {
        "likelihood only": [],
        "+ perceptual + adversarial": [
            f"{sharpen}.perceptual_weight={args.perceptual_weight}",
            f"{sharpen}.adversarial_weight={args.adversarial_weight}",
            f"{sharpen}.perceptual_resolution={args.perceptual_resolution}",
            f"{sharpen}.start_step={args.steps - args.sharpen_steps}",
        ],
    }
    print(
        f"== conv VAE (beta_vae.yaml at beta 1), {args.steps} steps; Frechet distance of {args.fid_samples} prior samples vs the test set"
    )
    print(f"{'dataset':<14} {'decoder loss':<28} {'FID':>7} {'floor':>7} {'NLL nats':>9} {'minutes':>8}")
    for dataset in DATASETS:
        for label, settings in variants.items():
            overrides = [
                f"data.type={dataset}",
                "model.kl.beta=1",
                *settings,
                "eval.metrics=[fid, nll]",
                f"eval.fid_samples={args.fid_samples}",
                "eval.nll_samples=100",
                "eval.nll_examples=1000",
            ]
            suffix = f"-{dataset}" + ("-sharpen" if settings else "")
            metrics, _, minutes = run("beta_vae", args.out, args.steps, overrides, args.device, suffix)
            print(
                f"{dataset:<14} {label:<28} {metrics['fid']:>7.2f} {metrics['fid_floor']:>7.2f} {metrics['nll_nats']:>9.2f} {minutes:>8.1f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
