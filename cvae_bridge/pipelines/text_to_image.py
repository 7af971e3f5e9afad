"""Text-to-image inference: prompts in, PIL images (or a tensor) out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from PIL import Image

from ..config import PositiveFloat, PositiveInt, Seed
from ..errors import ConfigError
from ..model import ConditionalVAE
from ..utils.pixels import image_grid, save_image_grid


class TextToImagePipeline:
    """Wraps a ConditionalVAE whose only condition is text and which has an image target.

    pipe = TextToImagePipeline.from_pretrained("runs/mnist_text_to_image/model")
    images = pipe(["a handwritten seven"], num_images_per_prompt=4, seed=0)
    """

    def __init__(self, model: ConditionalVAE):
        texts = [n for n, e in model.condition_encoders.items() if e.input_kind == "text"]
        images = [n for n, d in model.decoders.items() if d.output_kind == "image"]
        if len(texts) != 1 or len(model.condition_encoders) != 1 or not images:
            raise ConfigError(
                f"TextToImagePipeline needs a model conditioned on one text modality with an image target; "
                f"this one has conditions {list(model.condition_encoders)} and targets {list(model.decoders)}"
            )
        self.model = model.eval()
        self.caption_key, self.image_key = texts[0], images[0]

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, device: str | torch.device = "cpu"
    ) -> TextToImagePipeline:
        return cls(ConditionalVAE.from_pretrained(directory, device))

    @torch.no_grad()
    def __call__(
        self,
        prompts: str | list[str],
        num_images_per_prompt: int = 1,
        temperature: float = 1.0,
        seed: int | None = None,
        latent: Literal["sample", "mean"] = "sample",
        output_type: Literal["pil", "pt"] = "pil",
    ) -> list[Image.Image] | torch.Tensor:
        """Images grouped by prompt: `num_images_per_prompt` for the first prompt, then the next.
        "pil": a list of PIL images; "pt": one (N, C, H, W) tensor in [0, 1]."""
        if output_type not in ("pil", "pt"):
            raise ConfigError(f"output_type: expected 'pil' or 'pt', got {output_type!r}")
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        generator = None if seed is None else torch.Generator(self.model.device).manual_seed(seed)
        samples = self.model.sample(
            {self.caption_key: prompts},
            num_samples=num_images_per_prompt,
            temperature=temperature,
            latent=latent,
            generator=generator,
        )
        images = samples[self.image_key].clamp(0, 1)
        if output_type == "pt":
            return images
        return [image_grid(image[None], columns=1, padding=0) for image in images]


@dataclass
class GenerateConfig:
    """What `cvae-bridge generate` writes: one grid row of images per prompt."""

    model: str  # a model folder (save_pretrained)
    prompts: list[str]
    out: str = "grid.png"  # the PNG file to write
    num: PositiveInt = 8  # images per prompt
    temperature: PositiveFloat = 1.0
    seed: Seed = 0
    device: str = "cpu"


def generate_grid(config: GenerateConfig) -> Path:
    """Generate `num` images per prompt and save them as one grid, a row per prompt."""
    pipe = TextToImagePipeline.from_pretrained(config.model, device=config.device)
    images = pipe(
        config.prompts,
        num_images_per_prompt=config.num,
        temperature=config.temperature,
        seed=config.seed,
        output_type="pt",
    )
    return save_image_grid(images, config.out, columns=config.num)
