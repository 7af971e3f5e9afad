"""`hf_dataset`: a `datasets.Dataset` saved with `save_to_disk`."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ConfigError, DependencyError, InputError
from ...registry import register_dataset
from ...utils.files import confined_path
from ..base import Sample
from .common import (
    _PIL_ERRORS,
    ImageSource,
    ImageSplit,
    ResizedImagesConfig,
    _label,
    _pil,
    _pixels,
    image_tensor,
)


class HFImageText(ImageSplit):
    """An in-memory Hugging Face `datasets.Dataset` with an image and a caption column (and
    optionally an integer label column). Images may be PIL images, dicts with `bytes` or `path`
    (an `Image` feature) or uint8 arrays; they are converted to L / RGB and resized to `size`.
    Captions (and labels) are checked when this is built.

    An `Image` column is decoded here, not by `datasets` (which opens a row's `path` when it has
    no bytes, from any folder or URL): a row's bytes are decoded and its path is then never read;
    a row with a path only is read from inside `root` (a dataset folder), refused if the path
    leads out of it. With `root` None (a dataset the caller built in memory), paths are read as
    given."""

    def __init__(
        self,
        dataset: Any,
        image_column: str = "image",
        caption_column: str = "text",
        label_column: str | None = None,
        *,
        size: Sequence[int] = (64, 64),
        channels: int = 3,
        limit: int | None = None,
        name: str = "dataset",
        root: str | Path | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if channels not in (1, 3):
            raise ConfigError(f"channels must be 1 or 3, got {channels!r}")
        columns = [image_column, caption_column] + ([label_column] if label_column else [])
        missing = [c for c in columns if c not in dataset.column_names]
        if missing:
            raise InputError(f"{name}: no column(s) {missing}; its columns are {dataset.column_names}")
        if limit is not None and limit < len(dataset):
            dataset = dataset.select(range(limit))
        dataset = dataset.select_columns(columns)
        feature = (getattr(dataset, "features", None) or {}).get(image_column)
        if type(feature).__name__ == "Image" and getattr(feature, "decode", False):
            dataset = dataset.cast_column(image_column, type(feature)(decode=False))
        for row, caption in enumerate(dataset[caption_column]):
            if not isinstance(caption, str):
                raise InputError(
                    f"{name}, row {row}: caption column {caption_column!r} must hold strings; got {type(caption).__name__} {caption!r:.80}"
                )
        if label_column:
            for row, label in enumerate(dataset[label_column]):
                if isinstance(label, bool) or not isinstance(label, (int, np.integer)):
                    raise InputError(
                        f"{name}, row {row}: label column {label_column!r} must hold integers; got {label!r:.80}"
                    )
        self.dataset = dataset
        self.image_column = image_column
        self.caption_column = caption_column
        self.label_column = label_column
        self.size = tuple(size)
        self.channels = channels
        self.name = name
        self.root = None if root is None else str(root)

    def __len__(self) -> int:
        return len(self.dataset)

    def _image(self, value: Any, where: str):
        Image = _pil()
        if isinstance(value, Image.Image):
            return value
        try:
            if isinstance(value, dict) and value.get("bytes") is not None:
                return _upright(Image.open(io.BytesIO(value["bytes"])))
            if isinstance(value, dict) and value.get("path"):
                path = value["path"]
                if self.root is not None:
                    what = f"{where}: column {self.image_column!r}: image path"
                    path = confined_path(self.root, str(path), what)
                return _upright(Image.open(path))
            if value is not None:
                array = np.asarray(value)
                if array.dtype != np.uint8:
                    raise InputError(f"{where}: image arrays must be uint8, got {array.dtype}")
                return Image.fromarray(array)
        except (*_PIL_ERRORS, TypeError, Image.DecompressionBombError) as error:
            if isinstance(error, InputError):
                raise
            raise InputError(f"{where}: cannot read the image: {str(error):.200}") from error
        raise InputError(f"{where}: no image in column {self.image_column!r}")

    def sample(self, index: int, rng: np.random.Generator) -> Sample:
        where = f"{self.name}, row {index}"
        try:
            row = self.dataset[index]
        except (*_PIL_ERRORS, TypeError) as error:  # decoding a broken Image feature
            raise InputError(f"{where}: cannot read the row: {error}") from error
        pixels = _pixels(self._image(row[self.image_column], where), self.channels, self.size, where)
        label = int(row[self.label_column]) if self.label_column else -1
        return {
            "image": image_tensor(pixels, 255, self.binarize, rng),
            "caption": row[self.caption_column],
            "label": _label(label),
        }


@dataclass
class HFDatasetConfig(ResizedImagesConfig):
    type: str = "hf_dataset"
    # A folder written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk` (never the hub).
    path: str = field(kw_only=True)
    image_column: str = "image"  # column holding the images
    caption_column: str = "text"  # column holding the captions
    label_column: str | None = None  # column of class labels, if any


def _upright(image: Any) -> Any:
    """Apply an EXIF orientation, as `datasets` does when it decodes an `Image` feature."""
    from PIL import ImageOps

    if image.getexif().get(0x0112) is not None:  # Orientation
        return ImageOps.exif_transpose(image)
    return image


def require_datasets():
    try:
        import datasets
    except ImportError as error:
        raise DependencyError(
            "the hf_dataset source needs the Hugging Face `datasets` package: pip install datasets"
        ) from error
    return datasets


# DatasetDict split names accepted for our split names.
_HF_SPLIT_NAMES = {"train": ("train",), "test": ("test",), "val": ("validation", "val", "valid")}


@register_dataset("hf_dataset")
class HFDatasetSource(ImageSource):
    """A `datasets.Dataset` (train only) or `DatasetDict` saved with `save_to_disk`, loaded from
    disk (never the hub)."""

    Config = HFDatasetConfig

    def __init__(self, config: HFDatasetConfig):
        super().__init__(config)
        datasets = require_datasets()
        path = Path(config.path)
        if not path.is_dir():
            raise InputError(f"hf_dataset path {path} is not a folder written by save_to_disk")
        try:
            loaded = datasets.load_from_disk(str(path))
        except (FileNotFoundError, ValueError, OSError) as error:
            raise InputError(f"{path}: cannot load a saved dataset: {error}") from error
        parts = dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"train": loaded}
        for split, candidates in _HF_SPLIT_NAMES.items():
            found = next((c for c in candidates if c in parts), None)
            if found is None:
                continue
            self._splits[split] = HFImageText(
                parts[found],
                config.image_column,
                config.caption_column,
                config.label_column,
                size=config.size,
                channels=config.channels,
                limit=config.limit,
                name=f"{path} [{found}]",
                root=path,
                **self._split_kwargs(split),
            )
        if "train" not in self._splits:
            raise InputError(f"{path}: no train split; it holds {sorted(parts)}")
