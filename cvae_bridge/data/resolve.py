"""A run config completed from its robot dataset, as LeRobot's ACT takes its input and output
features from the dataset: what the config leaves unset comes from the dataset's own description
(LeRobot's meta/info.json, the dataset shapes of ACT's HDF5 files).

    config, notes = resolve_run_config(config)  # the trainer does this before building anything

- Sizes: a size field left unset (None; config.SIZE_FIELDS: a vector's `shape`, an action chunk's
  `dim`) takes the per-frame shape of its modality's feature. A size that is set must equal it:
  otherwise a ConfigError names both.
- Cameras: an image condition that `data.features` does not map takes the dataset's camera of its
  own name (`observation.images.<name>`), else the one camera no other condition takes; where
  that leaves a choice, the error lists the cameras and the override that picks one.

`notes` say what was filled in, one line each ("model.conditions.qpos.shape=[6] (observation.state
in data/so101/meta/info.json)"). Data sources other than robot episodes are left as they are.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from typing import Any

from ..config import RunConfig, brief_repr, size_fields
from ..errors import ConfigError
from ..registry import DATASETS, ENCODERS
from .robot import EpisodeSource

CAMERA_PREFIX = "observation.images."


def resolve_run_config(
    config: RunConfig, features: Mapping[str, Mapping[str, Any]] | None = None, where: str = "the dataset"
) -> tuple[RunConfig, list[str]]:
    """`config` with its unset sizes and cameras filled from the dataset (see the module
    docstring), and notes saying what was filled. `features` (name -> {"dtype", "shape"}) stands
    for the dataset's description, read from `config.data` when None."""
    if features is None:
        source = DATASETS.get(config.data.type)
        if not issubclass(source, EpisodeSource):
            return config, []
        where, features = source.dataset_features(config.data)
    config = copy.deepcopy(config)
    mapping = dict(config.data.features)
    notes = _map_cameras(config, mapping, features, where)
    if mapping != config.data.features:
        config.data = dataclasses.replace(config.data, features=mapping)
    errors = []
    for modality, path, component, field in size_fields(config.model):
        feature = mapping.get(modality)
        spec = features.get(feature) if feature is not None else None
        if spec is None or spec["dtype"] == "image":
            continue  # not in the data: the source names what is missing
        shape = [int(s) for s in spec["shape"]]
        if field == "dim" and len(shape) != 1:
            errors.append(f"{path}: {feature} in {where} has shape {shape}, not one vector per frame")
            continue
        expected = shape[0] if field == "dim" else shape
        value = getattr(component, field)
        if value is None:
            setattr(component, field, expected)
            notes.append(f"{path}={expected} ({feature} in {where})")
        elif value != expected:
            errors.append(f"{path} is {brief_repr(value)}, but {feature} in {where} has shape {shape}")
    if errors:
        raise ConfigError(
            "; ".join(errors)
            + "; leave such a size unset (remove it, or --set <key>=null) to take the data's"
        )
    return config, notes


def _map_cameras(
    config: RunConfig, mapping: dict[str, str], features: Mapping[str, Mapping[str, Any]], where: str
) -> list[str]:
    """Map the image conditions without a feature to the dataset's cameras, in `mapping`; notes."""
    unmapped = [
        name
        for name, condition in config.model.conditions.items()
        if name not in mapping and ENCODERS.get(condition.type).input_kind == "image"
    ]
    if not unmapped:
        return []
    cameras = [
        name for name, spec in features.items() if spec["dtype"] == "image" and name.startswith(CAMERA_PREFIX)
    ]
    free = [camera for camera in cameras if camera not in mapping.values()]
    chosen = {name: CAMERA_PREFIX + name for name in unmapped if CAMERA_PREFIX + name in free}
    left = [name for name in unmapped if name not in chosen]
    free = [camera for camera in free if camera not in chosen.values()]
    if len(left) == 1 and len(free) == 1:
        chosen[left[0]] = free[0]
    elif left:
        hint = f"--set data.features.{left[0]}={(free or cameras or [CAMERA_PREFIX + '<camera>'])[0]}"
        raise ConfigError(
            f"data.features: image condition(s) {left} map to no feature, and {where} has "
            + (
                f"the cameras {free} to choose from"
                if free
                else f"no camera left for them (cameras: {cameras})"
            )
            + f"; map each to its camera, e.g. {hint}"
        )
    mapping.update(chosen)
    return [f"data.features.{name}={camera} (the camera in {where})" for name, camera in chosen.items()]
