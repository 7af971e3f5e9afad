"""The LeRobot policy plugin's conversion logic (integrations/lerobot_policy_cvae_bridge), without
lerobot: a cvae_bridge policy folder described as LeRobot features, and those checked against the
descriptions LeRobot gives. tools/check_lerobot_policy.py runs the plugin in the real lerobot."""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY_CONFIGS, build

from cvae_bridge import RunConfig, from_dict
from cvae_bridge.errors import ConfigError
from cvae_bridge.hub import CONFIG_NAME, FORMAT_VERSION, write_run_config
from cvae_bridge.pipelines import ActionChunkPolicy

PLUGIN = Path(__file__).resolve().parents[1] / "integrations" / "lerobot_policy_cvae_bridge"
# The package's __init__ imports lerobot; its conversion module imports only cvae_bridge.
_spec = importlib.util.spec_from_file_location(
    "lerobot_conversion", PLUGIN / "lerobot_policy_cvae_bridge" / "conversion.py"
)
conversion = sys.modules["lerobot_conversion"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(conversion)
Feature = conversion.Feature

FEATURES = {"qpos": "observation.state", "camera": "observation.images.top", "action": "action"}
DATA = {
    "type": "lerobot",
    "path": "data/episodes",
    "features": FEATURES,
    "chunk_size": 5,
    "image_size": [8, 8],
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny ACT folder as `cvae-bridge train` writes it: joints + camera -> chunks of 5 x 3."""
    folder = tmp_path_factory.mktemp("act") / "model"
    build("act").save_pretrained(folder, from_dict(RunConfig, {"model": TINY_CONFIGS["act"], "data": DATA}))
    return folder


def configs_only(folder: Path, model: dict, data: dict) -> Path:
    """A model folder's config files without weights: all that read_layout reads."""
    folder.mkdir(parents=True)
    (folder / CONFIG_NAME).write_text(json.dumps({"format_version": FORMAT_VERSION, "model": model}))
    write_run_config(from_dict(RunConfig, {"model": model, "data": data}), folder)
    return folder


def test_a_policy_folder_in_lerobot_terms(trained):
    layout = conversion.read_layout(trained)
    assert layout.conditions == {"observation.state": "qpos", "observation.images.top": "camera"}
    assert layout.input_features == {
        "observation.state": Feature("STATE", (3,)),
        "observation.images.top": Feature("VISUAL", (3, 8, 8)),  # the size the policy resizes to
    }
    assert layout.output_features == {"action": Feature("ACTION", (3,))}
    assert layout.chunk_size == 5 and layout.instruction is None

    # The layout is what ActionChunkPolicy reads and returns, so a LeRobot batch built from it runs.
    policy = ActionChunkPolicy.from_pretrained(trained)
    assert sorted(policy.observation_keys) == sorted(layout.conditions)
    assert (policy.chunk_size, policy.action_dim) == (layout.chunk_size, 3)
    batch = {
        key: torch.rand(2, *f.shape) if f.type == "VISUAL" else torch.randn(2, *f.shape)
        for key, f in layout.input_features.items()
    }
    assert policy.select_action({**batch, "task": ["unused", "unused"]}).shape == (2, 3)


def model_with(**conditions) -> dict:
    model = copy.deepcopy(TINY_CONFIGS["act"])
    model["conditions"].update(conditions)
    return model


def test_environment_state_instruction_and_encoder_size(tmp_path):
    model = model_with(
        env_state={"type": "vector", "shape": [7]},
        instruction={"type": "text", "output": "pooled"},
        camera={"type": "image", "channels": 3, "widths": [8, 8], "size": [12, 16]},
    )
    data = {
        **DATA,
        "features": {**FEATURES, "env_state": "observation.environment_state"},
        "instruction_key": "instruction",
        "image_size": None,
    }
    layout = conversion.read_layout(configs_only(tmp_path / "model", model, data))
    assert layout.input_features["observation.environment_state"] == Feature("ENV", (7,))
    assert layout.input_features["observation.images.top"] == Feature("VISUAL", (3, 12, 16))
    assert layout.instruction == "instruction"  # fed by batch["task"], no LeRobot feature
    assert "instruction" not in layout.conditions.values()


@pytest.mark.parametrize(
    "model, data, message",
    [
        (
            TINY_CONFIGS["act"],
            {**DATA, "image_size": None},
            r"features\.camera: LeRobot describes images by their shape, and neither data\.image_size",
        ),
        (
            TINY_CONFIGS["act"],
            {**DATA, "features": {**FEATURES, "qpos": "joints"}},
            r"features\.qpos: 'joints' is no LeRobot observation key",
        ),
        (
            TINY_CONFIGS["act"],
            {**DATA, "features": {**FEATURES, "action": "action.joints"}},
            r"features\.action: LeRobot's policies output 'action'; this model's actions are 'action.joints'",
        ),
        (
            model_with(label={"type": "vector", "num_classes": 3}),
            {**DATA, "features": {**FEATURES, "label": "observation.label"}},
            r"features\.label: a 'vector' input \(vector\) has no LeRobot feature",
        ),
        (
            model_with(gripper={"type": "vector", "shape": [1]}),
            DATA,
            r"the model input 'gripper' has no observation key",
        ),
    ],
)
def test_what_lerobot_cannot_describe_is_named(tmp_path, model, data, message):
    with pytest.raises(ConfigError, match=message):
        conversion.read_layout(configs_only(tmp_path / "model", model, data))


def test_a_folder_that_is_no_policy_is_refused(tmp_path):
    images = {"type": "imagefolder", "root": "data/images"}
    with pytest.raises(ConfigError, match="trained on 'imagefolder' data, not robot episodes"):
        conversion.read_layout(configs_only(tmp_path / "model", TINY_CONFIGS["conv_cvae"], images))


def test_lerobot_descriptions_must_match_the_folder(trained):
    layout = conversion.read_layout(trained)
    conversion.check_features(layout, dict(layout.input_features), dict(layout.output_features))
    inputs = {**layout.input_features, "observation.images.top": Feature("VISUAL", (3, 480, 640))}
    del inputs["observation.state"]
    with pytest.raises(ConfigError) as error:
        conversion.check_features(layout, inputs, {"action": Feature("ACTION", (14,))})
    assert str(error.value) == (
        "input_features['observation.images.top']: given VISUAL (3, 480, 640), the model VISUAL (3, 8, 8); "
        "input_features['observation.state']: given nothing, the model STATE (3,); "
        "output_features['action']: given ACTION (14,), the model ACTION (3,)"
    )
