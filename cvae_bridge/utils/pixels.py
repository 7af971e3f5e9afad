"""Conversions between camera frames, image tensors and PIL images, shared by the data readers,
the pipelines and evaluation (so that inference converts exactly as training did).

    frame_tensor               (H, W, 3) uint8 frame -> (3, H', W') float in [0, 1], resized
    resize_images              (B, C, H, W) float in [0, 1] -> the same at another size
    image_grid, save_image_grid   (N, C, H, W) in [0, 1] -> one image, `columns` per row
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from PIL import Image


def frame_tensor(frame: np.ndarray, size: Sequence[int] | None) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H', W') float32 in [0, 1], resized when `size` differs."""
    x = torch.from_numpy(np.array(frame)).permute(2, 0, 1).to(torch.float32).div_(255.0)
    return resize_images(x[None], size)[0]


def resize_images(x: torch.Tensor, size: Sequence[int] | None) -> torch.Tensor:
    """(B, C, H, W) float in [0, 1] -> (B, C, H', W') at `size` (bilinear, antialiased, as the data
    readers resize), unchanged when `size` is None or already the size."""
    if size is None or tuple(x.shape[-2:]) == tuple(size):
        return x
    x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
    return x.clamp_(0.0, 1.0)


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


def save_image_grid(images: torch.Tensor, path: str | Path, columns: int, padding: int = 2) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image_grid(images, columns, padding).save(path)
    return path
