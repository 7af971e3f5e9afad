"""How different the samples generated for one prompt are from each other."""

from __future__ import annotations

import math

import torch
from einops import rearrange

from ..errors import InputError


def pairwise_diversity(samples: torch.Tensor) -> float:
    """Mean Euclidean distance over all pairs of `samples` (N, ...), divided by sqrt(elements per sample).

    That makes it a root-mean-square per-element difference: 0 when all samples are equal, and
    comparable across image sizes. Pass the samples of one prompt; average over prompts yourself.
    """
    if not isinstance(samples, torch.Tensor) or samples.ndim < 2 or len(samples) < 2:
        got = tuple(samples.shape) if isinstance(samples, torch.Tensor) else type(samples).__name__
        raise InputError(f"pairwise_diversity: expected samples (N, ...) with N >= 2, got {got}")
    flat = rearrange(samples.detach().to("cpu", torch.float64), "n ... -> n (...)")
    return torch.pdist(flat).mean().item() / math.sqrt(flat.shape[1])
