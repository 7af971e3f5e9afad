"""Resumable data order: which examples each optimiser step sees is a function of (seed, step)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler

from ..errors import ConfigError


class EpochBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batches of (epoch, index) keys for `PairedDataset`.

    Every epoch is a fresh permutation drawn from (seed, epoch). Global batch b of an epoch holds
    permutation entries [b * B * P, (b + 1) * B * P) for P processes; process r takes its r-th
    slice of B. Incomplete global batches are dropped, so every process steps in lock-step.
    `set_position(epoch, batch)` restarts the order anywhere, which is all that resuming needs.
    """

    def __init__(self, size: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.batches_per_epoch = size // (batch_size * world_size)
        if self.batches_per_epoch == 0:
            raise ConfigError(
                f"the training split has {size} examples, fewer than one global batch "
                f"({batch_size} x {world_size} processes): lower train.batch_size"
            )
        self.epoch, self.start = 0, 0

    def set_position(self, epoch: int, batch: int) -> None:
        self.epoch, self.start = epoch, batch

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.size)
        width = self.batch_size * self.world_size
        for b in range(self.start, self.batches_per_epoch):
            first = b * width + self.rank * self.batch_size
            yield [(self.epoch, int(i)) for i in order[first : first + self.batch_size]]
