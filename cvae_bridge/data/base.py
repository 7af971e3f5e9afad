"""What every dataset provides.

A *data source* (registered with `@register_dataset`) reads files and hands out splits. Each split
is a `PairedDataset` whose samples are dicts: modality name -> tensor or string, the names the
model config uses. Sample randomness (which caption phrasing, dynamic binarisation, ...) comes
from a generator seeded by (seed, epoch, index), so a sample is a pure function of its key: runs
are reproducible and resume exactly, whichever worker process builds it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from ..config import DatasetConfig
from ..errors import InputError
from ..registry import DATASETS

Split = Literal["train", "val", "test"]
Sample = dict[str, Any]


class PairedDataset(Dataset):
    """Base of dataset splits. Subclasses implement `__len__` and `sample(index, rng)`."""

    def __init__(self, seed: int = 0):
        self.seed = seed

    def __len__(self) -> int:
        raise NotImplementedError

    def sample(self, index: int, rng: np.random.Generator) -> Sample:
        raise NotImplementedError

    def __getitem__(self, key: int | tuple[int, int]) -> Sample:
        """`dataset[i]` or `dataset[(epoch, i)]`: the epoch varies the sample's randomness."""
        epoch, index = key if isinstance(key, tuple) else (0, key)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} samples")
        return self.sample(index, np.random.default_rng([self.seed, epoch, index]))


class DataSource:
    """Base of registered datasets: built from a config, hands out splits."""

    Config: ClassVar[type[DatasetConfig]]

    def __init__(self, config: DatasetConfig):
        self.config = config

    def split(self, name: Split) -> PairedDataset:
        raise NotImplementedError

    def statistics(self, names: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per-feature mean and std of the named modalities over the training split (for models
        that normalise inputs, like ACT). Sources without such features raise."""
        raise NotImplementedError(f"{type(self).__name__} provides no normalisation statistics")


DATASETS.define_contract(DataSource, DatasetConfig, ("split",))


def collate(samples: Sequence[Sample], where: str) -> dict[str, Any]:
    """Samples -> a batch, like the DataLoader's default, but a sample whose keys, shapes or types
    differ from the others raises InputError naming `where`, the key and the sample."""
    if not samples:
        raise InputError(f"{where}: no samples to make a batch of")
    keys = sorted(samples[0])
    for i, sample in enumerate(samples):
        if sorted(sample) != keys:
            raise InputError(f"{where}: sample {i} has keys {sorted(sample)}, sample 0 has {keys}")
    batch = {}
    for key in keys:
        try:
            batch[key] = default_collate([sample[key] for sample in samples])
        except (RuntimeError, TypeError) as error:
            kinds = sorted({_kind(sample[key]) for sample in samples})
            raise InputError(
                f"{where}: {key!r} differs between samples ({', '.join(kinds)}); every sample needs the same shape and type: {error}"
            ) from None
    return batch


def to_device(batch: dict[str, Any], device: torch.device | str) -> dict[str, Any]:
    """Move a collated batch, a flat dict of tensors and lists of strings (captions), to `device`.
    Only the tensors are visited: Accelerate's send_to_device would walk every caption."""
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def _kind(value: Any) -> str:
    """'Tensor (1, 8, 8)', 'str', ...: what a sample holds under a key, for error messages."""
    return f"{type(value).__name__} {tuple(value.shape)}" if hasattr(value, "shape") else type(value).__name__
