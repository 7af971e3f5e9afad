"""Tiny models built from configs, and small batches for them."""

import os
from pathlib import Path

import pytest
import torch

from cvae_bridge import ConditionalVAE, ModelConfig, from_dict

# Headless MuJoCo rendering: must be chosen before mujoco is first imported by any test.
os.environ.setdefault("MUJOCO_GL", "egl")

CONFIGS = Path(__file__).resolve().parents[1] / "configs"  # the shipped run configs
# The features of an ALOHA sim dataset (`cvae-bridge demos --suite aloha`, transfer-cube, camera at
# ACT's size), for the shipped configs that take their sizes and camera from the data:
# `resolve_run_config(config, ALOHA_SIM_FEATURES)` builds them without a dataset.
ALOHA_SIM_FEATURES = {
    "observation.state": {"dtype": "float32", "shape": [14]},
    "observation.environment_state": {"dtype": "float32", "shape": [7]},
    "observation.images.top": {"dtype": "image", "shape": [480, 640, 3]},
    "action": {"dtype": "float32", "shape": [14]},
}

TINY_CONFIGS = {
    # An unconditional MLP VAE on flattened 6x6 "images".
    "mlp_vae": {
        "d_model": 32,
        "latent_dim": 4,
        "targets": {
            "image": {
                "encoder": {"type": "vector", "shape": [1, 6, 6], "activation": "relu"},
                "decoder": {"type": "vector", "shape": [1, 6, 6], "hidden": [32]},
                "likelihood": {"type": "bernoulli"},
            }
        },
    },
    # Label-conditioned conv VAE with a learned conditional prior.
    "conv_cvae": {
        "d_model": 32,
        "latent_dim": 4,
        "conditions": {"label": {"type": "vector", "num_classes": 3}},
        "targets": {
            "image": {
                "encoder": {
                    "type": "image",
                    "channels": 1,
                    "widths": [8, 16],
                    "tokens": "flat",
                    "size": [8, 8],
                },
                "decoder": {"type": "image", "channels": 1, "size": [8, 8], "widths": [8, 16]},
                "likelihood": {"type": "bernoulli"},
            }
        },
        "prior": {"type": "conditional"},
    },
    # ACT-style: state + image grid condition, action chunk target with padding mask.
    "act": {
        "d_model": 32,
        "latent_dim": 4,
        "conditions": {
            "qpos": {"type": "vector", "shape": [3]},
            "camera": {"type": "image", "channels": 3, "widths": [8, 8]},
        },
        "targets": {
            "action": {
                "encoder": {"type": "action", "dim": 3, "chunk_size": 5},
                "decoder": {
                    "type": "action",
                    "dim": 3,
                    "chunk_size": 5,
                    "encoder_layers": 1,
                    "decoder_layers": 2,
                    "heads": 2,
                    "ff_dim": 64,
                    "dropout": 0.0,
                },
                "likelihood": {"type": "laplace", "scale": "fixed"},
                "reduction": "mean",
            }
        },
        "posterior": {
            "type": "transformer",
            "conditions": ["qpos"],
            "layers": 1,
            "heads": 2,
            "ff_dim": 64,
            "dropout": 0.0,
        },
        "kl": {"beta": 10.0},
        "normalize": ["qpos", "action"],
    },
}


def make_batch(name: str, size: int = 6, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    if name == "mlp_vae":
        return {"image": torch.bernoulli(torch.rand(size, 1, 6, 6, generator=g), generator=g)}
    if name == "conv_cvae":
        return {
            "label": torch.arange(size) % 3,
            "image": torch.bernoulli(torch.rand(size, 1, 8, 8, generator=g), generator=g),
        }
    mask = torch.ones(size, 5, dtype=torch.bool)
    mask[0, 3:] = False  # the first example's chunk runs past its episode's end
    return {
        "qpos": torch.randn(size, 3, generator=g),
        "camera": torch.rand(size, 3, 8, 8, generator=g),
        "action": torch.randn(size, 5, 3, generator=g) * mask[..., None],
        "action_mask": mask,
    }


def build(name: str, seed: int = 0) -> ConditionalVAE:
    torch.manual_seed(seed)
    model = ConditionalVAE(from_dict(ModelConfig, TINY_CONFIGS[name]))
    if model.normalizers:
        model.set_normalization(
            {"qpos": (torch.zeros(3), torch.ones(3) * 2), "action": (torch.ones(3) * 0.1, torch.ones(3))}
        )
    return model


@pytest.fixture(scope="module")
def one_thread():
    """For modules of tiny models (`pytestmark = pytest.mark.usefixtures("one_thread")`): two
    intra-op threads only spin against each other, many times slower on shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(params=sorted(TINY_CONFIGS))
def tiny(request):
    return request.param
