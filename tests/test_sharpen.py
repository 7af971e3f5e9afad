"""Perceptual and adversarial terms for image targets: where their gradients go, and when."""

import pytest
import torch
from safetensors.torch import load_file

from cvae_bridge import ConditionalVAE, ModelConfig, from_dict
from cvae_bridge.config import SharpenConfig
from cvae_bridge.errors import ConfigError
from cvae_bridge.sharpen import Sharpener


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


def test_model_with_sharpening_saves_without_the_pretrained_network(tmp_path):
    config = from_dict(
        ModelConfig,
        {
            "d_model": 16,
            "latent_dim": 2,
            "targets": {
                "image": {
                    "encoder": {
                        "type": "image",
                        "channels": 1,
                        "widths": [8],
                        "tokens": "flat",
                        "size": [16, 16],
                    },
                    "decoder": {"type": "image", "channels": 1, "size": [16, 16], "widths": [8]},
                    "likelihood": {"type": "bernoulli"},
                    "sharpen": {
                        "perceptual_weight": 1.0,
                        "perceptual_resolution": 32,
                        "adversarial_weight": 0.5,
                    },
                }
            },
        },
    )
    model = ConditionalVAE(config)
    out = model({"image": torch.rand(2, 1, 16, 16)}, step=0)
    assert {"perceptual_image", "adversarial_image", "discriminator_image"} <= set(out)
    assert "perceptual_image" not in model({"image": torch.rand(2, 1, 16, 16)})  # evaluation: no step
    model.save_pretrained(tmp_path / "m")
    saved = load_file(str(tmp_path / "m" / "model.safetensors"))
    assert not any(k.startswith("sharpeners.image.perceptual") for k in saved)
    assert any(k.startswith("sharpeners.image.discriminator") for k in saved)
    ConditionalVAE.from_pretrained(tmp_path / "m")


def test_sharpening_needs_an_image_target():
    with pytest.raises(ConfigError, match="targets.x.sharpen.*image target"):
        ConditionalVAE(
            from_dict(
                ModelConfig,
                {
                    "d_model": 8,
                    "latent_dim": 2,
                    "targets": {
                        "x": {
                            "encoder": {"type": "vector", "shape": [3]},
                            "decoder": {"type": "vector", "shape": [3]},
                            "likelihood": {"type": "gaussian"},
                            "sharpen": {"adversarial_weight": 1.0},
                        }
                    },
                },
            )
        )
