"""Perceptual and adversarial terms for image targets: training losses, not model parts.

Where their gradients go and when they count; that a model trained with them saves and loads
without the discriminator or the perceptual network; and the errors for misplaced settings.
"""

import pytest
import torch
import yaml
from safetensors.torch import load_file
from test_training import MODEL, run_config

from cvae_bridge import ConditionalVAE, ModelConfig, from_dict, load_run_config
from cvae_bridge.config import SharpenConfig
from cvae_bridge.errors import ConfigError
from cvae_bridge.hub import read_config, read_run_config
from cvae_bridge.training import train
from cvae_bridge.training.checkpoints import LOSSES_NAME, list_checkpoints
from cvae_bridge.training.losses import Sharpener, TrainingLosses


def sharpener(**fields):
    torch.manual_seed(0)
    return Sharpener(SharpenConfig(**fields), channels=1)


def test_adversarial_term_trains_only_the_decoder_and_the_discriminator_only_itself():
    s = sharpener(adversarial_weight=1.0)
    x = torch.rand(4, 1, 16, 16)
    x_hat = torch.rand(4, 1, 16, 16, requires_grad=True)
    terms = s(x, x_hat, step=0)
    terms["adversarial"].backward(retain_graph=True)
    assert x_hat.grad.abs().sum() > 0
    assert all(p.grad is None for p in s.discriminator.parameters())
    x_hat.grad = None
    terms["discriminator"].backward()
    assert x_hat.grad is None
    # (The last bias may get exactly zero: the hinge's real and fake slopes cancel.)
    assert all(p.grad.abs().sum() > 0 for p in s.discriminator.parameters() if p.ndim > 1)


def test_terms_count_from_the_start_step_while_the_discriminator_always_trains():
    s = sharpener(perceptual_weight=3.0, perceptual_resolution=32, adversarial_weight=2.0, start_step=10)
    x, x_hat = torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16)
    before = s(x, x_hat, step=9)
    assert set(before) == {"discriminator", "loss"}  # the decoder's terms are not even computed
    torch.testing.assert_close(before["loss"], before["discriminator"])
    after = s(x, x_hat, step=10)
    torch.testing.assert_close(
        after["loss"], after["discriminator"] + 2.0 * after["adversarial"] + 3.0 * after["perceptual"]
    )


def test_perceptual_distance_is_zero_for_equal_images_and_frozen():
    s = sharpener(perceptual_weight=1.0, perceptual_resolution=32)
    x = torch.rand(3, 1, 28, 28)
    assert s.perceptual(x, x).abs().max() < 1e-6
    assert (s.perceptual(x, torch.rand(3, 1, 28, 28)) > 0).all()
    assert not any(p.requires_grad for p in s.perceptual.parameters())
    s.train()
    assert not s.perceptual.training  # frozen BatchNorm statistics


def test_the_model_hands_out_differentiable_reconstructions():
    model = ConditionalVAE(from_dict(ModelConfig, MODEL))
    batch = {"label": torch.arange(3), "image": torch.rand(3, 1, 8, 8)}
    out = model(batch, step=0, reconstructions=["image"])
    reconstruction = out["reconstruction_image"]
    assert reconstruction.shape == (3, 1, 8, 8) and reconstruction.requires_grad
    assert "reconstruction_image" not in model(batch)


def test_a_sharpened_run_saves_a_model_without_the_discriminator_or_the_perceptual_network(tmp_path):
    sharpen = {
        "image": {
            "perceptual_weight": 1.0,
            "perceptual_resolution": 32,
            "adversarial_weight": 0.5,
            "discriminator_widths": [4],
            "start_step": 2,
        }
    }
    result = train(run_config(tmp_path, steps=4, checkpoint_every=2, sharpen=sharpen))
    logged = [yaml.safe_load(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert {"perceptual_image", "adversarial_image", "discriminator_image"} <= set(logged[-1])

    saved = load_file(str(result.model_dir / "model.safetensors"))
    assert not any(k.startswith("sharpeners") for k in saved)
    config = read_config(result.model_dir)
    assert "sharpen" not in config["model"]["targets"]["image"]
    assert read_run_config(result.model_dir).train.sharpen["image"].adversarial_weight == 0.5
    ConditionalVAE.from_pretrained(result.model_dir)

    losses = load_file(str(list_checkpoints(tmp_path)[-1] / LOSSES_NAME))
    assert losses and all(k.startswith("sharpeners.image.discriminator.") for k in losses)


def vector_model(shape, normalize=()):
    target = {
        "encoder": {"type": "vector", "shape": shape},
        "decoder": {"type": "vector", "shape": shape},
        "likelihood": {"type": "gaussian"},
    }
    config = {"d_model": 8, "latent_dim": 2, "targets": {"x": target}, "normalize": list(normalize)}
    return ConditionalVAE(from_dict(ModelConfig, config))


@pytest.mark.parametrize(
    "model, name, message",
    [
        (lambda: vector_model([1, 4, 4]), "y", "train.sharpen.y: the model has no target 'y'"),
        (
            lambda: vector_model([3]),
            "x",
            r"train.sharpen.x: .*need an image target \(C, H, W\), not a vector target of shape \(3,\)",
        ),
        (
            lambda: vector_model([1, 4, 4], normalize=["x"]),
            "x",
            "train.sharpen.x: .*remove 'x' from model.normalize",
        ),
    ],
    ids=["unknown", "not an image", "normalised"],
)
def test_sharpening_needs_an_image_target_in_the_models_own_units(model, name, message):
    with pytest.raises(ConfigError, match=message):
        TrainingLosses({name: SharpenConfig(adversarial_weight=1.0)}, model())


def test_the_old_place_of_the_settings_names_the_new_one(tmp_path):
    config = {"model": {**MODEL, "targets": {"image": {**MODEL["targets"]["image"], "sharpen": {}}}}}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match="model.targets.image.sharpen moved to train.sharpen.image"):
        load_run_config(path)
