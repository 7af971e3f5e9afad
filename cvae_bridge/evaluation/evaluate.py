"""`cvae-bridge eval`: metrics of a trained model folder, written as metrics.json + metrics.md.

    faithfulness   accuracy of a classifier (trained by the project on the real training images)
                   on images generated from the held-out phrasings of every class; also on the
                   training phrasings, and for the held-out prompt the classifier misreads most
    nll_nats       test negative log-likelihood, importance-weighted bound with K samples (IWAE),
    bits_per_dim   and the same per image dimension in bits
    fid, fid_floor Frechet distance on EfficientNet-Lite0 features, generated vs real test images,
                   next to real train vs real test images (the floor the first can approach)
    diversity      mean RMS pixel difference between samples of one prompt
    diagnostics    of the latent space: KL per dimension, active units, mutual information
                   I(x; z) and whether the posterior collapsed (diagnostics.py)

Metrics that do not apply to a model (no image target, no labelled dataset) are skipped with
the reason recorded under `skipped`. Besides the metrics, `evaluate` writes the pictures of
pictures.py that apply to the model (reconstructions, interpolations, for a 2-D latent the
posterior means and the decoded latent plane, loss curves from the run's `log.jsonl`). With
`eval.progress_bar`, a bar on stderr counts the metrics done, and one below it the examples or
images of the metric at hand.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..config import EvalConfig, RunConfig
from ..data import DataSource, build_source
from ..data.base import to_device
from ..diagnostics import latent_diagnostics
from ..errors import ConfigError
from ..hub import read_run_config, record_evaluation
from ..model import ConditionalVAE
from ..samples import image_targets, save_sample_grid, text_conditions
from ..utils.files import atomic_write_text
from ..utils.runtime import keep_freed_memory
from .classifier import load_or_train_classifier
from .diversity import pairwise_diversity
from .fid import FeatureExtractor, frechet_distance
from .pictures import write_pictures


def evaluate(
    model_dir: str | Path,
    out_dir: str | Path,
    overrides: list[str] = (),
    device: str = "auto",
    model_card: bool = True,
) -> dict[str, Any]:
    """Compute the metrics of `config.eval.metrics` for a trained model; write metrics.json,
    metrics.md, grid.png and the pictures into `out_dir`, and (`model_card`) the figures into the
    model folder's README.md. Returns the metrics; "model_card" says what became of the card."""
    keep_freed_memory()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = read_run_config(model_dir, overrides)
    model = ConditionalVAE.from_pretrained(model_dir, device)
    source = build_source(config.data)
    split = source.split(config.eval.split)
    metrics: dict[str, Any] = {"model": str(model_dir), "split": config.eval.split}
    skipped: dict[str, str] = {}
    seconds: dict[str, float] = {}

    # the metrics, then the sample grid and pictures
    bar = tqdm(
        total=len(config.eval.metrics) + 1, desc="eval", unit="step", disable=not config.eval.progress_bar
    )
    for name in config.eval.metrics:
        bar.set_postfix_str(name)
        reason = _not_applicable(name, model, source)
        if reason:
            skipped[name] = reason
        else:
            start = time.perf_counter()
            torch.manual_seed(config.train.seed)
            metrics.update(METRICS[name](model, config, source, split))
            seconds[name] = round(time.perf_counter() - start, 1)
        bar.update()

    bar.set_postfix_str("pictures")
    save_sample_grid(model, config.eval, split, out_dir / "grid.png")
    start = time.perf_counter()
    # Training writes log.jsonl into the run folder, the model folder's parent.
    metrics["pictures"], notes = write_pictures(model, split, out_dir, Path(model_dir).parent / "log.jsonl")
    skipped.update({f"picture {name}": why for name, why in notes.items()})
    seconds["pictures"] = round(time.perf_counter() - start, 1)
    bar.update()
    bar.close()
    metrics.update(skipped=skipped, seconds=seconds)
    atomic_write_text(out_dir / "metrics.md", markdown_table(metrics))
    if model_card:
        figures = {k: v for k, v in metrics.items() if k not in ("model", "pictures")}
        metrics["model_card"] = record_evaluation(
            model_dir, f"cvae-bridge eval, {config.eval.split} split", markdown_table(figures)
        )
    atomic_write_text(out_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return metrics


def _not_applicable(metric: str, model: ConditionalVAE, source: DataSource) -> str | None:
    if metric == "nll":
        return "a deterministic autoencoder has no likelihood" if model.config.deterministic else None
    if metric == "diagnostics":
        return None
    if not image_targets(model):
        return "the model has no image target"
    if (
        metric == "fid"
        and model.condition_encoders
        and text_conditions(model) != list(model.condition_encoders)
    ):
        return "fid generates from captions or from nothing; this model has other conditions"
    if metric in ("faithfulness", "diversity"):
        if text_conditions(model) != list(model.condition_encoders):
            return "the model is not conditioned on text alone"
        if not getattr(source, "class_names", ()):
            return f"dataset {source.config.type!r} has no labelled prompts (imagefolder: set label_column)"
    return None


# -- the metrics ----------------------------------------------------------------------------------


def _unbinarized(source: DataSource, config: RunConfig, split: str) -> Dataset:
    """A split as grey-level images: metrics compare with real images, not binarised draws."""
    data = config.data
    if getattr(data, "binarize", "none") != "none":
        source = build_source(dataclasses.replace(data, binarize="none"))
    return source.split(split)


def _stack_images(dataset: Dataset, count: int, key: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    items = [dataset[i] for i in range(min(count, len(dataset)))]
    images = torch.stack([item[key] for item in items])
    labels = torch.stack([item["label"] for item in items]) if "label" in items[0] else None
    return images, labels


def _bar(config: EvalConfig, total: int, desc: str, unit: str) -> tqdm:
    """The progress of one metric, below `eval`'s bar, gone when the metric is done."""
    return tqdm(total=total, desc=desc, unit=unit, leave=False, disable=not config.progress_bar)


@torch.no_grad()
def _generate(
    model: ConditionalVAE,
    captions: list[str],
    per_caption: int,
    config: EvalConfig,
    desc: str,
    batch: int = 100,
) -> torch.Tensor:
    """Images for each caption, grouped by caption, in [0, 1], at `config.temperature`."""
    key, target = text_conditions(model)[0], image_targets(model)[0]
    step = max(1, batch // per_caption)
    chunks = []
    with _bar(config, len(captions) * per_caption, desc, "image") as bar:
        for i in range(0, len(captions), step):
            images = model.sample(
                {key: captions[i : i + step]}, num_samples=per_caption, temperature=config.temperature
            )[target]
            chunks.append(images.clamp(0, 1).cpu())
            bar.update(len(images))
    return torch.cat(chunks)


def faithfulness(
    model: ConditionalVAE, config: RunConfig, source: DataSource, split: Dataset
) -> dict[str, float]:
    train_images, train_labels = _stack_images(
        _unbinarized(source, config, "train"), 10**9, image_targets(model)[0]
    )
    test_images, test_labels = _stack_images(
        _unbinarized(source, config, "test"), 10**9, image_targets(model)[0]
    )
    classifier, classifier_accuracy = load_or_train_classifier(
        config.data.type,
        train_images,
        train_labels,
        test_images,
        test_labels,
        num_classes=len(source.class_names),
        epochs=config.eval.classifier_epochs,
    )
    result = {"classifier_test_accuracy": classifier_accuracy}
    for which, key in (("heldout", "faithfulness"), ("train", "faithfulness_train_phrasings")):
        prompts = source.prompts(which)
        images = _generate(
            model,
            [c for c, _ in prompts],
            config.eval.samples_per_prompt,
            config.eval,
            f"faithfulness ({which})",
        )
        labels = torch.tensor([label for _, label in prompts]).repeat_interleave(
            config.eval.samples_per_prompt
        )
        correct = (classifier.predict(images) == labels).double()
        result[key] = correct.mean().item()
        if (
            which == "heldout"
        ):  # where the failures are: the phrasing whose samples the classifier misreads most
            per_prompt = correct.view(len(prompts), -1).mean(1)
            worst = int(per_prompt.argmin())
            result["faithfulness_worst"] = per_prompt[worst].item()
            result["faithfulness_worst_prompt"] = prompts[worst][0]
    return result


def diversity(
    model: ConditionalVAE, config: RunConfig, source: DataSource, split: Dataset
) -> dict[str, float]:
    prompts = [c for c, _ in source.prompts("heldout")]
    per = max(2, config.eval.samples_per_prompt)
    images = _generate(model, prompts, per, config.eval, "diversity")
    return {"diversity": sum(pairwise_diversity(group) for group in images.split(per)) / len(prompts)}


@torch.no_grad()
def nll(model: ConditionalVAE, config: RunConfig, source: DataSource, split: Dataset) -> dict[str, float]:
    """IWAE bound on the evaluation split: mean -log p(x | c) in nats, and bits per dimension."""
    subset = torch.utils.data.Subset(split, range(min(config.eval.nll_examples, len(split))))
    # Examples at a time: each is expanded to K samples, chunked to bound memory.
    loader = DataLoader(subset, batch_size=max(1, 2000 // min(config.eval.nll_samples, 2000)))
    total, count = 0.0, 0
    with _bar(config.eval, len(subset), "nll", "example") as bar:
        for batch in loader:
            log_p = model.log_likelihood(
                to_device(batch, model.device),
                num_samples=config.eval.nll_samples,
                chunk_size=min(config.eval.nll_samples, 1000),
            )
            total -= log_p.sum().item()
            count += len(log_p)
            bar.update(len(log_p))
    nats = total / count
    dims = sum(math.prod(model.decoders[n].event_shape) for n in model.decoders)
    return {
        "nll_nats": nats,
        "bits_per_dim": nats / (dims * math.log(2)),
        "nll_samples": config.eval.nll_samples,
        "nll_examples": count,
    }


def fid(model: ConditionalVAE, config: RunConfig, source: DataSource, split: Dataset) -> dict[str, float]:
    """Generated images for the first `fid_samples` test captions vs those real test images; the
    floor compares as many real training images with the same real test images."""
    target = image_targets(model)[0]
    test = _unbinarized(source, config, config.eval.split)
    count = min(config.eval.fid_samples, len(test))
    real, _ = _stack_images(test, count, target)
    if model.condition_encoders:
        conditions = [test[i] for i in range(count)]
        key = text_conditions(model)[0] if text_conditions(model) else None
        if key is None:
            raise ConfigError("fid: only text-conditioned or unconditional image models are supported")
        generated = _generate(model, [c[key] for c in conditions], 1, config.eval, "fid samples")
    else:
        chunks = []
        with _bar(config.eval, count, "fid samples", "image") as bar:
            for i in range(0, count, 100):
                images = model.sample(num_samples=min(100, count - i), temperature=config.eval.temperature)
                chunks.append(images[target].clamp(0, 1).cpu())
                bar.update(len(chunks[-1]))
        generated = torch.cat(chunks)
    reference, _ = _stack_images(_unbinarized(source, config, "train"), count, target)
    extractor = FeatureExtractor(config.eval.fid_resolution, model.device)
    features = []
    with _bar(config.eval, len(real) + len(generated) + len(reference), "fid features", "image") as bar:
        for images in (real, generated, reference):
            features.append(extractor.features(images))
            bar.update(len(images))
    real_features, generated_features, reference_features = features
    return {
        "fid": frechet_distance(generated_features, real_features),
        "fid_floor": frechet_distance(reference_features, real_features),
        "fid_samples": count,
        "fid_resolution": config.eval.fid_resolution,
    }


# All of MNIST's test set; the mutual information costs N^2 pairs.
DIAGNOSTIC_EXAMPLES = 10_000


@torch.no_grad()
def diagnostics(
    model: ConditionalVAE, config: RunConfig, source: DataSource, split: Dataset
) -> dict[str, Any]:
    """Latent diagnostics (diagnostics.py) over the first DIAGNOSTIC_EXAMPLES of the evaluation split."""
    subset = torch.utils.data.Subset(split, range(min(DIAGNOSTIC_EXAMPLES, len(split))))
    batches = (to_device(batch, model.device) for batch in DataLoader(subset, batch_size=500))
    return latent_diagnostics(model, batches, seed=config.train.seed)


METRICS = {
    "faithfulness": faithfulness,
    "nll": nll,
    "fid": fid,
    "diversity": diversity,
    "diagnostics": diagnostics,
}


def markdown_table(metrics: dict[str, Any]) -> str:
    rows = [
        f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |"
        for k, v in metrics.items()
        if k not in ("skipped", "seconds")
    ]
    rows += [f"| {k} | skipped: {why} |" for k, why in metrics.get("skipped", {}).items()]
    return "| metric | value |\n|---|---|\n" + "\n".join(rows) + "\n"
