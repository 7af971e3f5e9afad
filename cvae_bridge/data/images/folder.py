"""`imagefolder`: images plus `metadata.jsonl`, Hugging Face's imagefolder layout.

With `label_column`, each line also names its class; the classes make the text-to-image metrics
apply (faithfulness, diversity): the prompts are the distinct captions of each split, and the
held-out ones are the test split's captions that no training line uses."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ConfigError, InputError
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


@dataclass(frozen=True)
class _Record:
    path: Path
    caption: str
    where: str  # "metadata.jsonl, line N" for messages
    label: str | None = None  # the class name, with label_column


class ImageFolderSplit(ImageSplit):
    """Image files with captions (from an imagefolder's metadata.jsonl), each with its class index
    in `class_names`, or -1 without labels."""

    def __init__(
        self,
        records: Sequence[_Record],
        *,
        size: Sequence[int],
        channels: int,
        class_names: Sequence[str] = (),
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.records = list(records)
        self.class_names = tuple(class_names)
        index = {name: i for i, name in enumerate(self.class_names)}
        self.labels = [-1 if record.label is None else index[record.label] for record in self.records]
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
            "label": _label(self.labels[index]),
        }


@dataclass
class ImageFolderConfig(ResizedImagesConfig):
    type: str = "imagefolder"
    # The folder: root/train/ and root/test/ (each with metadata.jsonl), or root/ alone (train only).
    root: str = field(kw_only=True)
    caption_column: str = "text"  # metadata.jsonl key of the caption
    # A column naming each image's class (a string); null: unlabelled (label -1).
    label_column: str | None = None
    # Open every image (PIL verify) when the source is built, to fail before training.
    verify: bool = True


def read_metadata(folder: Path, caption_column: str, label_column: str | None = None) -> list[_Record]:
    """Parse and check an imagefolder's metadata.jsonl: every line a JSON object with a string
    `file_name` naming an existing file inside `folder`, a string caption and, with
    `label_column`, a string class name."""
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
        label = None
        if label_column is not None:
            label = row.get(label_column)
            if not isinstance(label, str) or not label:
                raise InputError(
                    f"{where}: label column {label_column!r} must hold a class name (a non-empty string), "
                    f"got {label!r:.80}; keys: {sorted(row)}"
                )
        path = confined_path(folder, file_name, f"{where}: file_name")
        if not path.is_file():
            raise InputError(f"{where}: image file {file_name!r:.80} does not exist ({path})")
        records.append(_Record(path, caption, where, label))
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
    column, optionally a label column), in root/train/ and root/test/, or in root/ itself (train
    only). Classes are the training split's distinct labels, sorted."""

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
        splits = {
            split: read_metadata(folder, config.caption_column, config.label_column)[: config.limit]
            for split, folder in folders.items()
        }
        self.class_names: tuple[str, ...] = ()
        if config.label_column is not None:
            self.class_names = tuple(sorted({record.label for record in splits["train"]}))
            for record in splits.get("test", []):
                if record.label not in self.class_names:
                    raise InputError(
                        f"{record.where}: label {record.label!r} is not a class of the train split "
                        f"{list(self.class_names)[:20]}"
                    )
        for split, records in splits.items():
            if config.verify:
                verify_images(records)
            self._splits[split] = ImageFolderSplit(
                records,
                size=config.size,
                channels=config.channels,
                class_names=self.class_names,
                **self._split_kwargs(split),
            )

    def prompts(self, which: str = "heldout") -> list[tuple[str, int]]:
        """Distinct (caption, class index) pairs: of the train split ("train"), or of the test
        split's captions that no training line uses ("heldout")."""
        if not self.class_names:
            raise ConfigError("imagefolder prompts need classes: set data.label_column")
        if which not in ("train", "heldout"):
            raise ConfigError(f"prompts: expected 'train' or 'heldout', got {which!r}")
        if which == "heldout" and "test" not in self._splits:
            raise ConfigError(
                f"{self.config.root}: held-out prompts come from test/metadata.jsonl; there is none"
            )
        train = self._splits["train"]
        seen = {record.caption for record in train.records}
        split = self._splits["train" if which == "train" else "test"]
        pairs = dict.fromkeys(
            (record.caption, label)
            for record, label in zip(split.records, split.labels)
            if which == "train" or record.caption not in seen
        )
        if not pairs:
            raise ConfigError(
                f"{self.config.root}: every test caption also appears in training; held-out prompts need new ones"
            )
        return list(pairs)
