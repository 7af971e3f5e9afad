"""Saved models keep loading and keep giving the same outputs.

Each folder in tests/artifacts/ holds a tiny saved model per family (text-to-image, action chunk,
unconditional VAE) and `outputs.safetensors`: its inputs and what it gave for them at fixed seeds
(loss parts, samples, the policy's actions). A change that moves code around must leave them all
passing unchanged.

When a change is meant to alter saved models or outputs (a new default, a fixed bug in a loss):
run `python tests/artifacts/generate.py [family ...]`, commit the new files with a message that
says why, and, if the saved format changed, keep the previous folder as `legacy_<what>/` with a
test here that it still loads. `legacy_*` folders are never regenerated.
"""

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch
from artifacts.generate import FAMILIES, model_batch, outputs
from safetensors.torch import load_file

from cvae_bridge import ConditionalVAE, to_dict
from cvae_bridge.hub import FORMAT_VERSION, read_config, read_run_config

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


def saved_inputs(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    stored = load_file(str(folder / "outputs.safetensors"))
    inputs = {k.removeprefix("input."): v for k, v in stored.items() if k.startswith("input.")}
    return inputs, {k: v for k, v in stored.items() if not k.startswith("input.")}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_saved_model_gives_saved_outputs(family):
    folder = ARTIFACTS / family
    inputs, expected = saved_inputs(folder)
    actual = outputs(family, folder / "model", inputs)
    assert sorted(actual) == sorted(expected)
    for key, value in expected.items():
        torch.testing.assert_close(actual[key], value, rtol=1e-4, atol=1e-5, msg=f"{family}: {key} changed")


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_saved_config_round_trips(family):
    """The config rebuilt from the folder is the one saved there, defaults included."""
    folder = ARTIFACTS / family / "model"
    assert to_dict(ConditionalVAE.from_pretrained(folder).config) == read_config(folder)["model"]


def test_saved_model_with_sharpening_inside_it_still_loads():
    """A format-1 folder whose image target carries the perceptual/adversarial settings and the
    discriminator's weights: it loads, and its likelihood terms are unchanged."""
    folder = ARTIFACTS / "legacy_sharpen"
    inputs, expected = saved_inputs(folder)
    model = ConditionalVAE.from_pretrained(folder / "model")
    torch.manual_seed(1)
    with torch.no_grad():
        actual = model(model_batch("legacy_sharpen", inputs))
    for key in ("rec_image", "kl", "nelbo"):
        torch.testing.assert_close(actual[key], expected[f"loss.{key}"], rtol=1e-4, atol=1e-5)


def test_format_1_sharpening_and_run_config_are_read(tmp_path):
    """What a format-1 training run saved: the sharpening settings in both model configs and the run
    config as extra.run. After the upgrade none is left in the model, the enabled ones are in the
    run config's train.sharpen, read_run_config reads extra.run; the file is not changed."""
    folder = tmp_path / "model"
    shutil.copytree(ARTIFACTS / "legacy_sharpen" / "model", folder)
    written = json.loads((folder / "config.json").read_text())
    run = {"model": copy.deepcopy(written["model"]), "data": {"type": "digits"}, "train": {"steps": 3}}
    written["extra"] = {"run": run}
    (folder / "config.json").write_text(json.dumps(written))

    config = read_config(folder)
    assert config["format_version"] == FORMAT_VERSION
    assert "sharpen" not in config["model"]["targets"]["image"]
    run_config = read_run_config(folder)
    assert run_config.train.steps == 3 and run_config.data.type == "digits"
    assert run_config.train.sharpen["image"].adversarial_weight == 0.5
    assert run_config.train.sharpen["image"].start_step == 3
    assert json.loads((folder / "config.json").read_text()) == written
    assert not any(k.startswith("sharpeners.") for k in ConditionalVAE.from_pretrained(folder).state_dict())
