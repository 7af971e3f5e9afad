"""Writing LeRobot v3 folders, one episode at a time."""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InputError
from ...utils.files import atomic_directory
from ..robot import (
    Episode,
    episode_to_write,
    is_image,
)
from .meta import (
    CODEBASE_VERSION,
    DEFAULT_CHUNK_SIZE,
    DEFAULT_DATA_FILE_SIZE_IN_MB,
    DEFAULT_DATA_PATH,
    DEFAULT_EPISODES_PATH,
    DEFAULT_FEATURES,
    DEFAULT_VIDEO_FILE_SIZE_IN_MB,
    INFO_PATH,
    QUANTILES,
    STATS_PATH,
    TASKS_PATH,
    _arrow,
)

# ---------------------------------------------------------------------------------------------
# Writing.


def _stats(values: np.ndarray, image: bool) -> dict[str, np.ndarray]:
    """One episode's stats of a feature as LeRobot keeps them: min, max, mean, std, count and the
    QUANTILES, per element, or per channel in [0, 1] with shape (3, 1, 1) for images. Min and max
    of an integer feature stay integers; the rest are float64."""
    if image:
        return _image_stats(values)
    x = values.reshape(len(values), -1)
    if not np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.float64)
    with np.errstate(invalid="ignore"):  # NaN in the data is written as it is (readers refuse it)
        stats = {
            "min": x.min(axis=0),
            "max": x.max(axis=0),
            "mean": x.mean(axis=0, dtype=np.float64),
            "std": x.std(axis=0, dtype=np.float64),
            "count": np.array([len(values)]),
        }
        stats.update({key: np.quantile(x, q, axis=0) for key, q in QUANTILES.items()})
    shape = values.shape[1:] or (1,)
    return {key: value if key == "count" else value.reshape(shape) for key, value in stats.items()}


def _image_stats(frames: np.ndarray) -> dict[str, np.ndarray]:
    """`_stats` of (T, H, W, 3) uint8 frames, exactly, from each channel's 256-bin histogram:
    no float copy of the episode's pixels."""
    counts = np.stack([np.bincount(frames[..., c].reshape(-1), minlength=256) for c in range(3)])
    cumulative = counts.cumsum(axis=1)
    levels = np.arange(256, dtype=np.float64)
    total = int(cumulative[0, -1])
    mean = counts @ levels / total
    variance = np.maximum(counts @ levels**2 / total - mean**2, 0.0)

    def ranked(rank: float) -> np.ndarray:  # per channel, the pixel value of 0-based rank `rank`
        return np.array([np.searchsorted(cumulative[c], rank, side="right") for c in range(3)], np.float64)

    def scaled(value: np.ndarray) -> np.ndarray:
        return (value / 255.0).reshape(3, 1, 1)

    stats = {
        "min": scaled(ranked(0)),
        "max": scaled(ranked(total - 1)),
        "mean": scaled(mean),
        "std": scaled(np.sqrt(variance)),
        "count": np.array([len(frames)]),
    }
    for key, q in QUANTILES.items():  # np.quantile's default rule: linear between order statistics
        position = q * (total - 1)
        low, high = ranked(np.floor(position)), ranked(np.ceil(position))
        stats[key] = scaled(low + (position - np.floor(position)) * (high - low))
    return stats


def _aggregate(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The dataset's stats from its episodes': exact but for the quantiles, which are the
    count-weighted mean of the episodes' quantiles, as LeRobot aggregates them."""
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
        **{key: (weights * np.stack([p[key] for p in parts])).sum(0) for key in QUANTILES},
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
    `names` gives info.json's per-element names of features (joints, axes: feature -> one name per
    element of its first axis), which LeRobot's `aggregate_datasets` compares; features without
    are named `<feature>.<i>`. `episodes_per_file` splits the data into several files (all in one
    by default)."""

    def __init__(
        self,
        root: str | Path,
        fps: float,
        robot_type: str | None = None,
        episodes_per_file: int | None = None,
        names: Mapping[str, Sequence[str]] | None = None,
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
        self.names = {name: list(values) for name, values in (names or {}).items()}
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
            self.spec = _feature_spec(arrays, self.names)
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
        }
        for name, values in stats.items():
            for key, value in values.items():
                row[f"stats/{name}/{key}"] = value.tolist()
        # Last, as LeRobot orders the columns: appended episodes' files then share this schema.
        row.update({"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})
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
    names: Mapping[str, Sequence[str]] | None = None,
) -> Path:
    """Write episodes as a LeRobotDataset v3.0 folder at `root` (replacing it atomically); see
    LeRobotDatasetWriter. `episodes` may be a generator: one episode is held at a time."""
    with LeRobotDatasetWriter(root, fps, robot_type, episodes_per_file, names) as writer:
        for episode in episodes:
            writer.add(episode)
    return Path(root)


def _feature_spec(arrays: Mapping[str, np.ndarray], names: Mapping[str, list[str]]) -> dict[str, dict]:
    """info.json's features, from the arrays of the first episode and the names given."""
    unknown = sorted(set(names) - set(arrays))
    if unknown:
        raise InputError(
            f"write_lerobot_dataset: names given for {unknown}, which are not features of episode 0: {sorted(arrays)}"
        )
    spec = {}
    for name, value in arrays.items():
        if "/" in name or name in DEFAULT_FEATURES:
            raise InputError(f"write_lerobot_dataset: feature name {name!r} is reserved or contains '/'")
        if is_image(value):
            spec[name] = {
                "dtype": "image",
                "shape": list(value.shape[1:]),
                "names": names.get(name, ["height", "width", "channels"]),
            }
        elif np.issubdtype(value.dtype, np.number) or value.dtype == np.bool_:
            shape = list(value.shape[1:]) or [1]
            given = names.get(name)
            if given is not None and (
                len(given) != shape[0] or not all(isinstance(n, str) and n for n in given)
            ):
                raise InputError(
                    f"write_lerobot_dataset: names[{name!r}]: expected {shape[0]} non-empty strings, one per "
                    f"element of its first axis (shape {shape}), got {len(given)}: {given!r:.120}"
                )
            if given is None and len(shape) == 1 and shape[0] > 1:
                given = [f"{name}.{i}" for i in range(shape[0])]
            spec[name] = {"dtype": value.dtype.name, "shape": shape, "names": given}
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
