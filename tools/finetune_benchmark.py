"""Fine-tuning showcases: a trained model adapted to new data, against training from scratch on the
same data for the same number of steps (README, "Fine-tune on your data").

    python tools/finetune_benchmark.py robot --base runs/metaworld_mt10/model --task door-close-v3
    python tools/finetune_benchmark.py images --base runs/mnist_text_to_image/model

robot:  the language-conditioned MT10 policy (tools/sim_benchmark.py metaworld_mt10 trains it) on a
        Meta-World task outside MT10, from --demos expert demonstrations (seeds 0..): its zero-shot
        success, then fine-tuned (train.init_from) and from scratch with the same config, data and
        steps; each policy runs --episodes episodes from seed 100000 on, with the task's training
        phrasings and with its held-out ones.
images: the MNIST text-to-image model on Fashion-MNIST written as an imagefolder (--per-class
        images per class with captions of our own, metadata.jsonl; the test split's captions are
        phrasings never used in training): full fine-tuning, LoRA and from scratch, same steps;
        held-out-phrasing faithfulness and test NLL of each.

Everything goes below ROOT/runs/finetune_<name>/ (and the data below ROOT/data/); a step whose
output exists is skipped, so an interrupted benchmark resumes when run again. results.json and a
printed table sum it up. Run it with OMP_NUM_THREADS=1 beside other jobs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from cvae_bridge.envs.demos import DEMOS_FILE, DemosConfig, format_demos_report, generate_demos
from cvae_bridge.evaluation import evaluate
from cvae_bridge.evaluation.rollout import RolloutConfig, evaluate_policy
from cvae_bridge.hub import WEIGHTS_NAME, read_run_config
from cvae_bridge.training import train


def train_once(base: Path, overrides: list[str], run: Path) -> tuple[Path, float]:
    """Train (or resume) a run of the base model's own run config with `overrides`; returns the
    model folder and the training time in seconds (0 when it was trained before)."""
    model_dir = run / "model"
    if (model_dir / WEIGHTS_NAME).is_file() or (model_dir / "adapter.safetensors").is_file():
        return model_dir, 0.0
    start = time.perf_counter()
    result = train(read_run_config(base, [*overrides, f"train.output_dir={run}"]), resume=True)
    if result.status == "interrupted":
        sys.exit(f"training of {run} stopped at step {result.step}; run the same command again to resume it")
    return result.model_dir, time.perf_counter() - start


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


# -- robot --------------------------------------------------------------------------------------------


def robot(args: argparse.Namespace) -> tuple[dict[str, Any], Path]:
    root, task = Path(args.root), args.task
    bench = root / "runs" / f"finetune_{task}"
    data = root / "data" / f"metaworld_{task}_{args.demos}"
    if not (data / DEMOS_FILE).is_file():
        print(format_demos_report(generate_demos(DemosConfig("metaworld", str(data), [task], args.demos))))
    data_overrides = [f"data.path={data}", f"train.steps={args.steps}"] + args.set
    runs = {
        "fine-tuned": train_once(
            args.base, [*data_overrides, f"train.init_from={args.base}"], bench / "finetuned"
        ),
        "from scratch": train_once(args.base, data_overrides, bench / "scratch"),
    }
    policies = {"zero-shot": (Path(args.base), 0.0), **runs}
    results: dict[str, Any] = {"task": task, "demos": args.demos, "steps": args.steps, "base": args.base}
    for name, (model_dir, seconds) in policies.items():
        row: dict[str, Any] = {"model": str(model_dir), "train_seconds": round(seconds)}
        for phrasings in ("train", "heldout"):
            out = bench / "rollout" / f"{name.replace(' ', '_')}_{phrasings}"
            if (out / "success.json").is_file():
                report = json.loads((out / "success.json").read_text())
            else:
                report = evaluate_policy(
                    RolloutConfig(
                        str(model_dir),
                        "metaworld",
                        [task],
                        args.episodes,
                        query_period=5,
                        phrasings=phrasings,
                        out=str(out),
                    )
                )
            row[f"success_{phrasings}_phrasings"] = report["mean_success_rate"]
        results[name] = row
    print(f"\n{task}: {args.demos} demonstrations, {args.steps} steps, {args.episodes} episodes per cell")
    print(f"{'policy':<14}{'train phrasings':>18}{'held-out':>12}{'training s':>12}")
    for name in policies:
        row = results[name]
        print(
            f"{name:<14}{100 * row['success_train_phrasings']:>17.0f}%"
            f"{100 * row['success_heldout_phrasings']:>11.0f}%{row['train_seconds']:>12}"
        )
    return results, bench


# -- images -------------------------------------------------------------------------------------------

# Captions of our own for Fashion-MNIST's classes: the training images get the first three
# phrasings, the test images the last two, which training never sees.
FASHION_CAPTIONS = {
    "t-shirt": (
        "a t-shirt",
        "a short-sleeved top",
        "a plain tee",
        "a summer top with short sleeves",
        "a tee",
    ),
    "trouser": ("a pair of trousers", "long pants", "some slacks", "a pair of long legged pants", "jeans"),
    "pullover": (
        "a pullover",
        "a knitted jumper",
        "a sweater",
        "a warm woollen jumper",
        "a long-sleeved knit",
    ),
    "dress": ("a dress", "a one-piece dress", "a frock", "a gown for a woman", "a long dress"),
    "coat": (
        "a coat",
        "an overcoat",
        "a winter jacket",
        "a heavy coat with buttons",
        "outerwear for the cold",
    ),
    "sandal": (
        "a sandal",
        "an open shoe",
        "a summer sandal",
        "a strappy open shoe",
        "footwear for the beach",
    ),
    "shirt": ("a shirt", "a button-up shirt", "a collared shirt", "a long-sleeved dress shirt", "a blouse"),
    "sneaker": (
        "a sneaker",
        "a running shoe",
        "a trainer",
        "a sports shoe for jogging",
        "a low athletic shoe",
    ),
    "bag": ("a bag", "a handbag", "a tote", "a purse with a handle", "something to carry things in"),
    "ankle boot": (
        "an ankle boot",
        "a short boot",
        "a boot",
        "a leather boot up to the ankle",
        "a heeled bootie",
    ),
}


def write_fashion_folder(folder: Path, per_class: int, test_per_class: int) -> None:
    """Fashion-MNIST (Debian's dataset-fashion-mnist) as an imagefolder: train/ with `per_class`
    images per class, test/ with `test_per_class`; metadata.jsonl with a caption and the class."""
    import numpy as np
    from PIL import Image

    from cvae_bridge.config import DatasetConfig, from_dict
    from cvae_bridge.data import build_source

    fashion = build_source(from_dict(DatasetConfig, {"type": "fashion_mnist"}))
    names = list(FASHION_CAPTIONS)
    for split, count, phrasings in (("train", per_class, slice(0, 3)), ("test", test_per_class, slice(3, 5))):
        data, rows = fashion.split(split), []
        (folder / split).mkdir(parents=True, exist_ok=True)
        for label, name in enumerate(names):
            captions = FASHION_CAPTIONS[name][phrasings]
            for i, index in enumerate(np.flatnonzero(data.labels == label)[:count]):
                file_name = f"{label}_{i:04d}.png"
                Image.fromarray(data.images[index]).save(folder / split / file_name)
                rows.append({"file_name": file_name, "text": captions[i % len(captions)], "label": name})
        (folder / split / "metadata.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


def images(args: argparse.Namespace) -> tuple[dict[str, Any], Path]:
    from cvae_bridge.training.finetune import load_adapter

    root = Path(args.root)
    bench = root / "runs" / "finetune_fashion"
    data = root / "data" / f"fashion_imagefolder_{args.per_class}"
    if not (data / "test" / "metadata.jsonl").is_file():
        write_fashion_folder(data, args.per_class, test_per_class=100)
    data_overrides = [
        f"data={{type: imagefolder, root: {data}, label_column: label, size: [28, 28], channels: 1, binarize: dynamic}}",
        f"train.steps={args.steps}",
        "train.checkpoint_every=100000",
        "eval.metrics=[faithfulness, nll]",
        *args.set,
    ]
    init = f"train.init_from={args.base}"
    lora = f"train.lora={{rank: {args.rank}, alpha: {2 * args.rank}, targets: ['*'], merge: false}}"
    runs = {  # name: (folder below bench, overrides)
        "full fine-tuning": ("full", [init]),
        "LoRA": ("lora", [init, lora]),
        "from scratch": ("scratch", []),
    }
    models = {"pretrained (zero-shot)": (Path(args.base), 0.0, None)}
    for name, (folder, extra) in runs.items():
        model_dir, seconds = train_once(args.base, [*data_overrides, *extra], bench / folder)
        models[name] = (model_dir, seconds, bench / folder)
    adapters = bench / "lora" / "model"
    merged = bench / "lora" / "merged"  # what a merge: true run exports; evaluation loads it
    if not (merged / WEIGHTS_NAME).is_file():
        load_adapter(adapters).save_pretrained(merged, read_run_config(adapters))
    models["LoRA"] = (merged, *models["LoRA"][1:])
    results: dict[str, Any] = {"data": str(data), "steps": args.steps, "base": args.base}
    for name, (model_dir, seconds, run) in models.items():
        out = bench / "eval" / (run.name if run else "pretrained")
        metrics = (
            json.loads((out / "metrics.json").read_text())
            if (out / "metrics.json").is_file()
            else evaluate(model_dir, out, data_overrides[:1] + ["eval.metrics=[faithfulness, nll]"])
        )
        results[name] = {
            "faithfulness_heldout": metrics["faithfulness"],
            "faithfulness_train_phrasings": metrics["faithfulness_train_phrasings"],
            "nll_nats": metrics["nll_nats"],
            "classifier_test_accuracy": metrics["classifier_test_accuracy"],
            "trainable_parameters": json.loads((run / "parameters.json").read_text())["trainable"]
            if run
            else None,
            "train_seconds": round(seconds),
        }
    results["LoRA"]["adapter_folder_bytes"] = folder_bytes(adapters)
    results["full fine-tuning"]["model_folder_bytes"] = folder_bytes(bench / "full" / "model")
    print(f"\nFashion-MNIST imagefolder, {args.per_class} images per class, {args.steps} steps")
    print(f"{'model':<24}{'held-out faithful':>18}{'train phrasings':>16}{'NLL (nats)':>12}{'trainable':>12}")
    for name in models:
        row = results[name]
        print(
            f"{name:<24}{100 * row['faithfulness_heldout']:>17.1f}%{100 * row['faithfulness_train_phrasings']:>15.1f}%"
            f"{row['nll_nats']:>12.1f}{row['trainable_parameters'] or '-':>12}"
        )
    accuracy = results["from scratch"]["classifier_test_accuracy"]
    print(f"faithfulness classifier: {100 * accuracy:.1f}% on the real test images")
    print(
        f"LoRA adapter folder: {results['LoRA']['adapter_folder_bytes']:,} bytes; "
        f"full model folder: {results['full fine-tuning']['model_folder_bytes']:,} bytes"
    )
    return results, bench


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", default=".", help="folder holding data/ and runs/ (default: .)")
    parser.add_argument("--set", action="append", default=[], help="config overrides for every run")
    commands = parser.add_subparsers(dest="showcase", required=True)
    robot_parser = commands.add_parser("robot", help="the MT10 policy on a task outside MT10")
    robot_parser.add_argument("--base", default="runs/metaworld_mt10/model", help="the pretrained policy")
    robot_parser.add_argument("--task", default="door-close-v3")
    robot_parser.add_argument("--demos", type=int, default=10)
    robot_parser.add_argument("--steps", type=int, default=2000)
    robot_parser.add_argument("--episodes", type=int, default=50)
    images_parser = commands.add_parser("images", help="the MNIST model on captioned Fashion-MNIST")
    images_parser.add_argument("--base", default="runs/mnist_text_to_image/model")
    images_parser.add_argument("--per-class", type=int, default=100)
    images_parser.add_argument("--steps", type=int, default=1500)
    images_parser.add_argument("--rank", type=int, default=8, help="LoRA rank (alpha = 2 x rank)")
    args = parser.parse_args(argv)
    results, bench = (robot if args.showcase == "robot" else images)(args)
    (bench / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {bench / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
