"""ACT's HDF5 episodes (tonyzhaozh/act, record_sim_episodes.py): a folder of `episode_<i>.hdf5`.

Layout of one file (T frames):

    attrs["sim"]                    bool, simulated (True) or real-robot data
    /observations/qpos              (T, d)           -> observation.state
    /observations/qvel              (T, d)           -> observation.velocity
    /observations/env_state         (T, e)           -> observation.environment_state
    /observations/images/<camera>   (T, H, W, 3) u8  -> observation.images.<camera>
    /action                         (T, a)           -> action

Other datasets directly under /observations map to `observation.<name>`, other top-level datasets
to `<name>`. ACT has no task text; the config's `instruction` gives one for the whole dataset, else
a file attribute `instruction` (written by `write_act_hdf5` when an episode has a task) is used.
Numeric datasets are read when the source is built; image frames are read one at a time.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DependencyError, InputError
from ..registry import register_dataset
from ..utils.files import atomic_directory
from .frames import FrameSequence, OpenFiles
from .robot import (
    Episode,
    EpisodeSource,
    RobotDataConfig,
    episode_to_write,
    missing_features_error,
)

EPISODE_FILE = re.compile(r"^episode_(\d+)\.hdf5$")

_NAMED = {
    "/observations/qpos": "observation.state",
    "/observations/qvel": "observation.velocity",
    "/observations/env_state": "observation.environment_state",
    "/action": "action",
}
_PATHS = {feature: path for path, feature in _NAMED.items()}
_IMAGES = "/observations/images/"


def _h5py():
    try:
        import h5py
    except ImportError as error:  # pragma: no cover - h5py is in the `data` extra
        raise DependencyError(
            'reading ACT HDF5 episodes needs h5py: pip install "cvae-bridge[data]"'
        ) from error
    return h5py


def feature_name(path: str) -> str | None:
    """LeRobot feature name of an HDF5 dataset path, or None for paths that are not features."""
    path = "/" + path.strip("/")
    if path in _NAMED:
        return _NAMED[path]
    if path.startswith(_IMAGES) and path.count("/") == 3:
        return "observation.images." + path[len(_IMAGES) :]
    if path.startswith("/observations/") and path.count("/") == 2:
        return "observation." + path[len("/observations/") :]
    if path.count("/") == 1:
        return path[1:]
    return None


def dataset_path(feature: str) -> str:
    """HDF5 dataset path of a LeRobot feature name (the inverse of `feature_name`)."""
    if feature in _PATHS:
        return _PATHS[feature]
    if feature.startswith("observation.images.") and len(feature) > len("observation.images."):
        camera = feature[len("observation.images.") :]
        if "/" not in camera:
            return _IMAGES + camera
    elif (
        feature.startswith("observation.")
        and "." not in feature[len("observation.") :]
        and "/" not in feature
    ):
        return "/observations/" + feature[len("observation.") :]
    elif "/" not in feature and "." not in feature and feature:
        return "/" + feature
    raise InputError(
        f"feature {feature!r} has no place in ACT's HDF5 layout; use observation.state, observation.velocity, "
        f"observation.environment_state, observation.images.<camera>, observation.<name>, action or <name>"
    )


_files = OpenFiles(capacity=64)

# A dataset may declare at most this many times its file's size in bytes (at least 64 KiB): gzip,
# HDF5's built-in compression, shrinks data at most ~1032:1, so a larger shape is unallocated
# space that reading would fill (a tiny file declaring terabytes), refused before allocating.
MAX_EXPANSION = 1100
MIN_FILE_BYTES = 64 * 1024


def check_storage(path: str, key: str, dataset: Any, file_size: int) -> None:
    """Refuse a dataset whose data lies outside its HDF5 file, or whose declared shape cannot be
    held by the file.

    External raw storage and virtual datasets are refused outright, wherever their files are,
    rather than allowed inside the dataset folder: ACT's recorder never writes them, and where
    HDF5 looks for their files depends on more than the file (HDF5_EXTFILE_PREFIX and
    HDF5_VDS_PREFIX, the working directory, printf-style source names), so a rule confining them
    would be easy to get wrong."""
    where = f"{path}: {key}"
    if dataset.external:
        name = dataset.external[0][0]
        name = name.decode(errors="replace") if isinstance(name, bytes) else str(name)
        raise InputError(
            f"{where}: the data lies in an external raw file {name!r:.80}; only data stored in the "
            f"HDF5 file itself is read (external storage is refused, wherever it points)"
        )
    if dataset.is_virtual:
        sources = dataset.virtual_sources()
        name = str(sources[0].file_name) if sources else "?"
        raise InputError(
            f"{where}: a virtual dataset mapping file {name!r:.80}; only data stored in the HDF5 "
            f"file itself is read (virtual datasets are refused, wherever they point)"
        )
    declared = math.prod(dataset.shape) * dataset.dtype.itemsize
    limit = MAX_EXPANSION * max(file_size, MIN_FILE_BYTES)
    if declared > limit:
        raise InputError(
            f"{where}: declares shape {tuple(dataset.shape)} {dataset.dtype} ({declared:,} bytes), more than "
            f"the limit of {limit:,} bytes ({MAX_EXPANSION}x the file's {file_size:,} bytes): the file "
            f"is corrupt or crafted"
        )


class Hdf5Frames(FrameSequence):
    """One camera of one ACT episode, a frame read per access."""

    def __init__(self, path: str, key: str, shape: tuple[int, ...]):
        super().__init__(shape, f"{path}: {key}")
        self.path, self.key = path, key

    def read(self, t: int) -> np.ndarray:
        try:
            return np.asarray(_files.get(self.path, lambda p: _h5py().File(p, "r"))[self.key][t])
        except (OSError, KeyError) as error:
            raise InputError(
                f"{self.where}: cannot read frame {t} (missing, truncated or corrupt file): {error}"
            ) from error


@dataclass
class ActHdf5Config(RobotDataConfig):
    # Task text of every episode (ACT's files carry none); None: a file attribute `instruction`
    # if present, else no text.
    instruction: str | None = None


@register_dataset("act_hdf5")
class ActHdf5Source(EpisodeSource):
    """ACT's HDF5 episode folders as action-chunk samples."""

    Config = ActHdf5Config
    instruction_hint = " (ACT files carry none: set `instruction` in the dataset config)"

    def __init__(self, config: ActHdf5Config):
        self.sim: bool | None = None
        super().__init__(config)

    @classmethod
    def dataset_features(cls, config: ActHdf5Config) -> tuple[str, dict[str, dict[str, Any]]]:
        """The features of the folder's first episode file (every file has the same)."""
        h5py = _h5py()
        path = str(episode_files(config.path)[0][1])
        features: dict[str, dict[str, Any]] = {}

        def collect(name: str, item: Any) -> None:
            feature = feature_name(name)
            if isinstance(item, h5py.Dataset) and feature is not None and item.ndim > 0:
                image = ("/" + name).startswith(_IMAGES) and item.ndim == 4 and item.dtype == np.uint8
                shape = list(item.shape[1:]) or [1]  # a (T,) dataset is read as (T, 1)
                features.setdefault(feature, {"dtype": "image" if image else item.dtype.name, "shape": shape})

        try:
            with h5py.File(path, "r") as root:
                root.visititems(collect)
        except OSError as error:
            raise InputError(
                f"{path}: cannot read HDF5 file (missing, truncated or corrupt): {error}"
            ) from error
        return path, features

    def read_episodes(self) -> list[Episode]:
        files = episode_files(self.config.path)
        needed = list(dict.fromkeys(self.config.features.values()))
        episodes, sims = [], set()
        for index, path in files:
            episode, sim = read_act_episode(path, index, needed)
            if self.config.instruction is not None:
                episode.instruction = self.config.instruction
            episodes.append(episode)
            sims.add(sim)
        self.sim = sims.pop() if len(sims) == 1 else None
        return episodes


