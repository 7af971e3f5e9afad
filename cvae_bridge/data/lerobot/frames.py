"""Image features of LeRobot v3 episodes, decoded lazily one frame at a time: PNG bytes in the data
parquet files, or videos (PyAV)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from ...errors import InputError
from ...utils.files import confined_path
from ...utils.lru import LRUCache
from ..frames import FrameSequence, OpenFiles, file_identity
from .meta import (
    _arrow,
    _av,
    _parquet_file,
)

# Encoded image bytes kept per process (LRU over episodes).
IMAGE_CACHE_BYTES = 2 * 1024**3


# ---------------------------------------------------------------------------------------------
# Lazy images.

_parquet_files = OpenFiles(capacity=64)
_video_files = OpenFiles(capacity=16)
# (pid, file, identity, column, first row, rows) -> (encoded images, their bytes)
_image_cache: LRUCache[tuple, tuple[list, int]] = LRUCache(IMAGE_CACHE_BYTES, cost=lambda entry: entry[1])


class ParquetImageFrames(FrameSequence):
    """An image feature stored in the data parquet files: PNG/JPEG bytes (or a path) per row."""

    def __init__(self, root: Path, path: Path, column: str, rows: np.ndarray, shape: tuple[int, ...]):
        super().__init__(shape, f"{path}: {column}")
        self.root, self.path, self.column, self.rows = str(root), str(path), column, rows

    def _encoded(self) -> list:
        parquet = _parquet_files.get(self.path, lambda p: _parquet_file(Path(p)))
        key = (
            os.getpid(),
            self.path,
            file_identity(self.path),
            self.column,
            int(self.rows[0]),
            len(self.rows),
        )
        hit = _image_cache.get(key)
        if hit is not None:
            return hit[0]
        pa, _ = _arrow()
        meta = parquet.metadata
        starts = np.cumsum([0] + [meta.row_group(i).num_rows for i in range(meta.num_row_groups)])
        first = int(np.searchsorted(starts, self.rows.min(), side="right")) - 1
        last = int(np.searchsorted(starts, self.rows.max(), side="right")) - 1
        try:
            table = parquet.read_row_groups(list(range(first, last + 1)), columns=[self.column])
        except (OSError, pa.ArrowException) as error:
            raise InputError(
                f"{self.where}: cannot read images (truncated or corrupt file): {error}"
            ) from error
        column = table.column(0).combine_chunks().take(pa.array(self.rows - starts[first]))
        if pa.types.is_struct(column.type):
            names = [column.type.field(i).name for i in range(column.type.num_fields)]
            encoded = column.field("bytes").to_pylist() if "bytes" in names else [None] * len(column)
            paths = column.field("path").to_pylist() if "path" in names else [None] * len(column)
        elif pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
            encoded, paths = column.to_pylist(), [None] * len(column)
        else:
            raise InputError(f"{self.where}: expected an image struct {{bytes, path}}, got {column.type}")
        entries = list(zip(encoded, paths))
        _image_cache.put(key, (entries, sum(len(b) for b, _ in entries if b)))
        return entries

    def read(self, t: int) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        data, relative = self._encoded()[t]
        if data is None:
            if not relative:
                raise InputError(f"{self.where}: frame {t} has neither image bytes nor a path")
            file = confined_path(self.root, relative, f"{self.where}: frame {t} image path")
            try:
                data = file.read_bytes()
            except OSError as error:
                raise InputError(
                    f"{self.where}: frame {t}: cannot read image file {file}: {error}"
                ) from error
        try:
            with Image.open(io.BytesIO(data)) as image:
                return np.asarray(image.convert("RGB"))
        except Image.DecompressionBombError as error:  # declares more pixels than PIL's limit
            raise InputError(
                f"{self.where}: frame {t} (row {int(self.rows[t])}): image too large to decode: {error}"
            ) from error
        except (UnidentifiedImageError, OSError, ValueError) as error:
            raise InputError(
                f"{self.where}: frame {t} (row {int(self.rows[t])}): corrupt image: {error}"
            ) from error


class VideoFrames(FrameSequence):
    """A video feature: frame t is the frame of `path` shown at `timestamps[t]` (seconds)."""

    def __init__(self, path: Path, timestamps: np.ndarray, fps: float, shape: tuple[int, ...], key: str):
        super().__init__(shape, f"{path}: {key}")
        self.path, self.timestamps, self.fps = str(path), np.asarray(timestamps, dtype=np.float64), float(fps)

    def _open(self, path: str):
        av = _av()
        try:
            return av.open(path)
        except (OSError, av.FFmpegError) as error:
            raise InputError(f"{self.where}: cannot open video: {error}") from error

    def read(self, t: int) -> np.ndarray:
        av = _av()
        container = _video_files.get(self.path, self._open)
        stream = container.streams.video[0]
        target, half = float(self.timestamps[t]), 0.5 / self.fps
        found = None
        try:
            container.seek(
                max(0, int((target - half) / stream.time_base)), stream=stream, backward=True, any_frame=False
            )
            for frame in container.decode(stream):
                if frame.time is not None and frame.time >= target - half:
                    found = frame
                    break
        except av.FFmpegError as error:
            raise InputError(f"{self.where}: frame {t} at {target:.4f}s: cannot decode: {error}") from error
        if found is None or abs(found.time - target) > half:
            shown = "none" if found is None else f"{found.time:.4f}s"
            raise InputError(f"{self.where}: no frame at {target:.4f}s (frame {t}); nearest decoded: {shown}")
        return found.to_ndarray(format="rgb24")
