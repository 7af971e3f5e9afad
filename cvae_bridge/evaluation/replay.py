"""Replay: a trained policy on the recorded observations of a dataset's episodes, scored by the L1
error between its actions and the recorded ones (`cvae-bridge replay`)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from tqdm.auto import tqdm

from ..config import DatasetConfig, NonNegativeFloat, NonNegativeInt, PositiveInt, from_dict
from ..data import build_source
from ..data.lerobot.meta import dataset_root
from ..data.robot import EpisodeSource, RobotDataConfig
from ..errors import CheckpointError, ConfigError, InputError
from ..hub import read_run_config
from ..pipelines.policy import ActionChunkPolicy
from ..registry import DATASETS
from ..utils.files import atomic_write_text


def dataset_type(path: str | Path) -> str:
    """ "lerobot" or "act_hdf5", from the folder's layout (a LeRobot repo id: its folder under
    LeRobot's home)."""
    folder = Path(path) if Path(path).exists() else dataset_root(path)
    if (folder / "meta" / "info.json").is_file():
        return "lerobot"
    if folder.is_dir() and any(folder.glob("episode_*.hdf5")):
        return "act_hdf5"
    raise InputError(
        f"{folder}: neither a LeRobot dataset (meta/info.json) nor an ACT folder (episode_<i>.hdf5)"
    )


@dataclass
class ReplayConfig:
    """What `cvae-bridge replay` runs: a policy on the recorded observations of a dataset."""

    model: str  # a model folder written by training
    data: str  # a LeRobot (meta/info.json) or ACT HDF5 (episode_<i>.hdf5) folder
    episodes: list[NonNegativeInt] | None = None  # episode indices; None: all
    query_period: PositiveInt | None = None  # re-plan every n steps (default: the chunk, 1 with ensembling)
    temporal_ensemble: NonNegativeFloat | None = None  # ACT's m, e.g. 0.01; None: no ensembling
    out: str | None = None  # the JSON report (default: replay.json beside the model folder)
    device: str = "auto"  # the GPU where there is one
    # the policy network's precision: bfloat16 pays where the device has bf16 arithmetic (a GPU)
    dtype: Literal["float32", "bfloat16"] = "float32"
    progress_bar: bool = True  # frames replayed and the episode at hand, on stderr


def replay_episodes(config: ReplayConfig) -> dict[str, Any]:
    """Run the policy on the recorded observations of the dataset's episodes, read with the
    features, image size and instruction key of the model's training run; write the report to
    `out` and return it: {"episodes": [{"episode", "frames", "l1"}], "l1", "frames", ...}. The L1
    error is |predicted - recorded| averaged over action dimensions and frames, in the recorded
    actions' units; the overall figure averages over all frames of all episodes.
    """
    model_dir, episodes = config.model, config.episodes
    policy = ActionChunkPolicy.from_pretrained(
        model_dir, config.device, config.query_period, config.temporal_ensemble, dtype=config.dtype
    )
    data = _replay_config(_trained_on(model_dir), config.data)
    source = build_source(data)
    if not isinstance(source, EpisodeSource):
        raise ConfigError(f"data.type: {data.type!r} does not hold robot episodes")
    action_key = source.config.features.get(policy.action_key)
    if action_key is None:
        raise ConfigError(f"data.features: no feature for the model's action target {policy.action_key!r}")
    available = {e.index: e for e in source.episodes}
    chosen = sorted(available) if episodes is None else list(episodes)
    unknown = sorted(set(chosen) - set(available))
    if unknown:
        raise InputError(f"episodes: {unknown} are not in {data.path}; episodes: {sorted(available)}")

    rows = []
    bar = tqdm(
        total=sum(len(available[i]) for i in chosen),
        desc="replay",
        unit="frame",
        disable=not config.progress_bar,
    )
    for index in chosen:
        episode = available[index]
        policy.reset()
        errors = []
        bar.set_postfix(episode=index)
        for t in range(len(episode)):
            observation = {key: episode.data[key][t] for key in policy.observation_keys}
            action = policy.select_action(
                observation, episode.instruction_at(t) if policy.instruction_key else None
            )
            errors.append(float(np.abs(action - episode.data[action_key][t]).mean()))
            bar.update()
        rows.append({"episode": index, "frames": len(errors), "l1": float(np.mean(errors))})
    bar.close()
    frames = sum(r["frames"] for r in rows)
    report = {
        "model": str(model_dir),
        "data": str(data.path),
        "query_period": policy.query_period,
        "temporal_ensemble": policy.temporal_ensemble,
        "episodes": rows,
        "frames": frames,
        "l1": sum(r["l1"] * r["frames"] for r in rows) / max(frames, 1),
    }
    out = Path(config.out or Path(model_dir).parent / "replay.json")
    atomic_write_text(out, json.dumps(report, indent=2))
    return report


def _replay_config(trained: RobotDataConfig, path: str | Path) -> DatasetConfig:
    """The training run's data settings (those the folder's format has) for another folder."""
    kind = dataset_type(path)
    fields = {f.name for f in dataclasses.fields(DATASETS.get(kind).Config) if f.init}
    settings = {k: v for k, v in dataclasses.asdict(trained).items() if k in fields}
    # Every episode is replayed: the training run's validation split means nothing here.
    settings.update(type=kind, path=str(path), val_fraction=0.0, val_episodes=None)
    return from_dict(DatasetConfig, settings)


def _trained_on(model_dir: str | Path) -> RobotDataConfig:
    data = read_run_config(model_dir).data
    if not isinstance(data, RobotDataConfig):
        raise CheckpointError(f"{model_dir}: the model was trained on {data.type!r} data, not robot episodes")
    return data
