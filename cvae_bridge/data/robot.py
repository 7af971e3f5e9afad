"""Robot episodes as ACT-style action-chunk samples (Zhao et al. 2023), whatever the file format.

Every format reader (`act_hdf5.py`: ACT's `episode_<i>.hdf5` folders; `lerobot/`: LeRobotDataset
v3.0) turns its files into the same in-memory form, a list of `Episode`s: per episode a dict
feature name -> array over time (first axis = frame), plus the instruction text if any. Feature
names follow LeRobot: `observation.state`, `observation.velocity`, `observation.environment_state`,
`observation.images.<camera>`, `action`. Numeric features are numpy arrays, read when the source is
built; camera streams are `FrameSequence`s that read (decode) one frame when indexed, so that a
dataset with images still loads in a fraction of a second and stays small in memory.

Everything that is not file reading lives here: the shared config fields, the checks (lengths,
NaN / inf, missing features), the split of episodes into train / val, the normalisation
statistics, and `ActionChunks`, the dataset split whose sample at frame t of an episode is

    {<modality>: the observation at t, float32 (images (3, H, W) in [0, 1]),
     <action modality>: actions t .. t+k-1, (k, d) float32, zeros past the episode end,
     <action modality>_mask: (k,) bool, True where the step lies inside the episode,
     <instruction_key>: the task text}.

Features whose name is `action` or starts with `action.` are chunked; all others are taken at t.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from ..config import DatasetConfig, FractionBelowOne, NonNegativeInt, PositiveInt, Seed
from ..errors import ConfigError, InputError
from ..utils.pixels import frame_tensor
from .base import DataSource, PairedDataset, Sample, Split
from .frames import FrameSequence

SPLITS = ("train", "val")


# ---------------------------------------------------------------------------------------------
# The common in-memory form.


FeatureArray = np.ndarray | FrameSequence


@dataclass
class Episode:
    """One episode: feature name -> values over time (first axis = frame), plus its task text.

    `frame_instructions` is set only where the task changes within the episode (LeRobot stores a
    task per frame): then it holds the text of every frame and `instruction` that of frame 0.
    """

    data: dict[str, Any]
    instruction: str | None = None
    index: int = 0
    source: str = ""
    frame_instructions: np.ndarray | None = None

    def __len__(self) -> int:
        return len(next(iter(self.data.values()))) if self.data else 0

    def instruction_at(self, t: int) -> str | None:
        if self.frame_instructions is not None:
            return str(self.frame_instructions[t])
        return self.instruction

    @property
    def where(self) -> str:
        return f"{self.source}: episode {self.index}" if self.source else f"episode {self.index}"


def is_action_feature(name: str) -> bool:
    """Features sampled as chunks of k future steps (with a padding mask)."""
    return name == "action" or name.startswith("action.")


def is_image(value: Any) -> bool:
    return isinstance(value, FrameSequence) or (
        isinstance(value, np.ndarray) and value.dtype == np.uint8 and value.ndim == 4 and value.shape[-1] == 3
    )


def missing_features_error(where: str, missing: Sequence[str], available: Sequence[str]) -> InputError:
    return InputError(
        f"{where}: feature(s) {sorted(missing)} named in `features` are not in the dataset; "
        f"available features: {sorted(available)}"
    )


def check_episode(episode: Episode, names: Sequence[str]) -> None:
    """Equal lengths over the named features, at least one frame, finite numeric values."""
    lengths = {name: len(episode.data[name]) for name in names}
    if len(set(lengths.values())) > 1:
        raise InputError(f"{episode.where}: features have different numbers of frames: {lengths}")
    if lengths and next(iter(lengths.values())) == 0:
        raise InputError(f"{episode.where}: the episode has no frames")
    if episode.frame_instructions is not None and len(episode.frame_instructions) != len(episode):
        raise InputError(
            f"{episode.where}: {len(episode.frame_instructions)} task entries for {len(episode)} frames"
        )
    for name in names:
        value = episode.data[name]
        if isinstance(value, FrameSequence):
            continue
        if not (np.issubdtype(value.dtype, np.number) or value.dtype == np.bool_):
            raise InputError(f"{episode.where}: feature {name!r} has non-numeric dtype {value.dtype}")
        if np.issubdtype(value.dtype, np.inexact):
            bad = ~np.isfinite(value.reshape(len(value), -1)).all(axis=1)
            if bad.any():
                frames = np.flatnonzero(bad)
                shown = ", ".join(map(str, frames[:5])) + (", ..." if len(frames) > 5 else "")
                raise InputError(
                    f"{episode.where}: feature {name!r} has NaN or infinite values at "
                    f"{len(frames)} frame(s): {shown}"
                )
            if value.dtype.itemsize > 4 and value.size:
                # Samples are float32: a float64 beyond its range would become inf there and fail
                # deep in training; refuse it here, before anything is written.
                limit = float(np.finfo(np.float32).max)
                bad = (np.abs(value.reshape(len(value), -1)) > limit).any(axis=1)
                if bad.any():
                    frames = np.flatnonzero(bad)
                    shown = ", ".join(map(str, frames[:5])) + (", ..." if len(frames) > 5 else "")
                    largest = float(np.abs(value).max())
                    raise InputError(
                        f"{episode.where}: feature {name!r} has values beyond float32's range "
                        f"(|x| <= {limit:.4g}; largest {largest:.4g}) at {len(frames)} frame(s): {shown}"
                    )


# ---------------------------------------------------------------------------------------------
# Config.


@dataclass
class RobotDataConfig(DatasetConfig):
    """Fields shared by the robot-episode sources."""

    # The dataset folder (ACT: the folder of episode_<i>.hdf5 files; LeRobot: the dataset root).
    path: str = ""
    # Model modality name -> feature name (LeRobot naming, e.g. "observation.images.top").
    features: dict[str, str] = field(
        default_factory=lambda: {"qpos": "observation.state", "action": "action"}
    )
    # Sample key under which the task text is given; None: no text in samples.
    instruction_key: str | None = None
    # k: actions per sample (t .. t+k-1).
    chunk_size: PositiveInt = 100
    # [H, W] to resize every image to (bilinear, antialiased); None keeps the stored size.
    image_size: list[PositiveInt] | None = None
    # Validation episodes: an explicit list of episode indices, or else this fraction of the
    # episodes, drawn with `seed`.
    val_fraction: FractionBelowOne = 0.1
    val_episodes: list[NonNegativeInt] | None = None  # explicit validation episodes (else the fraction)
    seed: Seed = 0  # draws the validation episodes

    def __post_init__(self) -> None:
        if not self.path:
            raise ConfigError("path: give the dataset folder")
        if not self.features:
            raise ConfigError("features: map at least one model modality name to a feature name")
        for name, feature in self.features.items():
            if not name or not isinstance(feature, str) or not feature:
                raise ConfigError(f"features: {name!r} -> {feature!r}: names must be non-empty strings")
        masks = {f"{n}_mask" for n, f in self.features.items() if is_action_feature(f)}
        reserved = set(self.features) | masks
        clash = sorted(set(self.features) & masks)
        if clash:
            raise ConfigError(f"features: modality names {clash} clash with padding-mask keys")
        if self.instruction_key is not None and (
            not self.instruction_key or self.instruction_key in reserved
        ):
            raise ConfigError(
                f"instruction_key: {self.instruction_key!r} is empty or already used by a feature or mask; "
                f"used: {sorted(reserved)}"
            )
        if self.chunk_size < 1:
            raise ConfigError(f"chunk_size: expected at least 1, got {self.chunk_size}")
        if self.image_size is not None and (len(self.image_size) != 2 or min(self.image_size) < 1):
            raise ConfigError(
                f"image_size: expected [height, width] of positive integers, got {self.image_size}"
            )
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction: expected a number in [0, 1), got {self.val_fraction}")
        if self.val_episodes is not None:
            if any(i < 0 for i in self.val_episodes) or len(set(self.val_episodes)) != len(self.val_episodes):
                raise ConfigError(
                    f"val_episodes: expected distinct non-negative episode indices, got {self.val_episodes}"
                )


def assign_episodes(
    indices: Sequence[int], val_fraction: float, val_episodes: Sequence[int] | None, seed: int
) -> tuple[list[int], list[int]]:
    """Split episode indices into (train, val), whole episodes only, deterministic in `seed`."""
    indices = sorted(int(i) for i in indices)
    if val_episodes is not None:
        unknown = sorted(set(val_episodes) - set(indices))
        if unknown:
            raise InputError(f"val_episodes: episode(s) {unknown} do not exist; episodes: {_ranges(indices)}")
        val = sorted(set(val_episodes))
    else:
        n_val = int(round(val_fraction * len(indices)))
        if val_fraction > 0 and len(indices) > 1:
            n_val = min(max(n_val, 1), len(indices) - 1)
        order = np.random.default_rng(seed).permutation(len(indices))
        val = sorted(indices[i] for i in order[:n_val])
    val_set = set(val)
    train = [i for i in indices if i not in val_set]
    if not train:
        raise InputError(f"no training episodes left: all {len(indices)} episode(s) are validation episodes")
    return train, val


def _ranges(indices: Sequence[int]) -> str:
    if not indices:
        return "none"
    parts, start, prev = [], indices[0], indices[0]
    for i in list(indices[1:]) + [None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if i is not None:
            start = prev = i
    return ", ".join(parts)


# ---------------------------------------------------------------------------------------------
# The split dataset.


class ActionChunks(PairedDataset):
    """Every frame t of every episode is a sample: the observations at t, the actions t .. t+k-1
    (zero-padded past the episode end, with a mask), and the task text."""

    def __init__(
        self,
        episodes: Sequence[Episode],
        features: Mapping[str, str],
        chunk_size: int,
        instruction_key: str | None = None,
        image_size: Sequence[int] | None = None,
        seed: int = 0,
        check: bool = True,
    ):
        super().__init__(seed)
        self.episodes = list(episodes)
        self.features = dict(features)
        self.chunk_size = int(chunk_size)
        self.instruction_key = instruction_key
        self.image_size = tuple(image_size) if image_size is not None else None
        for episode in self.episodes if check else ():
            missing = [f for f in self.features.values() if f not in episode.data]
            if missing:
                raise missing_features_error(episode.where, missing, list(episode.data))
            check_episode(episode, list(dict.fromkeys(self.features.values())))
            if (
                instruction_key is not None
                and episode.instruction is None
                and episode.frame_instructions is None
            ):
                raise InputError(
                    f"{episode.where}: instruction_key is {instruction_key!r} but the episode has no task text"
                )
        lengths = np.array([len(e) for e in self.episodes], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(lengths)])

    def __len__(self) -> int:
        return int(self.starts[-1])

    @property
    def episode_indices(self) -> list[int]:
        return [e.index for e in self.episodes]

    def locate(self, index: int) -> tuple[Episode, int]:
        """The episode and frame of sample `index`."""
        position = int(np.searchsorted(self.starts, index, side="right")) - 1
        return self.episodes[position], int(index - self.starts[position])

    def sample(self, index: int, rng: np.random.Generator) -> Sample:
        episode, t = self.locate(index)
        k = self.chunk_size
        out: Sample = {}
        for name, feature in self.features.items():
            value = episode.data[feature]
            if is_action_feature(feature) and not is_image(value):
                steps = value[t : t + k]
                chunk = np.zeros((k,) + value.shape[1:], dtype=np.float32)
                chunk[: len(steps)] = steps
                mask = np.zeros(k, dtype=bool)
                mask[: len(steps)] = True
                out[name] = torch.from_numpy(chunk)
                out[f"{name}_mask"] = torch.from_numpy(mask)
            elif is_image(value):
                out[name] = frame_tensor(value[t], self.image_size)
            else:
                out[name] = torch.from_numpy(np.asarray(value[t], dtype=np.float32).copy())
        if self.instruction_key is not None:
            out[self.instruction_key] = episode.instruction_at(t)
        return out


# ---------------------------------------------------------------------------------------------
# The shared source.


class EpisodeSource(DataSource):
    """Base of the robot-episode sources: subclasses implement `read_episodes()`."""

    Config: ClassVar[type[RobotDataConfig]] = RobotDataConfig
    # Appended to the "no task text" error: where this format keeps task texts.
    instruction_hint: ClassVar[str] = ""

    def __init__(self, config: RobotDataConfig):
        super().__init__(config)
        self.config: RobotDataConfig = config
        episodes = self.read_episodes()
        if not episodes:
            raise InputError(f"{config.path}: the dataset has no episodes")
        names = list(dict.fromkeys(config.features.values()))
        seen: set[int] = set()
        for episode in episodes:
            if episode.index in seen:
                raise InputError(f"{episode.where}: episode index {episode.index} appears twice")
            seen.add(episode.index)
            check_episode(episode, names)
            if (
                config.instruction_key is not None
                and episode.instruction is None
                and episode.frame_instructions is None
            ):
                raise InputError(
                    f"{episode.where}: instruction_key is {config.instruction_key!r} but the episode has no "
                    f"task text{self.instruction_hint}"
                )
        self.episodes = sorted(episodes, key=lambda e: e.index)
        self.train_episodes, self.val_episodes = assign_episodes(
            [e.index for e in self.episodes], config.val_fraction, config.val_episodes, config.seed
        )
        self._splits: dict[str, ActionChunks] = {}
        self._statistics: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def read_episodes(self) -> list[Episode]:
        """Read the files into `Episode`s holding (at least) the features named in the config."""
        raise NotImplementedError

    @classmethod
    def dataset_features(cls, config: RobotDataConfig) -> tuple[str, dict[str, dict[str, Any]]]:
        """(where, feature name -> {"dtype", "shape"} per frame) of every feature of the dataset,
        from its metadata alone, whatever `config.features` names: what the unset sizes and
        cameras of a run config are filled from (data/resolve.py). Images are dtype "image" with
        shape [H, W, 3]; `where` names the file described."""
        raise NotImplementedError

    def episodes_of(self, name: str) -> list[Episode]:
        chosen = set(self.train_episodes if name == "train" else self.val_episodes)
        return [e for e in self.episodes if e.index in chosen]

    def split(self, name: Split) -> ActionChunks:
        if name not in SPLITS:
            raise ConfigError(
                f"{type(self).__name__} has no split {name!r}; valid splits: {list(SPLITS)} "
                f"(episodes are split into train and val by `val_fraction` or `val_episodes`)"
            )
        if name not in self._splits:
            c = self.config
            self._splits[name] = ActionChunks(
                self.episodes_of(name),
                c.features,
                c.chunk_size,
                c.instruction_key,
                c.image_size,
                c.seed,
                check=False,  # done when the source was built
            )
        return self._splits[name]

    def statistics(self, names: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per-feature (mean, std) over every frame of the training episodes (population std, no
        clipping), float32, of the named modalities; images have none."""
        out = {}
        train = self.episodes_of("train")
        for name in names:
            if name not in self.config.features:
                raise ConfigError(
                    f"statistics: {name!r} is not a modality of this dataset; modalities: {sorted(self.config.features)}"
                )
            feature = self.config.features[name]
            if name not in self._statistics:
                if any(is_image(e.data[feature]) for e in train):
                    raise InputError(
                        f"statistics: {name!r} ({feature}) is an image feature; statistics cover vector features only"
                    )
                values = np.concatenate([np.asarray(e.data[feature], dtype=np.float64) for e in train])
                self._statistics[name] = (
                    values.mean(axis=0).astype(np.float32),
                    values.std(axis=0).astype(np.float32),
                )
            mean, std = self._statistics[name]
            out[name] = (mean.copy(), std.copy())
        return out


