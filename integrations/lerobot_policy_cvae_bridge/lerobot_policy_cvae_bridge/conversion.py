"""A cvae_bridge policy folder in LeRobot's terms, without importing lerobot.

LeRobot describes what a policy reads and writes as features, key -> (type, shape): camera images
`observation.images.<camera>` VISUAL (3, H, W), joint positions `observation.state` STATE (d,),
`observation.environment_state` ENV (d,), and the action `action` ACTION (d,); the instruction
comes as `batch["task"]`, no feature. A cvae_bridge policy folder says the same in its own names:
the run config's `data.features` maps each model condition to the observation key it was trained
on, `data.image_size` is the size the policy resizes images to, `data.instruction_key` the text
input that `task` feeds, and the model config gives the shapes.

Normalisation happens once, inside the cvae_bridge model (its training statistics are saved in
the folder): the LeRobot side passes raw states and images in [0, 1] and gets raw actions back,
so the plugin's processors have no normaliser.

This module imports only cvae_bridge (absolute imports), so tests can load it by path in an
environment without lerobot.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cvae_bridge.config import EncoderConfig, ModelConfig, from_dict
from cvae_bridge.errors import ConfigError
from cvae_bridge.hub import CONFIG_NAME, RUN_CONFIG_NAME, read_config, read_run_config, resolve_folder
from cvae_bridge.registry import DECODERS, ENCODERS

OBSERVATION = "observation."  # LeRobot passes policies the observation under keys with this prefix
ENV_STATE = "observation.environment_state"
ACTION = "action"
TASK = "task"  # where a LeRobot batch carries the instruction (a list of strings)


@dataclass(frozen=True)
class Feature:
    """LeRobot's PolicyFeature as plain data: `type` a FeatureType value, `shape` without batch axis."""

    type: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class LeRobotLayout:
    """What a cvae_bridge policy folder reads from a LeRobot batch and what it returns."""

    conditions: dict[str, str]  # LeRobot key -> model condition it feeds
    instruction: str | None  # model text input fed by batch["task"], None for a model without one
    input_features: dict[str, Feature]
    output_features: dict[str, Feature]  # {"action": ACTION (d,)}
    chunk_size: int  # k actions per prediction


def read_layout(model_path: str | Path) -> LeRobotLayout:
    """The layout of a cvae_bridge policy folder (or Hub repo id) written by `cvae-bridge train`,
    read from its config files without loading weights."""
    folder = resolve_folder(model_path)
    data = read_run_config(folder).data
    where = f"{folder / RUN_CONFIG_NAME}:data"
    if not hasattr(data, "features"):
        raise ConfigError(f"{where}: the model was trained on {data.type!r} data, not robot episodes")
    model = from_dict(ModelConfig, read_config(folder).get("model"), path=f"{folder / CONFIG_NAME}:model")

    kinds = {n: DECODERS.get(t.decoder.type).output_kind for n, t in model.targets.items()}
    if list(kinds.values()) != ["action"]:
        raise ConfigError(
            f"{folder / CONFIG_NAME}:model.targets: a policy has one action-chunk target; its targets are {kinds}"
        )
    name, target = next(iter(model.targets.items()))
    if data.features.get(name) != ACTION:
        raise ConfigError(
            f"{where}.features.{name}: LeRobot's policies output {ACTION!r}; this model's actions are "
            f"{data.features.get(name)!r}"
        )
    decoder = target.decoder  # (k, d) chunks
    outputs = {ACTION: Feature("ACTION", (decoder.dim,))}

    instruction = data.instruction_key if data.instruction_key in model.conditions else None
    conditions, inputs = {}, {}
    for name, encoder in model.conditions.items():
        if name == instruction:
            continue
        key = data.features.get(name)
        if key is None:
            raise ConfigError(
                f"{where}.features: the model input {name!r} has no observation key; features: {data.features}"
            )
        if not key.startswith(OBSERVATION):
            raise ConfigError(
                f"{where}.features.{name}: {key!r} is no LeRobot observation key (they start with {OBSERVATION!r})"
            )
        conditions[key] = name
        inputs[key] = _feature(encoder, key, data.image_size, f"{where}.features.{name}")
    return LeRobotLayout(conditions, instruction, inputs, outputs, decoder.chunk_size)


def _feature(encoder: EncoderConfig, key: str, image_size: list[int] | None, where: str) -> Feature:
    kind = ENCODERS.get(encoder.type).input_kind
    if kind == "image":
        size = image_size or getattr(encoder, "size", None)
        if size is None:
            raise ConfigError(
                f"{where}: LeRobot describes images by their shape, and neither data.image_size nor the "
                f"{encoder.type!r} encoder's size gives it"
            )
        return Feature("VISUAL", (3, *size))
    if kind == "vector" and not getattr(encoder, "num_classes", 0):
        return Feature("ENV" if key == ENV_STATE else "STATE", tuple(encoder.shape))
    raise ConfigError(
        f"{where}: a {encoder.type!r} input ({kind}) has no LeRobot feature; LeRobot feeds images and state vectors"
    )


def check_features(
    layout: LeRobotLayout, input_features: dict[str, Feature], output_features: dict[str, Feature]
) -> None:
    """Raise a ConfigError naming each feature where LeRobot's description (a policy config's, or
    an environment's or dataset's action) differs from what the model folder reads and writes."""
    problems = []
    for field, given, expected in (
        ("input_features", input_features, layout.input_features),
        ("output_features", output_features, layout.output_features),
    ):
        for key in sorted(given.keys() | expected.keys()):
            if given.get(key) != expected.get(key):
                problems.append(
                    f"{field}[{key!r}]: given {_show(given.get(key))}, the model {_show(expected.get(key))}"
                )
    if problems:
        raise ConfigError("; ".join(problems))


def _show(feature: Feature | None) -> str:
    return "nothing" if feature is None else f"{feature.type} {feature.shape}"
