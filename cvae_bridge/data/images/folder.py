"""`imagefolder`: images plus `metadata.jsonl`, Hugging Face's imagefolder layout."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InputError
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


@dataclass
class ImageFolderConfig(ResizedImagesConfig):
    type: str = "imagefolder"
    # The folder: root/train/ and root/test/ (each with metadata.jsonl), or root/ alone (train only).
    root: str = field(kw_only=True)
    caption_column: str = "text"
    # Open every image (PIL verify) when the source is built, to fail before training.
    verify: bool = True


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