# ---------------------------------------------------------------------------------------------
# Episodes to write: Episode objects or plain mappings.

_TASK_KEYS = ("task", "instruction")


def episode_to_write(
    item: Episode | Mapping[str, Any], position: int
) -> tuple[dict[str, np.ndarray], str | None]:
    """(feature arrays, task) of an episode handed to a writer, checked for equal lengths."""
    if isinstance(item, Episode):
        data, task = dict(item.data), item.instruction
    elif isinstance(item, Mapping):
        data = {k: v for k, v in item.items() if k not in _TASK_KEYS}
        tasks = [item[k] for k in _TASK_KEYS if k in item and item[k] is not None]
        task = tasks[0] if tasks else None
    else:
        raise InputError(
            f"episode {position}: expected an Episode or a mapping feature -> array, got {type(item).__name__}"
        )
    if task is not None and not isinstance(task, str):
        raise InputError(f"episode {position}: the task must be a string, got {type(task).__name__}")
    arrays = {}
    for name, value in data.items():
        if isinstance(value, FrameSequence):
            value = np.stack([value[t] for t in range(len(value))])
        value = np.asarray(value)
        if value.ndim == 0:
            raise InputError(f"episode {position}: feature {name!r} must have a time axis, got a scalar")
        arrays[name] = value
    if not arrays:
        raise InputError(f"episode {position}: no features to write")
    lengths = {name: len(v) for name, v in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise InputError(f"episode {position}: features have different numbers of frames: {lengths}")
    if next(iter(lengths.values())) == 0:
        raise InputError(f"episode {position}: the episode has no frames")
    return arrays, task
