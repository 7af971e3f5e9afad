"""Write the saved-model artifacts that tests/test_backward_compatibility.py compares against.

    python tests/artifacts/generate.py            # all families
    python tests/artifacts/generate.py action_chunk

Each family gets a folder `<family>/` holding `model/` (config.json + model.safetensors, as
save_pretrained writes them) and `outputs.safetensors`: the inputs the test feeds and what the
model gave for them at a fixed seed. Regenerate only when a change is meant to alter saved models
or outputs, say why in the commit message, and keep the old folder as `legacy_<what>/` when the
saved format changes so that the loader is still tested on it.

`legacy_sharpen/` is not written here: it is a format-1 folder whose image target carries the
perceptual/adversarial `sharpen` settings and discriminator weights inside the model, written by
cvae_bridge 0.1.0 before those terms moved to training; it must keep loading as it is.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from cvae_bridge import (
    ActionChunkPolicy,
    ConditionalVAE,
    ModelConfig,
    RunConfig,
    TextToImagePipeline,
    from_dict,
    to_dict,
)

HERE = Path(__file__).resolve().parent
PROMPTS = ["a handwritten seven", "a small zero"]
IMAGE = {
    "encoder": {"type": "image", "channels": 1, "widths": [4, 8], "tokens": "flat", "size": [8, 8]},
    "decoder": {"type": "image", "channels": 1, "size": [8, 8], "widths": [4, 8]},
    "likelihood": {"type": "bernoulli"},
}
FAMILIES: dict[str, dict[str, Any]] = {
    # Caption tokens from the packaged MiniLM (frozen, referenced) -> 8x8 image, learned prior.
    "text_to_image": {
        "d_model": 16,
        "latent_dim": 4,
        "conditions": {"caption": {"type": "text", "output": "tokens", "max_length": 8}},
        "targets": {"image": IMAGE},
        "prior": {
            "type": "conditional",
            "network": {"type": "transformer", "layers": 1, "heads": 2, "ff_dim": 32},
        },
    },
    # ACT-style: joints + camera -> a chunk of 5 actions, transformer posterior, normalisation.
    "action_chunk": {
        "d_model": 16,
        "latent_dim": 4,
        "conditions": {
            "qpos": {"type": "vector", "shape": [3]},
            "camera": {"type": "image", "channels": 3, "widths": [4, 8]},
        },
        "targets": {
            "action": {
                "encoder": {"type": "action", "dim": 3, "chunk_size": 5},
                "decoder": {
                    "type": "action",
                    "dim": 3,
                    "chunk_size": 5,
                    "encoder_layers": 1,
                    "decoder_layers": 1,
                    "heads": 2,
                    "ff_dim": 32,
                    "dropout": 0.0,
                },
                "likelihood": {"type": "laplace", "scale": "fixed"},
                "reduction": "mean",
            }
        },
        "posterior": {"type": "transformer", "conditions": ["qpos"], "layers": 1, "heads": 2, "ff_dim": 32},
        "kl": {"beta": 10.0},
        "normalize": ["qpos", "action"],
    },
    # Unconditional MLP VAE on flattened 6x6 binary images.
    "unconditional_vae": {
        "d_model": 16,
        "latent_dim": 3,
        "targets": {
            "image": {
                "encoder": {"type": "vector", "shape": [1, 6, 6]},
                "decoder": {"type": "vector", "shape": [1, 6, 6], "hidden": [16]},
                "likelihood": {"type": "bernoulli"},
            }
        },
    },
}
# How the action-chunk policy reads observations: the run config saved with the model says it.
ROBOT_DATA = {
    "type": "lerobot",
    "path": "data/tiny",
    "features": {"qpos": "observation.state", "camera": "observation.images.top", "action": "action"},
    "chunk_size": 5,
    "image_size": [8, 8],
}


def inputs(family: str) -> dict[str, torch.Tensor]:
    """The batch fed to the model (and, for the policy, the observation it reads)."""
    g = torch.Generator().manual_seed(0)
    if family == "text_to_image":
        return {"image": torch.bernoulli(torch.rand(2, 1, 8, 8, generator=g), generator=g)}
    if family == "unconditional_vae":
        return {"image": torch.bernoulli(torch.rand(3, 1, 6, 6, generator=g), generator=g)}
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1, 3:] = False  # the second chunk runs past its episode's end
    return {
        "qpos": torch.randn(2, 3, generator=g),
        "camera": torch.rand(2, 3, 8, 8, generator=g),
        "action": torch.randn(2, 5, 3, generator=g) * mask[..., None],
        "action_mask": mask,
        "observation.state": torch.randn(3, generator=g),
        "observation.images.top": torch.randint(0, 256, (8, 8, 3), generator=g, dtype=torch.uint8),
    }


def model_batch(family: str, saved: dict[str, torch.Tensor]) -> dict[str, Any]:
    batch = {k: v for k, v in saved.items() if not k.startswith("observation.")}
    if family == "text_to_image":
        batch["caption"] = PROMPTS
    return batch


def outputs(family: str, directory: Path, saved: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What the saved model in `directory` gives for `saved`, through the public API, at fixed seeds.

    The test calls this on the committed folder and compares with the committed outputs.
    """
    model = ConditionalVAE.from_pretrained(directory)
    torch.manual_seed(1)
    with torch.no_grad():
        result = {f"loss.{k}": v for k, v in model(model_batch(family, saved)).items()}
    if family == "text_to_image":
        result["samples"] = TextToImagePipeline(model)(
            PROMPTS, num_images_per_prompt=2, seed=0, output_type="pt"
        ).images
    elif family == "unconditional_vae":
        generator = torch.Generator().manual_seed(0)
        result["samples"] = model.sample(num_samples=4, generator=generator)["image"]
    else:
        policy = ActionChunkPolicy.from_pretrained(directory)
        observation = {k: saved[k].numpy() for k in ("observation.state", "observation.images.top")}
        result["policy_actions"] = torch.stack(
            [torch.from_numpy(policy.select_action(observation)) for _ in range(5)]
        )
        with torch.no_grad():
            chunk = model.sample(
                model_batch(family, {k: saved[k] for k in ("qpos", "camera")}), latent="mean"
            )
        result["chunk"] = chunk["action"]
    return result


def generate(family: str) -> None:
    torch.manual_seed(0)
    model = ConditionalVAE(from_dict(ModelConfig, FAMILIES[family]))
    extra = None
    if family == "action_chunk":
        model.set_normalization(
            {"qpos": (torch.zeros(3), torch.ones(3) * 2), "action": (torch.ones(3) * 0.1, torch.ones(3))}
        )
        run = from_dict(RunConfig, {"model": FAMILIES[family], "data": ROBOT_DATA})
        extra = {"run": to_dict(run)}
    folder = HERE / family
    model.save_pretrained(folder / "model", extra=extra)
    saved = inputs(family)
    result = outputs(family, folder / "model", saved)
    save_file({**{f"input.{k}": v for k, v in saved.items()}, **result}, str(folder / "outputs.safetensors"))
    print(f"wrote {folder}")


if __name__ == "__main__":
    for name in sys.argv[1:] or FAMILIES:
        generate(name)
