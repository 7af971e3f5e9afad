"""PNG pictures: sample grids, reconstructions next to inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from PIL import Image


def image_grid(images: torch.Tensor, columns: int, padding: int = 2) -> Image.Image:
    """(N, C, H, W) values in [0, 1] -> one PIL image, `columns` per row, white gaps between."""
    images = images.detach().float().clamp(0, 1).cpu()
    n, channels, height, width = images.shape
    rows = -(-n // columns)
    canvas = torch.ones(rows * columns, channels, height + 2 * padding, width + 2 * padding)
    canvas[:n, :, padding : padding + height, padding : padding + width] = images
    grid = rearrange(canvas, "(r c) ch h w -> (r h) (c w) ch", c=columns)
    array = (grid.numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(array[..., 0] if channels == 1 else array, mode="L" if channels == 1 else "RGB")


def save_image_grid(images: torch.Tensor, path: str | Path, columns: int) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image_grid(images, columns).save(path)
    return path
