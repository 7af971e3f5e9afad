"""PNG pictures: sample grids, reconstructions, interpolations, the latent plane, loss curves.

    reconstructions               inputs and their reconstructions (posterior mean z), in
                                  alternating rows
    interpolations                one row per pair of inputs: the first input, decodings of the
                                  straight line between the two posterior means, the second input
    latent_plane                  2-D latent: decodings of a grid of prior quantiles (5% .. 95% on
                                  each axis; z1 left to right, z2 bottom to top)
    save_latent_scatter           2-D latent: posterior means, coloured by class (matplotlib)
    save_loss_curves              reconstruction, KL, -ELBO (and the optimised loss where weights
                                  or beta make it differ) from the training log, train and val
    write_pictures                every picture that applies to a model, into a folder

A conditioned model decodes each interpolation row with the conditions of its first input, and
draws its latent plane once per class, with the conditions of that class's first example
(`latent_grid_<class index>.png`); an unconditioned one draws a single `latent_grid.png`.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from einops import rearrange, repeat
from torch.utils.data import DataLoader, Dataset, Subset, default_collate

from ..diagnostics import latent_parameters
from ..errors import ConfigError, InputError
from ..model import Batch, ConditionalVAE
from ..samples import image_targets
from ..utils.pixels import save_image_grid

COLUMNS = 8
RECONSTRUCTIONS = 32  # examples shown
INTERPOLATION_ROWS = 8
INTERPOLATION_STEPS = 10  # decoded points per row, both ends included
PLANE_SIZE = 15  # decoded points per axis of the latent plane
PLANE_QUANTILES = (0.05, 0.95)
SCATTER_EXAMPLES = 10_000
FIGURE_DPI = 100


# -- pictures of a model ------------------------------------------------------------------------


def _on(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _examples(dataset: Dataset, indices: Sequence[int], device: torch.device) -> Batch:
    return _on(default_collate([dataset[i] for i in indices]), device)


def _repeat_each(conditions: Batch, times: int) -> Batch:
    """Each example's conditions `times` times in a row (tensors or lists of strings)."""
    return {
        k: repeat(v, "b ... -> (b t) ...", t=times)
        if isinstance(v, torch.Tensor)
        else [x for x in v for _ in range(times)]
        for k, v in conditions.items()
    }


def _conditions(model: ConditionalVAE, batch: Batch) -> Batch:
    return {n: batch[n] for n in model.condition_encoders}


@torch.no_grad()
def reconstructions(model: ConditionalVAE, batch: Batch, columns: int = COLUMNS) -> torch.Tensor:
    """(2 * N, C, H, W): rows of `columns` inputs of the first image target, each followed by a
    row of their reconstructions. N must be a multiple of `columns`."""
    target = image_targets(model)[0]
    pairs = torch.stack([batch[target], model.reconstruct(batch)[target]])
    return rearrange(pairs, "two (r c) ch h w -> (r two c) ch h w", c=columns)


@torch.no_grad()
def interpolations(
    model: ConditionalVAE, first: Batch, second: Batch, steps: int = INTERPOLATION_STEPS
) -> torch.Tensor:
    """(R * (steps + 2), C, H, W): per row, the first input, `steps` decodings of
    (1 - t) mu(first) + t mu(second) for t from 0 to 1, and the second input."""
    target = image_targets(model)[0]
    mu_a, mu_b = model.encode(first)[0], model.encode(second)[0]
    t = torch.linspace(0, 1, steps, device=mu_a.device)[:, None]
    z = rearrange(mu_a[:, None] * (1 - t) + mu_b[:, None] * t, "r s l -> (r s) l")
    decoded = rearrange(
        model.decode(z, _repeat_each(_conditions(model, first), steps))[target],
        "(r s) ... -> r s ...",
        s=steps,
    )
    rows = torch.cat([first[target][:, None], decoded, second[target][:, None]], dim=1)
    return rearrange(rows, "r s ... -> (r s) ...")


@torch.no_grad()
def latent_plane(model: ConditionalVAE, example: Batch, size: int = PLANE_SIZE) -> torch.Tensor:
    """(size * size, C, H, W) decodings of a 2-D latent at the prior's quantiles, for the
    conditions of `example` (one example, its target included: the prior p(z | c) may be learned)."""
    if model.config.latent_dim != 2:
        raise ConfigError(f"latent_plane: needs model.latent_dim == 2, got {model.config.latent_dim}")
    latent = latent_parameters(model, [example])
    u = torch.special.ndtri(torch.linspace(*PLANE_QUANTILES, size))
    # Row i, column j: (z1, z2) = (u[j], u[size - 1 - i]), so z2 grows upwards as on a plot.
    unit = rearrange(torch.stack(torch.meshgrid(u, u.flip(0), indexing="xy"), dim=-1), "i j l -> (i j) l")
    z = latent["mu_p"] + torch.exp(0.5 * latent["logvar_p"]) * unit
    return model.decode(z.to(model.device), _repeat_each(_conditions(model, example), size * size))[
        image_targets(model)[0]
    ]


