"""Sample grids: one row per prompt (or per evaluation example), `grid_columns` samples each,
written with each row's prompt above it and small images enlarged, as `cvae-bridge generate` does."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset, default_collate

from .config import EvalConfig
from .errors import ConfigError
from .model import ConditionalVAE
from .utils.pixels import DISPLAY_SIZE, display_scale, save_image_grid

GRID_ROWS = 10


def image_targets(model: ConditionalVAE) -> list[str]:
    """Targets whose decoders produce images (C, H, W)."""
    return [n for n, d in model.decoders.items() if d.output_kind == "image"]


def text_conditions(model: ConditionalVAE) -> list[str]:
    return [n for n, e in model.condition_encoders.items() if e.input_kind == "text"]


def grid_conditions(model: ConditionalVAE, config: EvalConfig, dataset: Dataset | None) -> dict | None:
    """Conditions of the grid's rows: the configured prompts when the model's only condition is
    text, else those of the first examples of `dataset`; None for an unconditional model."""
    if not model.condition_encoders:
        return None
    texts = text_conditions(model)
    if config.prompts and texts == list(model.condition_encoders):
        return {texts[0]: list(config.prompts)}
    if dataset is None:
        raise ConfigError(
            "sample grid: this model's conditions are not text prompts, so examples of a dataset are needed"
        )
    examples = default_collate([dataset[i] for i in range(min(GRID_ROWS, len(dataset)))])
    return {n: examples[n] for n in model.condition_encoders}


@torch.no_grad()
def grid_samples(
    model: ConditionalVAE, config: EvalConfig, dataset: Dataset | None
) -> tuple[torch.Tensor, list[str] | None] | None:
    """(rows * columns, C, H, W) samples of the model's first image target and the rows' prompts
    (None unless the rows are conditioned on one text each), or None if it has no image target."""
    targets = image_targets(model)
    if not targets:
        return None
    conditions = grid_conditions(model, config, dataset)
    texts = text_conditions(model)
    labels = None
    if conditions is not None:
        if texts == list(conditions):
            labels = [str(text) for text in conditions[texts[0]]]
        conditions = {
            k: v.to(model.device) if isinstance(v, torch.Tensor) else v for k, v in conditions.items()
        }
    columns = config.grid_columns if conditions is not None else config.grid_columns * GRID_ROWS
    images = model.sample(conditions, num_samples=columns, temperature=config.temperature)[targets[0]]
    return images, labels


def save_sample_grid(
    model: ConditionalVAE, config: EvalConfig, dataset: Dataset | None, path: Path
) -> Path | None:
    """grid_samples written to `path` (labelled, enlarged); None for a model without image target."""
    grid = grid_samples(model, config, dataset)
    if grid is None:
        return None
    images, labels = grid
    scale = display_scale(images.shape[-2:], DISPLAY_SIZE)
    return save_image_grid(images, path, config.grid_columns, scale=scale, row_labels=labels)