def episode_files(folder: str | Path) -> list[tuple[int, Path]]:
    """(index, path) of the folder's episode_<i>.hdf5 files, by index; at least one."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: ACT dataset folder does not exist")
    files = sorted(
        (int(m.group(1)), folder / name) for name in os.listdir(folder) if (m := EPISODE_FILE.match(name))
    )
    if not files:
        raise InputError(f"{folder}: no episode_<i>.hdf5 files in the folder")
    return files


def read_act_episode(path: str | Path, index: int, needed: Sequence[str]) -> tuple[Episode, bool | None]:
    """Read one ACT file: numeric features fully, image features as lazy frames."""
    h5py = _h5py()
    path = str(path)
    data: dict[str, Any] = {}
    try:
        file_size = os.path.getsize(path)
        with h5py.File(path, "r") as root:
            available: dict[str, str] = {}

            def collect(name: str, item: Any) -> None:
                if isinstance(item, h5py.Dataset) and (feature := feature_name(name)) is not None:
                    available.setdefault(feature, "/" + name)

            root.visititems(collect)
            missing = [f for f in needed if f not in available]
            if missing:
                raise missing_features_error(path, missing, list(available))
            sim = bool(root.attrs["sim"]) if "sim" in root.attrs else None
            instruction = root.attrs.get("instruction")
            if isinstance(instruction, bytes):
                instruction = instruction.decode()
            for feature in needed:
                key = available[feature]
                dataset = root[key]
                check_storage(path, key, dataset, file_size)
                if key.startswith(_IMAGES):
                    if dataset.ndim == 2 and root.attrs.get("compress", False):
                        raise InputError(
                            f"{path}: {key}: JPEG-compressed images (attribute compress) are not supported"
                        )
                    if dataset.ndim != 4 or dataset.shape[-1] != 3 or dataset.dtype != np.uint8:
                        raise InputError(
                            f"{path}: {key}: expected (T, H, W, 3) uint8 images, got {dataset.dtype} {dataset.shape}"
                        )
                    data[feature] = Hdf5Frames(path, key, dataset.shape)
                else:
                    if dataset.ndim == 0:
                        raise InputError(f"{path}: {key}: expected a time axis, got a scalar")
                    try:
                        value = dataset[()]
                    except (OSError, TypeError) as error:
                        raise InputError(
                            f"{path}: {key}: cannot read the dataset (truncated or corrupt file): {error}"
                        ) from error
                    data[feature] = value.reshape(len(value), -1) if value.ndim == 1 else value
    except OSError as error:
        raise InputError(f"{path}: cannot read HDF5 file (missing, truncated or corrupt): {error}") from error
    if instruction is not None and not isinstance(instruction, str):
        instruction = str(instruction)
    return Episode(data=data, instruction=instruction, index=index, source=path), sim


def write_act_hdf5(
    folder: str | Path,
    episodes: Sequence[Episode | Mapping[str, Any]],
    sim: bool = True,
) -> Path:
    """Write episodes in ACT's layout, `episode_<i>.hdf5` for i = 0, 1, ... (replacing `folder`
    atomically). Each episode: feature name -> (T, ...) array, plus an optional task text (stored
    as the file attribute `instruction`)."""
    h5py = _h5py()
    prepared = [episode_to_write(e, i) for i, e in enumerate(episodes)]
    if not prepared:
        raise InputError("write_act_hdf5: no episodes to write")
    folder = Path(folder)
    with atomic_directory(folder) as temporary:
        for i, (arrays, task) in enumerate(prepared):
            with h5py.File(temporary / f"episode_{i}.hdf5", "w") as root:
                root.attrs["sim"] = bool(sim)
                if task is not None:
                    root.attrs["instruction"] = task
                for feature, value in arrays.items():
                    key = dataset_path(feature)
                    if key.startswith(_IMAGES):
                        if value.dtype != np.uint8 or value.ndim != 4 or value.shape[-1] != 3:
                            raise InputError(
                                f"episode {i}: {feature}: expected (T, H, W, 3) uint8 images, got {value.dtype} {value.shape}"
                            )
                        root.create_dataset(key, data=value, chunks=(1,) + value.shape[1:])
                    else:
                        root.create_dataset(key, data=value)
    return folder
