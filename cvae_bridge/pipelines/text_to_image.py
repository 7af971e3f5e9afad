"""Text-to-image inference: prompts in, PIL images out."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from PIL import Image

from ..evaluation.pictures import image_grid, save_image_grid
from ..evaluation.samples import image_targets, text_conditions
from ..model import ConditionalVAE


class TextToImagePipeline:
    """Wraps a ConditionalVAE whose only condition is text and which has an image target.

    pipe = TextToImagePipeline.from_pretrained("runs/mnist_text_to_image/model")
    images = pipe(["a handwritten seven"], num_images_per_prompt=4, seed=0)
    """

    def __init__(self, model: ConditionalVAE):
        texts, images = text_conditions(model), image_targets(model)
        if len(texts) != 1 or len(model.condition_encoders) != 1 or not images:
            raise ValueError(
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
    def generate(
        self,
        prompts: str | list[str],
        num_images_per_prompt: int = 1,
        temperature: float = 1.0,
        seed: int | None = None,
        latent: Literal["sample", "mean"] = "sample",
    ) -> torch.Tensor:
        """(len(prompts) * num_images_per_prompt, C, H, W) in [0, 1], grouped by prompt."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        generator = None if seed is None else torch.Generator(self.model.device).manual_seed(seed)
        samples = self.model.sample(
            {self.caption_key: prompts},
            num_samples=num_images_per_prompt,
            temperature=temperature,
            latent=latent,
            generator=generator,
        )
        return samples[self.image_key].clamp(0, 1)

    def __call__(
        self,
        prompts: str | list[str],
        num_images_per_prompt: int = 1,
        temperature: float = 1.0,
        seed: int | None = None,
    ) -> list[Image.Image]:
        images = self.generate(prompts, num_images_per_prompt, temperature, seed)
        return [image_grid(image[None], columns=1, padding=0) for image in images]

    def save_grid(
        self,
        prompts: list[str],
        path: str | Path,
        num_images_per_prompt: int = 8,
        temperature: float = 1.0,
        seed: int | None = 0,
    ) -> Path:
        """One row per prompt, `num_images_per_prompt` columns."""
        images = self.generate(prompts, num_images_per_prompt, temperature, seed)
        return save_image_grid(images, path, columns=num_images_per_prompt)
