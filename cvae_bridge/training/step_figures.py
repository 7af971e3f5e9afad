"""A training step's figures kept on the device, so that the step does not wait for it: they are
read, many steps' worth in one transfer, on log, evaluation and checkpoint steps."""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

import torch


@dataclass
class StepFigures:
    """One optimiser step's figures, still on the device: value i divided by divisors[i] adds to
    the figure names[i] (a loss part once per micro-batch, the gradient norm once), and the last
    value is 1 where the step was skipped as non-finite."""

    step: int
    names: list[str]
    divisors: list[int]
    values: torch.Tensor


def read_figures(pending: list[StepFigures]) -> Iterator[tuple[int, dict[str, float], bool]]:
    """(step, its figures, whether it was skipped) for each pending step, read in one transfer."""
    flat = torch.cat([p.values for p in pending]).tolist() if pending else []
    offset = 0
    for p in pending:
        figures: dict[str, float] = defaultdict(float)
        for name, divisor, value in zip(p.names, p.divisors, flat[offset:]):
            figures[name] += value / divisor
        offset += len(p.names) + 1
        yield p.step, dict(figures), bool(flat[offset - 1])


@contextlib.contextmanager
def skipped_on_device(optimizer: torch.optim.Optimizer, skipped: torch.Tensor) -> Iterator[None]:
    """Inside, a fused optimiser's step leaves weights and step count as they are where `skipped`
    (a bool tensor on the device) is set: the `found_inf` that torch's GradScaler hands it too."""
    optimizer.found_inf = skipped.float()
    try:
        yield
    finally:
        del optimizer.found_inf
