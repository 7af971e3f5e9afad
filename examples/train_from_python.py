"""Train a text-to-image model from Python and generate images from prompts.

    python examples/train_from_python.py                        # the quickstart's run, ~10 min on a CPU
    python examples/train_from_python.py --steps 20 --limit 512 # a smoke run, well under a minute

The same as `cvae-bridge train` followed by `cvae-bridge generate`, as plain calls: a run config
(the built-in MNIST default here; `load_run_config("configs/....yaml", overrides)` for a file),
`train`, then the pipeline loaded from the exported model folder.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cvae_bridge import TextToImagePipeline, load_run_config
from cvae_bridge.training import train


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2500, help="optimiser steps")
    parser.add_argument("--limit", type=int, help="use only the first N images of each split")
    parser.add_argument("--out", default="runs/example_text_to_image", help="the run folder")
    args = parser.parse_args(argv)

    # Overrides are `--set` strings: any field of the run config, checked as a file's would be.
    overrides = [f"train.steps={args.steps}", f"train.output_dir={args.out}", "train.eval_every=0"]
    if args.limit:
        overrides.append(f"data.limit={args.limit}")
    config = load_run_config(None, overrides)
    result = train(
        config
    )  # result.status is "interrupted" after Ctrl-C: rerun with train(config, resume=True)

    pipe = TextToImagePipeline.from_pretrained(result.model_dir)
    prompts = ["a handwritten three", "the digit seven"]
    output = pipe(prompts, num_images_per_prompt=4, temperature=0.7, seed=0)
    samples = Path(args.out) / "example_samples"
    samples.mkdir(parents=True, exist_ok=True)
    for index, (image, prompt) in enumerate(zip(output.images, output.prompts)):
        image.save(samples / f"{index:02d}_{prompt.replace(' ', '_')}.png")
    print(f"model in {result.model_dir}; {len(output.images)} samples in {samples}")
    return result.model_dir


if __name__ == "__main__":
    main()
