"""LeRobotDataset v3.0 (huggingface/lerobot), read and written without the `lerobot` package.

Layout below the dataset root:

    meta/info.json                               codebase_version "v3.0", fps, features (dtype,
                                                 shape, names), data_path / video_path templates,
                                                 total_episodes, ...
    meta/stats.json                              per feature: min, max, mean, std, count
    meta/tasks.parquet                           task text (pandas index) -> task_index
    meta/episodes/chunk-XXX/file-XXX.parquet     a row per episode: episode_index, tasks, length,
                                                 data/chunk_index, data/file_index,
                                                 dataset_from_index, dataset_to_index,
                                                 videos/<key>/{chunk_index, file_index,
                                                 from_timestamp, to_timestamp}, stats/...
    data/chunk-XXX/file-XXX.parquet              a row per frame, many episodes per file:
                                                 feature columns, timestamp, frame_index,
                                                 episode_index, index, task_index
    videos/<key>/chunk-XXX/file-XXX.mp4          many episodes per file, from_timestamp onwards

Image features are stored in the data files (`dtype: "image"`, a struct of PNG `bytes` and
`path`) or as videos (`dtype: "video"`, decoded with PyAV: `pip install "cvae-bridge[video]"`).
Numeric columns are read when the source is built; images are decoded one frame per sample (the
encoded PNG bytes of an episode are read on its first use and kept in a per-process cache).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DependencyError, InputError
from ..files import atomic_directory, confined_path
from ..lru import LRUCache
from ..registry import register_dataset
from .robot import (
    Episode,
    EpisodeSource,
    FrameSequence,
    OpenFiles,
    RobotDataConfig,
    episode_to_write,
    file_identity,
    is_image,
    missing_features_error,
)

CODEBASE_VERSION = "v3.0"
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
EPISODES_DIR = "meta/episodes"
CHUNK_FILE_PATTERN = "chunk-{chunk_index:03d}/file-{file_index:03d}"
DEFAULT_EPISODES_PATH = EPISODES_DIR + "/" + CHUNK_FILE_PATTERN + ".parquet"
DEFAULT_DATA_PATH = "data/" + CHUNK_FILE_PATTERN + ".parquet"
DEFAULT_VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE_PATTERN + ".mp4"
DEFAULT_CHUNK_SIZE = 1000  # files per chunk folder
DEFAULT_DATA_FILE_SIZE_IN_MB = 100
DEFAULT_VIDEO_FILE_SIZE_IN_MB = 500
DEFAULT_FEATURES = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}
VISUAL = ("image", "video")
# Encoded image bytes kept per process (LRU over episodes).
IMAGE_CACHE_BYTES = 2 * 1024**3


def _arrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as error:  # pragma: no cover - pyarrow is in the `data` extra
        raise DependencyError(
            'reading LeRobot datasets needs pyarrow: pip install "cvae-bridge[data]"'
        ) from error
    return pa, pq


def _av():
    try:
        import av
    except ImportError as error:
        raise DependencyError(
            'this LeRobot dataset stores images as videos; decoding them needs PyAV: pip install "cvae-bridge[video]"'
        ) from error
    return av


# ---------------------------------------------------------------------------------------------
# Metadata.


def read_info(root: Path) -> dict:
    """meta/info.json, checked: a v3 codebase version, features, fps, data_path."""
    path = root / INFO_PATH
    if not path.is_file():
        raise InputError(f"{path}: missing; {root} is not a LeRobot dataset folder")
    try:
        info = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{path}: not readable JSON: {error}") from error
    if not isinstance(info, dict):
        raise InputError(f"{path}: expected a JSON object, got {type(info).__name__}")
    version = info.get("codebase_version")
    if not isinstance(version, str) or not version.startswith("v3"):
        raise InputError(
            f"{path}: codebase_version {version!r} is not supported; this reader supports LeRobotDataset "
            f"{CODEBASE_VERSION} (v3.x). Convert older datasets with lerobot's "
            f"`python -m lerobot.datasets.v30.convert_dataset_v21_to_v30`"
        )
    features = info.get("features")
    if not isinstance(features, dict) or not all(
        isinstance(f, dict) and "dtype" in f and isinstance(f.get("shape"), (list, tuple))
        for f in features.values()
    ):
        raise InputError(f"{path}: features: expected a mapping name -> {{dtype, shape, names}}")
    fps = info.get("fps")
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or fps <= 0:
        raise InputError(f"{path}: fps: expected a positive number, got {fps!r}")
    if not isinstance(info.get("data_path"), str):
        raise InputError(
            f"{path}: data_path: expected a path template such as {DEFAULT_DATA_PATH!r}, got {info.get('data_path')!r}"
        )
    return info


def _templated(root: Path, template: str, what: str, **fields: Any) -> Path:
    try:
        relative = template.format(**fields)
    except (KeyError, IndexError, ValueError) as error:
        raise InputError(
            f"{what}: template {template!r} cannot be filled with {sorted(fields)}: {error!r}"
        ) from error
    return confined_path(root, relative, what)


def _parquet_file(path: Path):
    pa, pq = _arrow()
    if not path.is_file():
        raise InputError(f"{path}: parquet file is missing")
    try:
        return pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as error:
        raise InputError(f"{path}: cannot read parquet file (truncated or corrupt): {error}") from error


def _read(path: Path, columns: Sequence[str] | None = None, parquet: Any = None):
    pa, _ = _arrow()
    parquet = parquet if parquet is not None else _parquet_file(path)
    if columns is not None:
        missing = [c for c in columns if c not in parquet.schema_arrow.names]
        if missing:
            raise InputError(f"{path}: column(s) {missing} missing; columns: {parquet.schema_arrow.names}")
    try:
        return parquet.read(columns=list(columns) if columns is not None else None)
    except (OSError, pa.ArrowException) as error:
        raise InputError(f"{path}: cannot read parquet file (truncated or corrupt): {error}") from error


def read_tasks(root: Path) -> dict[int, str]:
    """meta/tasks.parquet as task_index -> text (the text is the pandas index of the table)."""
    path = root / TASKS_PATH
    parquet = _parquet_file(path)
    names = parquet.schema_arrow.names
    text_column = next((c for c in ("task", "__index_level_0__") if c in names), None)
    if text_column is None:
        metadata = parquet.schema_arrow.metadata or {}
        try:
            index_columns = json.loads(metadata.get(b"pandas", b"{}")).get("index_columns", [])
        except (json.JSONDecodeError, AttributeError):
            index_columns = []
        text_column = next((c for c in index_columns if isinstance(c, str) and c in names), None)
    if text_column is None or "task_index" not in names:
        raise InputError(
            f"{path}: expected columns task_index and the task text (task or the pandas index); columns: {names}"
        )
    table = _read(path, [text_column, "task_index"], parquet)
    texts, indices = table.column(0).to_pylist(), table.column(1).to_pylist()
    return {int(i): str(t) for t, i in zip(texts, indices)}


def read_episodes_metadata(root: Path) -> list[dict]:
    """Every row of meta/episodes/chunk-*/file-*.parquet (stats columns left out)."""
    files = sorted((root / EPISODES_DIR).glob("chunk-*/file-*.parquet"))
    if not files:
        raise InputError(f"{root / EPISODES_DIR}: no chunk-*/file-*.parquet episode metadata files")
    rows = []
    for path in files:
        parquet = _parquet_file(path)
        columns = [c for c in parquet.schema_arrow.names if not c.startswith("stats/")]
        for required in ("episode_index", "data/chunk_index", "data/file_index"):
            if required not in columns:
                raise InputError(f"{path}: column {required!r} missing; columns: {columns}")
        for row in _read(path, columns, parquet).to_pylist():
            row["_file"] = path
            rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------
# Columns to numpy.


def _frame_shape(feature: Mapping[str, Any]) -> tuple[int, ...]:
    shape = tuple(int(s) for s in feature["shape"])
    return shape


def _visual_shape(feature: Mapping[str, Any]) -> tuple[int, int, int]:
    """(H, W, 3) of an image or video feature (info.json may give (C, H, W) with names)."""
    shape = _frame_shape(feature)
    names = feature.get("names") or []
    if len(shape) == 3 and len(names) == 3 and names[0] in ("channel", "channels"):
        shape = (shape[1], shape[2], shape[0])
    return shape  # type: ignore[return-value]


def column_to_numpy(column: Any, shape: tuple[int, ...], where: str) -> np.ndarray:
    """An arrow column of scalars or (nested, fixed or variable) lists -> (n, *shape) numpy."""
    pa, _ = _arrow()
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n = len(array)
    if array.null_count:
        raise InputError(f"{where}: {array.null_count} missing (null) values")
    while isinstance(array, pa.ExtensionArray):
        array = array.storage
    inner: list[int] = []
    while (
        pa.types.is_list(array.type)
        or pa.types.is_large_list(array.type)
        or pa.types.is_fixed_size_list(array.type)
    ):
        if pa.types.is_fixed_size_list(array.type):
            inner.append(array.type.list_size)
            array = array.flatten()
        else:
            lengths = np.diff(np.asarray(array.offsets))
            if len(lengths) and (lengths != lengths[0]).any():
                raise InputError(
                    f"{where}: rows hold lists of different lengths ({lengths.min()} to {lengths.max()})"
                )
            inner.append(int(lengths[0]) if len(lengths) else 0)
            array = array.flatten()
        if array.null_count:
            raise InputError(f"{where}: {array.null_count} missing (null) values")
        while isinstance(array, pa.ExtensionArray):
            array = array.storage
    values = array.to_numpy(zero_copy_only=False)
    expected = math.prod(shape)
    if math.prod(inner) != expected:
        raise InputError(
            f"{where}: rows hold {tuple(inner) or 'scalars'}, but info.json gives shape {list(shape)}"
        )
    return values.reshape((n,) + shape)


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
        except (UnidentifiedImageError, OSError, ValueError) as error:
            raise InputError(f"{self.where}: frame {t}: corrupt image: {error}") from error


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


# ---------------------------------------------------------------------------------------------
# The source.


@dataclass
class LeRobotConfig(RobotDataConfig):
    pass


@register_dataset("lerobot")
class LeRobotSource(EpisodeSource):
    """A local LeRobotDataset v3.0 folder as action-chunk samples; exposes `fps`, `tasks`
    (texts in task_index order), `robot_type` and `info`."""

    Config = LeRobotConfig
    instruction_hint = " (no task_index column and no tasks in the episodes metadata)"

    def read_episodes(self) -> list[Episode]:
        root = Path(self.config.path)
        if not root.is_dir():
            raise InputError(f"{root}: LeRobot dataset folder does not exist")
        info_path = root / INFO_PATH
        self.info = info = read_info(root)
        self.fps = info["fps"]
        self.robot_type = info.get("robot_type")
        features = info["features"]
        needed = list(dict.fromkeys(self.config.features.values()))
        missing = [f for f in needed if f not in features]
        if missing:
            raise missing_features_error(
                str(info_path), missing, [f for f in features if f not in DEFAULT_FEATURES]
            )
        kinds = {}
        for name in needed:
            dtype = features[name]["dtype"]
            if dtype in VISUAL:
                kinds[name] = dtype
            else:
                try:
                    np.dtype(dtype)
                except TypeError:
                    raise InputError(
                        f"{info_path}: features.{name}: dtype {dtype!r} is not numeric, image or video"
                    ) from None
                kinds[name] = "numeric"
        videos = [n for n, kind in kinds.items() if kind == "video"]
        if videos:
            _av()
            if not isinstance(info.get("video_path"), str):
                raise InputError(
                    f"{info_path}: video_path: expected a path template for video features {videos}"
                )
        # The template itself must stay inside the dataset, whatever indices fill it.
        _templated(root, info["data_path"], f"{info_path}: data_path", chunk_index=0, file_index=0)
        tasks = read_tasks(root)
        self.tasks = [tasks[i] for i in sorted(tasks)]
        metadata = read_episodes_metadata(root)

        by_file: dict[tuple[int, int], list[dict]] = {}
        for row in metadata:
            by_file.setdefault((int(row["data/chunk_index"]), int(row["data/file_index"])), []).append(row)
        episodes = []
        for (chunk, number), rows in sorted(by_file.items()):
            path = _templated(
                root, info["data_path"], f"{info_path}: data_path", chunk_index=chunk, file_index=number
            )
            episodes.extend(self._read_data_file(root, path, rows, features, kinds, tasks))
        return episodes

    def _read_data_file(
        self, root: Path, path: Path, rows: list[dict], features: dict, kinds: dict, tasks: dict
    ) -> list[Episode]:
        parquet = _parquet_file(path)
        available = parquet.schema_arrow.names
        if "episode_index" not in available:
            raise InputError(f"{path}: column 'episode_index' missing; columns: {available}")
        missing = [n for n, kind in kinds.items() if kind != "video" and n not in available]
        if missing:
            raise InputError(
                f"{path}: column(s) {missing} (features in {INFO_PATH}) missing; columns: {available}"
            )
        wanted = ["episode_index"] + [c for c in ("frame_index", "timestamp", "task_index") if c in available]
        wanted += [n for n, kind in kinds.items() if kind == "numeric"]
        table = _read(path, wanted, parquet)
        episode_column = table.column("episode_index").to_numpy()
        frame_column = table.column("frame_index").to_numpy() if "frame_index" in available else None
        order = (
            np.lexsort((frame_column, episode_column))
            if frame_column is not None
            else np.argsort(episode_column, kind="stable")
        )
        sorted_episodes = episode_column[order]
        numeric = {
            n: column_to_numpy(table.column(n), _frame_shape(features[n]), f"{path}: {n}")
            for n, kind in kinds.items()
            if kind == "numeric"
        }
        timestamps = table.column("timestamp").to_numpy() if "timestamp" in available else None
        task_column = table.column("task_index").to_numpy() if "task_index" in available else None
        listed = {int(r["episode_index"]) for r in rows}
        unlisted = sorted(set(np.unique(episode_column).tolist()) - listed)
        if unlisted:
            raise InputError(
                f"{path}: rows of episode(s) {unlisted[:10]} have no entry in {EPISODES_DIR} pointing at this file"
            )

        episodes = []
        for row in rows:
            index = int(row["episode_index"])
            where = f"{path}: episode {index}"
            lo, hi = (
                np.searchsorted(sorted_episodes, index, side="left"),
                np.searchsorted(sorted_episodes, index, side="right"),
            )
            positions = order[lo:hi]
            n = len(positions)
            if n == 0:
                raise InputError(f"{where}: no rows, though {row['_file']} places the episode in this file")
            length = row.get("length")
            if (
                length is None
                and row.get("dataset_to_index") is not None
                and row.get("dataset_from_index") is not None
            ):
                length = row["dataset_to_index"] - row["dataset_from_index"]
            if length is not None and int(length) != n:
                raise InputError(f"{where}: {n} rows, but {row['_file']} gives length {length}")
            if frame_column is not None and not np.array_equal(frame_column[positions], np.arange(n)):
                raise InputError(f"{where}: frame_index is not 0 .. {n - 1} without gaps or repeats")
            contiguous = n == positions[-1] - positions[0] + 1 and bool(np.all(np.diff(positions) == 1))
            selection = slice(positions[0], positions[0] + n) if contiguous else positions  # a slice: views
            data: dict[str, Any] = {}
            for name, kind in kinds.items():
                if kind == "numeric":
                    data[name] = numeric[name][selection]
                elif kind == "image":
                    data[name] = ParquetImageFrames(
                        root, path, name, positions.copy(), (n,) + _visual_shape(features[name])
                    )
                else:
                    data[name] = self._video(
                        root,
                        row,
                        name,
                        features[name],
                        timestamps[selection] if timestamps is not None else None,
                        n,
                    )
            instruction, per_frame = None, None
            if task_column is not None:
                indices = task_column[selection]
                unknown = sorted(set(np.unique(indices).tolist()) - set(tasks))
                if unknown:
                    raise InputError(f"{where}: task_index {unknown} not in {TASKS_PATH}")
                instruction = tasks[int(indices[0])]
                if (indices != indices[0]).any():
                    per_frame = np.array([tasks[int(i)] for i in indices], dtype=object)
            elif row.get("tasks"):
                instruction = str(row["tasks"][0])
            episodes.append(
                Episode(
                    data=data,
                    instruction=instruction,
                    index=index,
                    source=str(path),
                    frame_instructions=per_frame,
                )
            )
        return episodes

    def _video(
        self, root: Path, row: dict, key: str, feature: dict, timestamps: np.ndarray | None, n: int
    ) -> VideoFrames:
        info_path = root / INFO_PATH
        prefix = f"videos/{key}/"
        columns = [prefix + "chunk_index", prefix + "file_index"]
        absent = [c for c in columns if row.get(c) is None]
        if absent:
            raise InputError(
                f"{row['_file']}: episode {row['episode_index']}: column(s) {absent} missing for video feature {key!r}"
            )
        path = _templated(
            root,
            self.info["video_path"],
            f"{info_path}: video_path",
            video_key=key,
            chunk_index=int(row[columns[0]]),
            file_index=int(row[columns[1]]),
        )
        if not path.is_file():
            raise InputError(
                f"{path}: video file of feature {key!r} (episode {row['episode_index']}) is missing"
            )
        start = float(row.get(prefix + "from_timestamp") or 0.0)
        if timestamps is None:
            timestamps = np.arange(n) / float(self.fps)
        return VideoFrames(
            path,
            start + np.asarray(timestamps, dtype=np.float64),
            float(self.fps),
            (n,) + _visual_shape(feature),
            key,
        )


# ---------------------------------------------------------------------------------------------
# Writing.


def _stats(values: np.ndarray, image: bool) -> dict[str, np.ndarray]:
    """min, max, mean, std, count of one episode's feature: per element, or per channel (in
    [0, 1], shape (3, 1, 1)) for images, as LeRobot stores them."""
    if image:
        x = values.reshape(-1, values.shape[-1]).astype(np.float64) / 255.0
        reduce = lambda a: a.reshape(3, 1, 1)  # noqa: E731
    else:
        x = (
            values.reshape(len(values), -1).astype(np.float64)
            if values.ndim > 1
            else values.astype(np.float64)[:, None]
        )
        shape = values.shape[1:] or (1,)
        reduce = lambda a: a.reshape(shape)  # noqa: E731
    with np.errstate(invalid="ignore"):  # NaN in the data is written as it is (readers refuse it)
        return {
            "min": reduce(x.min(axis=0)),
            "max": reduce(x.max(axis=0)),
            "mean": reduce(x.mean(axis=0)),
            "std": reduce(x.std(axis=0)),
            "count": np.array([len(values)]),
        }


def _aggregate(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    counts = np.array([p["count"][0] for p in parts], dtype=np.float64)
    weights = (counts / counts.sum()).reshape((-1,) + (1,) * parts[0]["mean"].ndim)
    means = np.stack([p["mean"] for p in parts])
    mean = (weights * means).sum(0)
    second = (weights * (np.stack([p["std"] for p in parts]) ** 2 + means**2)).sum(0)
    return {
        "min": np.min([p["min"] for p in parts], axis=0),
        "max": np.max([p["max"] for p in parts], axis=0),
        "mean": mean,
        "std": np.sqrt(np.maximum(second - mean**2, 0.0)),
        "count": np.array([int(counts.sum())]),
    }


def _numeric_arrow(values: np.ndarray):
    pa, _ = _arrow()
    flat = pa.array(np.ascontiguousarray(values).reshape(-1))
    for size in reversed(values.shape[1:]):
        flat = pa.FixedSizeListArray.from_arrays(flat, size)
    return flat


def _hf_feature(dtype: str, shape: tuple[int, ...], kind: str) -> dict:
    """The `datasets` feature of a column, for the parquet `huggingface` schema metadata."""
    if kind == "image":
        return {"_type": "Image"}
    feature: dict = {"dtype": dtype, "_type": "Value"}
    for size in reversed(shape):
        feature = {"feature": feature, "length": size, "_type": "Sequence"}
    return feature


def _png(frame: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(frame)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _tasks_table(texts: list[str]):
    """tasks.parquet as pandas writes a frame indexed by task text (lerobot reads it so)."""
    pa, _ = _arrow()
    pandas_meta = {
        "index_columns": ["__index_level_0__"],
        "column_indexes": [
            {
                "name": None,
                "field_name": None,
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": {"encoding": "UTF-8"},
            }
        ],
        "columns": [
            {
                "name": "task_index",
                "field_name": "task_index",
                "pandas_type": "int64",
                "numpy_type": "int64",
                "metadata": None,
            },
            {
                "name": None,
                "field_name": "__index_level_0__",
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": None,
            },
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.0",
    }
    schema = pa.schema(
        [("task_index", pa.int64()), ("__index_level_0__", pa.string())],
        metadata={b"pandas": json.dumps(pandas_meta).encode()},
    )
    return pa.table(
        {
            "task_index": pa.array(range(len(texts)), pa.int64()),
            "__index_level_0__": pa.array(texts, pa.string()),
        },
        schema=schema,
    )


class LeRobotDatasetWriter:
    """Writes a LeRobotDataset v3.0 folder one episode at a time, holding only the episode being
    written: `with LeRobotDatasetWriter(root, fps) as writer: writer.add(episode)`. The folder
    replaces `root` in one rename when the block ends without error; on an error (a bad episode
    included) `root` keeps what it held.

    Each episode: feature name -> (T, ...) array (numeric, or (T, H, W, 3) uint8 for images, stored
    as PNG in the data parquet files), plus its task text ("task" in a mapping, `instruction` of an
    `Episode`; None is written as the empty task ""). Every episode must have episode 0's features.
    `episodes_per_file` splits the data into several files (all in one by default)."""

    def __init__(
        self,
        root: str | Path,
        fps: float,
        robot_type: str | None = None,
        episodes_per_file: int | None = None,
    ):
        if not fps > 0:
            raise InputError(f"write_lerobot_dataset: fps must be positive, got {fps}")
        if episodes_per_file is not None and episodes_per_file < 1:
            raise InputError(
                f"write_lerobot_dataset: episodes_per_file must be at least 1, got {episodes_per_file}"
            )
        self.root, self.robot_type = Path(root), robot_type
        self.fps = int(fps) if float(fps).is_integer() else float(fps)
        self.per_file = episodes_per_file
        self.spec: dict[str, dict] = {}  # info.json's features, from episode 0
        self._layout: dict[str, tuple] = {}  # episode 0's (shape per frame, dtype) per feature
        self.tasks: dict[str, int] = {}
        self.episode_rows: list[dict] = []
        self.episode_stats: list[dict] = []
        self.frames = 0
        self._writer, self._location = None, None

    def __enter__(self) -> LeRobotDatasetWriter:
        self._stack = contextlib.ExitStack()
        self._temporary = self._stack.enter_context(atomic_directory(self.root))
        # PNG encoding releases the GIL: threads encode an episode's frames side by side.
        self._encoder = self._stack.enter_context(ThreadPoolExecutor(os.cpu_count() or 1))
        return self

    def __exit__(self, kind, error, traceback) -> bool | None:
        # The stack gets the error, if any, so that the temporary folder is discarded.
        if kind is None:
            try:
                self._close_file()
                if not self.episode_rows:
                    raise InputError("write_lerobot_dataset: no episodes to write")
                self._write_metadata()
            except BaseException as failure:
                self._stack.__exit__(type(failure), failure, failure.__traceback__)
                raise
        else:
            self._close_file()
        return self._stack.__exit__(kind, error, traceback)

    def _close_file(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def add(self, episode: Episode | Mapping[str, Any]) -> None:
        pa, pq = _arrow()
        i = len(self.episode_rows)
        arrays, task = episode_to_write(episode, i)
        if not self.spec:
            self.spec = _feature_spec(arrays)
            self._layout = {name: (value.shape[1:], value.dtype) for name, value in arrays.items()}
        if set(arrays) != set(self._layout):
            raise InputError(
                f"episode {i}: features {sorted(arrays)} differ from episode 0's {sorted(self._layout)}"
            )
        for name, value in arrays.items():
            shape, dtype = self._layout[name]
            if value.shape[1:] != shape or value.dtype != dtype:
                raise InputError(
                    f"episode {i}: {name} is {value.dtype} {value.shape[1:]} per frame, episode 0 has {dtype} {shape}"
                )
        task = task or ""
        self.tasks.setdefault(task, len(self.tasks))
        n = len(next(iter(arrays.values())))
        chunk_index, file_index = divmod(i // self.per_file if self.per_file else 0, DEFAULT_CHUNK_SIZE)
        if self._location != (chunk_index, file_index):
            self._close_file()
            self._location = (chunk_index, file_index)
            self._path = self._temporary / DEFAULT_DATA_PATH.format(
                chunk_index=chunk_index, file_index=file_index
            )
            self._path.parent.mkdir(parents=True, exist_ok=True)
        frame_index = np.arange(n, dtype=np.int64)
        bookkeeping = {
            "timestamp": (frame_index / self.fps).astype(np.float32),
            "frame_index": frame_index,
            "episode_index": np.full(n, i, dtype=np.int64),
            "index": np.arange(self.frames, self.frames + n, dtype=np.int64),
            "task_index": np.full(n, self.tasks[task], dtype=np.int64),
        }
        columns = {}
        for name, feature in self.spec.items():
            value = arrays[name]
            if feature["dtype"] == "image":
                columns[name] = pa.StructArray.from_arrays(
                    [
                        pa.array(list(self._encoder.map(_png, value)), pa.binary()),
                        pa.array([f"frame-{t:06d}.png" for t in range(n)], pa.string()),
                    ],
                    names=["bytes", "path"],
                )
            else:
                columns[name] = _numeric_arrow(
                    value if value.ndim > 1 and feature["shape"] != [1] else value.reshape(n)
                )
        for name, value in bookkeeping.items():
            columns[name] = pa.array(value)
        table = pa.table(columns).replace_schema_metadata(_hf_metadata(self.spec))
        if self._writer is None:
            self._writer = pq.ParquetWriter(self._path, table.schema, compression="snappy")
        self._writer.write_table(table)  # one row group per episode

        stats = {name: _stats(arrays[name], f["dtype"] == "image") for name, f in self.spec.items()}
        stats.update({name: _stats(value, False) for name, value in bookkeeping.items()})
        self.episode_stats.append(stats)
        row = {
            "episode_index": i,
            "tasks": [task],
            "length": n,
            "data/chunk_index": chunk_index,
            "data/file_index": file_index,
            "dataset_from_index": self.frames,
            "dataset_to_index": self.frames + n,
            "meta/episodes/chunk_index": 0,
            "meta/episodes/file_index": 0,
        }
        for name, values in stats.items():
            for key, value in values.items():
                row[f"stats/{name}/{key}"] = value.tolist()
        self.episode_rows.append(row)
        self.frames += n

    def _write_metadata(self) -> None:
        pa, pq = _arrow()
        temporary = self._temporary
        meta = temporary / DEFAULT_EPISODES_PATH.format(chunk_index=0, file_index=0)
        meta.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(self.episode_rows), meta)
        pq.write_table(_tasks_table(list(self.tasks)), temporary / TASKS_PATH)
        all_features = {**self.spec, **DEFAULT_FEATURES}
        total = {
            name: {k: v.tolist() for k, v in _aggregate([s[name] for s in self.episode_stats]).items()}
            for name in all_features
        }
        (temporary / STATS_PATH).write_text(json.dumps(total, indent=4))
        episodes = len(self.episode_rows)
        info = {
            "codebase_version": CODEBASE_VERSION,
            "robot_type": self.robot_type,
            "total_episodes": episodes,
            "total_frames": self.frames,
            "total_tasks": len(self.tasks),
            "chunks_size": DEFAULT_CHUNK_SIZE,
            "data_files_size_in_mb": DEFAULT_DATA_FILE_SIZE_IN_MB,
            "video_files_size_in_mb": DEFAULT_VIDEO_FILE_SIZE_IN_MB,
            "fps": self.fps,
            "splits": {"train": f"0:{episodes}"},
            "data_path": DEFAULT_DATA_PATH,
            "video_path": None,
            "features": all_features,
        }
        (temporary / INFO_PATH).write_text(json.dumps(info, indent=4))


def write_lerobot_dataset(
    root: str | Path,
    episodes: Iterable[Episode | Mapping[str, Any]],
    fps: float,
    robot_type: str | None = None,
    episodes_per_file: int | None = None,
) -> Path:
    """Write episodes as a LeRobotDataset v3.0 folder at `root` (replacing it atomically); see
    LeRobotDatasetWriter. `episodes` may be a generator: one episode is held at a time."""
    with LeRobotDatasetWriter(root, fps, robot_type, episodes_per_file) as writer:
        for episode in episodes:
            writer.add(episode)
    return Path(root)


def _feature_spec(arrays: Mapping[str, np.ndarray]) -> dict[str, dict]:
    """info.json's features, from the arrays of the first episode."""
    spec = {}
    for name, value in arrays.items():
        if "/" in name or name in DEFAULT_FEATURES:
            raise InputError(f"write_lerobot_dataset: feature name {name!r} is reserved or contains '/'")
        if is_image(value):
            spec[name] = {
                "dtype": "image",
                "shape": list(value.shape[1:]),
                "names": ["height", "width", "channels"],
            }
        elif np.issubdtype(value.dtype, np.number) or value.dtype == np.bool_:
            shape = list(value.shape[1:]) or [1]
            names = [f"{name}.{i}" for i in range(shape[0])] if len(shape) == 1 and shape[0] > 1 else None
            spec[name] = {"dtype": value.dtype.name, "shape": shape, "names": names}
        else:
            raise InputError(f"write_lerobot_dataset: feature {name!r} has unsupported dtype {value.dtype}")
    return spec


def _hf_metadata(spec: dict[str, dict]) -> dict[bytes, bytes]:
    """The parquet schema metadata that Hugging Face datasets reads the features from."""
    hf_features = {
        n: _hf_feature(
            f["dtype"],
            tuple(f["shape"]) if f["shape"] != [1] else (),
            "image" if f["dtype"] == "image" else "numeric",
        )
        for n, f in {**spec, **DEFAULT_FEATURES}.items()
    }
    return {b"huggingface": json.dumps({"info": {"features": hf_features}}).encode()}
