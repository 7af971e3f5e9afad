"""The `lerobot` dataset source: LeRobot v3 episodes read into robot episodes (numeric columns
when the source is built, images lazily)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InputError
from ...registry import register_dataset
from ..robot import (
    Episode,
    EpisodeSource,
    RobotDataConfig,
    missing_features_error,
)
from .frames import ParquetImageFrames, VideoFrames
from .meta import (
    DEFAULT_FEATURES,
    EPISODES_DIR,
    INFO_PATH,
    TASKS_PATH,
    VISUAL,
    _arrow,
    _av,
    _parquet_file,
    _read,
    _templated,
    dataset_root,
    read_episodes_metadata,
    read_info,
    read_tasks,
)

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

    @classmethod
    def dataset_features(cls, config: LeRobotConfig) -> tuple[str, dict[str, dict[str, Any]]]:
        root = dataset_root(config.path)
        features = read_info(root)["features"]
        return str(root / INFO_PATH), {
            name: (
                {"dtype": "image", "shape": list(_visual_shape(feature))}
                if feature["dtype"] in VISUAL
                else {"dtype": feature["dtype"], "shape": list(_frame_shape(feature))}
            )
            for name, feature in features.items()
            if name not in DEFAULT_FEATURES
        }

    def read_episodes(self) -> list[Episode]:
        root = dataset_root(self.config.path)
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
