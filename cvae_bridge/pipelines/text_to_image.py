"""Text-to-image inference: prompts in, PIL images (or a tensor, or an array) out."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from ..config import PositiveFloat, PositiveInt, Seed
from ..errors import ConfigError
from ..model import ConditionalVAE
from ..utils.pixels import DISPLAY_SIZE, display_scale, image_grid, save_image_grid
from ..utils.runtime import checked_device


@dataclass
class ImagePipelineOutput:
    """What the pipeline returns, as diffusers' pipelines do: `images`, grouped by prompt."""

    images: list[Image.Image] | torch.Tensor | np.ndarray
    prompts: list[str] | None  # one per image; None for an unconditional model


class TextToImagePipeline:
    """Wraps a ConditionalVAE with an image target and either one text condition or none (an
    unconditional VAE, sampled without prompts).

    pipe = TextToImagePipeline.from_pretrained("runs/mnist_text_to_image/model")
    images = pipe("a handwritten seven", num_images_per_prompt=4, seed=0).images
    """

    def __init__(self, model: ConditionalVAE):
        texts = [n for n, e in model.condition_encoders.items() if e.input_kind == "text"]
        images = [n for n, d in model.decoders.items() if d.output_kind == "image"]
        if len(texts) != len(model.condition_encoders) or len(texts) > 1 or not images:
            raise ConfigError(
                f"TextToImagePipeline needs a model with an image target and one text condition or none; "
                f"this one has conditions {list(model.condition_encoders)} and targets {list(model.decoders)}"
            )
        self.model = model.eval()
        self.caption_key, self.image_key = (texts[0] if texts else None), images[0]

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, device: str | torch.device = "cpu", **hub_options: Any
    ) -> TextToImagePipeline:
        """A model folder or a Hub repo id (`hub_options`: revision, cache_dir)."""
        return cls(ConditionalVAE.from_pretrained(directory, device, **hub_options))

    def push_to_hub(self, repo_id: str, **options: Any) -> str:
        """Upload the pipeline's model folder to a Hub repo (ConditionalVAE.push_to_hub)."""
        return self.model.push_to_hub(repo_id, **options)

    def to(self, device: str | torch.device) -> TextToImagePipeline:
        self.model.to(checked_device(device))
        return self

    @property
    def device(self) -> torch.device:
        return self.model.device

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        num_images_per_prompt: int = 1,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        latent: Literal["sample", "mean"] = "sample",
        output_type: Literal["pil", "pt", "np"] = "pil",
    ) -> ImagePipelineOutput:
        """`num_images_per_prompt` images for the first prompt, then the next. `generator` (or
        `seed`, a shortcut for one) fixes the draws. Images: "pil", a list of PIL images; "pt", one
        (N, C, H, W) tensor in [0, 1]; "np", an (N, H, W, C) float array in [0, 1]."""
        if output_type not in ("pil", "pt", "np"):
            raise ConfigError(f"output_type: expected 'pil', 'pt' or 'np', got {output_type!r}")
        if not (isinstance(num_images_per_prompt, int) and num_images_per_prompt >= 1):
            raise ConfigError(
                f"num_images_per_prompt: expected an integer >= 1, got {num_images_per_prompt!r}"
            )
        if generator is not None and seed is not None:
            raise ConfigError("generator, seed: give one of them (seed makes a generator)")
        prompts = [prompt] if isinstance(prompt, str) else None if prompt is None else list(prompt)
        if (prompts is None) != (self.caption_key is None):
            raise ConfigError(
                "prompt: this model is unconditional, sample it without prompts"
                if self.caption_key is None
                else f"prompt: the model is conditioned on text ({self.caption_key!r}); give one or more prompts"
            )
        if seed is not None:
            generator = torch.Generator(self.model.device).manual_seed(seed)
        samples = self.model.sample(
            {self.caption_key: prompts} if prompts is not None else None,
            num_samples=num_images_per_prompt,
            temperature=temperature,
            latent=latent,
            generator=generator,
        )
        images = samples[self.image_key].clamp(0, 1)
        per_image = None if prompts is None else [p for p in prompts for _ in range(num_images_per_prompt)]
        if output_type == "pt":
            return ImagePipelineOutput(images, per_image)
        if output_type == "np":
            return ImagePipelineOutput(images.permute(0, 2, 3, 1).float().cpu().numpy(), per_image)
        return ImagePipelineOutput(
            [image_grid(image[None], columns=1, padding=0) for image in images], per_image
        )


@dataclass
class GenerateConfig:
    """What `cvae-bridge generate` writes: one grid row of images per prompt, the prompt above it
    (of an unconditional model: one row of `num` images, without prompts)."""

    model: str  # a model folder (save_pretrained)
    prompts: list[str] = field(default_factory=list)
    out: str = "grid.png"  # the PNG file to write
    num: PositiveInt = 8  # images per prompt
    temperature: PositiveFloat = 1.0
    seed: Seed = 0
    device: str = "auto"  # the GPU where there is one
    # Images are enlarged by a whole factor (nearest neighbour) to about this many pixels on a side,
    # so that MNIST's 28x28 are readable (x4); 1 keeps them as generated.
    display_size: PositiveInt = DISPLAY_SIZE
    labels: bool = True  # each row's prompt written above it


def generate_grid(config: GenerateConfig) -> Path:
    """Generate `num` images per prompt and save them as one grid, a row per prompt."""
    pipe = TextToImagePipeline.from_pretrained(config.model, device=config.device)
    images = pipe(
        config.prompts or None,
        num_images_per_prompt=config.num,
        temperature=config.temperature,
        seed=config.seed,
        output_type="pt",
    ).images
    return save_image_grid(
        images,
        config.out,
        columns=config.num,
        scale=display_scale(images.shape[-2:], config.display_size),
        row_labels=config.prompts if config.labels and config.prompts else None,
    )
