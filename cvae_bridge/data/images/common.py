"""What the image sources share: pixel conversion, binarisation, frozen evaluation splits, the
source config and base class."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from ...config import DatasetConfig, PositiveInt, Seed
from ...errors import ConfigError, InputError
from ..base import DataSource, PairedDataset, Sample

Binarize = Literal["none", "dynamic"]


def image_tensor(
    pixels: np.ndarray, max_value: float, binarize: Binarize, rng: np.random.Generator
) -> torch.Tensor:
    """(H, W) or (H, W, C) integer pixels in [0, max_value] -> float32 (C, H, W) in [0, 1].
    "dynamic" binarisation: each value is 1 with probability equal to its intensity."""
    x = np.divide(pixels, np.float32(max_value), dtype=np.float32)
    if binarize == "dynamic":
        x = (rng.random(x.shape, dtype=np.float32) < x).astype(np.float32)
    x = x[None] if x.ndim == 2 else np.ascontiguousarray(x.transpose(2, 0, 1))
    return torch.from_numpy(x)


def _label(value: int) -> torch.Tensor:
    return torch.from_numpy(np.array(value, dtype=np.int64))


class ImageSplit(PairedDataset):
    """Common part of the splits here: pixel conversion, binarisation and frozen evaluation splits
    (`frozen=True`: the epoch in a `(epoch, index)` key is ignored, so a test split is the same
    sample, phrasing and binarisation included, every time)."""

    def __init__(self, *, binarize: Binarize = "none", seed: int = 0, frozen: bool = False):
        super().__init__(seed)
        if binarize not in ("none", "dynamic"):
            raise ConfigError(f"binarize must be 'none' or 'dynamic', got {binarize!r}")
        self.binarize = binarize
        self.frozen = frozen

    def __getitem__(self, key: int | tuple[int, int]) -> Sample:
        if self.frozen and isinstance(key, tuple):
            key = key[1]
        return super().__getitem__(key)


# What PIL raises for unreadable or truncated files.
_PIL_ERRORS: tuple[type[BaseException], ...] = (OSError, SyntaxError, ValueError)


def _pil():
    from PIL import Image

    return Image


def _pixels(image: Any, channels: int, size: Sequence[int], where: str) -> np.ndarray:
    """A PIL image -> uint8 (H, W) or (H, W, 3), converted to L / RGB and resized to `size`."""
    Image = _pil()
    try:
        image = image.convert("L" if channels == 1 else "RGB")
        height, width = size
        if image.size != (width, height):
            image = image.resize((width, height), Image.Resampling.BILINEAR)
        return np.asarray(image, dtype=np.uint8)
    except (*_PIL_ERRORS, Image.DecompressionBombError) as error:
        raise InputError(f"{where}: cannot read the image: {error}") from error


@dataclass
class ImageSourceConfig(DatasetConfig):
    """Fields every source here has."""

    seed: Seed = 0  # of the split and the dynamic binarisation
    # Use only the first N samples of each split (fast runs); null for all.
    limit: PositiveInt | None = None
    # "dynamic": each pixel is 1 with probability equal to its intensity, redrawn every epoch
    # for the training split, fixed (epoch 0) for evaluation splits.
    binarize: Binarize = "none"

    def __post_init__(self):
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit must be a positive number of samples or null (all), got {self.limit}")


@dataclass
class ResizedImagesConfig(ImageSourceConfig):
    """Sources of arbitrary images: converted to L (1 channel) or RGB (3) and resized to [H, W]."""

    size: list[PositiveInt] = field(default_factory=lambda: [64, 64])  # [H, W] every image is resized to
    channels: Literal[1, 3] = 3  # 1: grey (L), 3: RGB

    def __post_init__(self):
        super().__post_init__()
        if len(self.size) != 2 or not all(
            isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in self.size
        ):
            raise ConfigError(f"size must be [height, width] in pixels, got {self.size!r}")
        if isinstance(self.channels, bool) or self.channels not in (1, 3):
            raise ConfigError(f"channels must be 1 or 3, got {self.channels!r}")


class ImageSource(DataSource):
    """A source whose splits are built (and checked) when it is built."""

    def __init__(self, config: ImageSourceConfig):
        super().__init__(config)
        self._splits: dict[str, PairedDataset] = {}

    @property
    def splits(self) -> list[str]:
        return list(self._splits)

    def split(self, name: str) -> PairedDataset:
        if name not in self._splits:
            source = getattr(type(self), "registered_name", type(self).__name__)
            raise ConfigError(
                f"dataset {source!r} has no split {name!r}; valid splits: {', '.join(self._splits)}"
            )
        return self._splits[name]

    def _split_kwargs(self, split: str) -> dict[str, Any]:
        return {"binarize": self.config.binarize, "seed": self.config.seed, "frozen": split != "train"}