def save_latent_scatter(
    mu: torch.Tensor, labels: torch.Tensor | None, path: str | Path, class_names: Sequence[str] | None = None
) -> Path:
    """Scatter plot of 2-D posterior means (N, 2), one colour per class label (labels < 0 or
    None: one colour). 700 x 600 pixels."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 6), dpi=FIGURE_DPI)
    axes = figure.subplots()
    mu = mu.detach().cpu().numpy()
    labels = np.full(len(mu), -1) if labels is None else labels.cpu().numpy()
    for label in np.unique(labels):
        points = mu[labels == label]
        name = "unlabelled" if label < 0 else (class_names[label] if class_names else str(label))
        axes.scatter(
            points[:, 0],
            points[:, 1],
            s=2,
            alpha=0.5,
            label=name,
            color=None if label < 0 else f"C{label % 10}",
        )
    if (labels >= 0).any():
        axes.legend(markerscale=5, fontsize="small", loc="center left", bbox_to_anchor=(1.0, 0.5))
    axes.set(xlabel="z1", ylabel="z2", title=f"posterior means of {len(mu)} examples")
    figure.tight_layout()
    return _save_figure(figure, path)


TITLES = {"kl": "KL(q || p)", "nelbo": "-ELBO", "loss": "optimised loss"}


def save_loss_curves(log_path: str | Path, path: str | Path) -> Path:
    """Curves of the training log (`log.jsonl`): one panel per reconstruction term, KL, -ELBO and
    the optimised loss (only where it differs from the -ELBO), train and val, in nats per example."""
    from matplotlib.figure import Figure

    series: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    for line in Path(log_path).read_text().splitlines():
        record = json.loads(line)
        if record.get("split") in ("train", "val"):
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "step":
                    # A resumed run logs some steps twice: the later value counts.
                    series[record["split"], key][record["step"]] = value
    keys = sorted({k for _, k in series if k.startswith("rec_")}) + [
        k for k in ("kl", "nelbo") if ("train", k) in series
    ]
    if series.get(("train", "loss")) != series.get(("train", "nelbo")):
        keys.append("loss")
    if not keys:
        raise InputError(f"{log_path}: no training losses logged")
    figure = Figure(figsize=(4 * len(keys), 3.5), dpi=FIGURE_DPI)
    for axes, key in zip(figure.subplots(1, len(keys), squeeze=False)[0], keys):
        for split in ("train", "val"):
            points = sorted(series.get((split, key), {}).items())
            if points:
                axes.plot(*zip(*points), label=split, marker="o" if split == "val" else ".")
        axes.set(title=TITLES.get(key, f"-log p({key[4:]} | z)"), xlabel="step", ylabel="nats per example")
        axes.legend()
    figure.tight_layout()
    return _save_figure(figure, path)


def _save_figure(figure: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


@torch.no_grad()
def write_pictures(
    model: ConditionalVAE, dataset: Dataset, out_dir: str | Path, log_path: str | Path | None = None
) -> tuple[list[str], dict[str, str]]:
    """Every picture of the module docstring that applies to `model`, from examples of `dataset`
    (an evaluation split), as PNGs in `out_dir`. Returns the file names written and, for each
    picture left out, the reason."""
    out_dir = Path(out_dir)
    written: list[str] = []
    skipped: dict[str, str] = {}
    device = model.device

    if image_targets(model):
        count = min(RECONSTRUCTIONS, len(dataset))
        columns = min(COLUMNS, count)
        examples = _examples(dataset, range(count - count % columns), device)
        written.append(
            save_image_grid(
                reconstructions(model, examples, columns), out_dir / "reconstructions.png", columns
            ).name
        )
        rows = min(INTERPOLATION_ROWS, len(dataset) // 2)
        first, second = (
            _examples(dataset, range(0, 2 * rows, 2), device),
            _examples(dataset, range(1, 2 * rows, 2), device),
        )
        written.append(
            save_image_grid(
                interpolations(model, first, second), out_dir / "interpolations.png", INTERPOLATION_STEPS + 2
            ).name
        )
    else:
        skipped["reconstructions"] = skipped["interpolations"] = "the model has no image target"

    if model.config.latent_dim == 2:
        subset = Subset(dataset, range(min(SCATTER_EXAMPLES, len(dataset))))
        batches = [_on(b, device) for b in DataLoader(subset, batch_size=500)]
        mu = latent_parameters(model, batches)["mu_q"]
        labels = torch.cat([b["label"].cpu() for b in batches]) if "label" in batches[0] else None
        class_names = getattr(dataset, "class_names", None)
        written.append(save_latent_scatter(mu, labels, out_dir / "latent_scatter.png", class_names).name)
        if image_targets(model):
            written += [
                save_image_grid(
                    latent_plane(model, _examples(dataset, [i], device)),
                    out_dir / name,
                    PLANE_SIZE,
                    padding=0,
                ).name
                for name, i in _plane_examples(model, labels)
            ]
        else:
            skipped["latent_grid"] = "the model has no image target"
    else:
        skipped["latent_scatter"] = skipped["latent_grid"] = (
            f"the latent has {model.config.latent_dim} dimensions, not 2"
        )

    if log_path is not None and Path(log_path).is_file():
        written.append(save_loss_curves(log_path, out_dir / "loss_curves.png").name)
    else:
        skipped["loss_curves"] = f"no training log at {log_path}"
    return written, skipped


def _plane_examples(model: ConditionalVAE, labels: torch.Tensor | None) -> list[tuple[str, int]]:
    """(file name, dataset index) of each latent plane: the first example of every class for a
    conditioned model on labelled data, else the first example (its conditions, if any)."""
    if not model.condition_encoders or labels is None or (labels < 0).all():
        return [("latent_grid.png", 0)]
    first = {}
    for index, label in enumerate(labels.tolist()):
        first.setdefault(label, index)
    return [(f"latent_grid_{label}.png", index) for label, index in sorted(first.items())]
