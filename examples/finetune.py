"""Fine-tune a trained text-to-image model on your own captioned images.

    python examples/finetune.py --base runs/mnist_text_to_image/model --images data/my_images
    python examples/finetune.py --base ... --images ... --lora          # LoRA adapters (needs peft)

`--images` is an imagefolder: image files and a `metadata.jsonl` with one line per image,
`{"file_name": "a.png", "text": "a caption"}`. The run starts from the base model's weights
(`train.init_from`, strict: the architecture must match), freezes nothing by default (`--freeze
'condition_encoders.*'` keeps the text side as it is), and exports a plain model folder; with
`--lora` only low-rank adapters train and the exported model has them merged.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cvae_bridge import TextToImagePipeline
from cvae_bridge.hub import read_run_config
from cvae_bridge.training import train


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="a model folder written by cvae-bridge train")
    parser.add_argument("--images", required=True, help="an imagefolder with metadata.jsonl")
    parser.add_argument("--steps", type=int, default=1500, help="optimiser steps")
    parser.add_argument("--batch-size", type=int, help="default: the base run's")
    parser.add_argument("--out", default="runs/example_finetuned", help="the run folder")
    parser.add_argument("--freeze", action="append", default=[], help="module-name glob kept as loaded")
    parser.add_argument("--lora", action="store_true", help="train rank-8 LoRA adapters instead")
    args = parser.parse_args(argv)

    # The base model's own run config, pointed at the new data: same architecture, image size
    # and channels, so every tensor loads.
    base = read_run_config(args.base)
    size, channels = base.model.targets["image"].decoder.size, base.model.targets["image"].decoder.channels
    data = {"type": "imagefolder", "root": args.images, "size": size, "channels": channels}
    if getattr(base.data, "binarize", "none") != "none":
        data["binarize"] = base.data.binarize
    overrides = [
        f"data={json.dumps(data)}",
        f"train.init_from={args.base}",
        f"train.steps={args.steps}",
        f"train.output_dir={args.out}",
        "train.eval_every=0",
        "train.warmup_steps=0",
        f"train.freeze={json.dumps(args.freeze)}",
        "eval.prompts=[]",  # the base's prompts name its own classes; sample grids use the new captions
    ]
    if args.batch_size:
        overrides.append(f"train.batch_size={args.batch_size}")
    if args.lora:
        overrides.append('train.lora={rank: 8, alpha: 16, targets: ["*"]}')
    result = train(read_run_config(args.base, overrides))

    pipe = TextToImagePipeline.from_pretrained(result.model_dir)  # no peft needed: adapters are merged
    caption = json.loads(Path(args.images, "metadata.jsonl").read_text().splitlines()[0])["text"]
    image = pipe(caption, seed=0).images[0]
    image.save(Path(args.out) / "example_sample.png")
    print(
        f"fine-tuned model in {result.model_dir}; a sample for {caption!r} in {args.out}/example_sample.png"
    )
    return result.model_dir


if __name__ == "__main__":
    main()
