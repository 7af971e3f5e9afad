"""Conversions between camera frames, image tensors and PIL images, shared by the data readers,
the pipelines and evaluation (so that inference converts exactly as training did).

    frame_tensor               (H, W, 3) uint8 frame -> (3, H', W') float in [0, 1], resized
    resize_images              (B, C, H, W) float in [0, 1] -> the same at another size
    image_grid, save_image_grid   (N, C, H, W) in [0, 1] -> one image, `columns` per row
    display_scale              the whole factor that enlarges an image to about a size
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from PIL import Image

from .drawing import label_rows


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


# Pixels on an image's longer side in a written grid, by default: MNIST's 28x28 enlarged 4 times.
DISPLAY_SIZE = 112


def display_scale(size: Sequence[int], display_size: int) -> int:
    """The whole factor that brings an image of `size` (H, W) nearest `display_size` pixels on its
    longer side; 1 for an image as large already (never shrunk)."""
    return max(1, round(display_size / max(size)))


def image_grid(
    images: torch.Tensor,
    columns: int,
    padding: int = 2,
    scale: int = 1,
    row_labels: Sequence[str] | None = None,
) -> Image.Image:
    """(N, C, H, W) values in [0, 1] -> one PIL image, `columns` per row, white gaps between. Each
    image is enlarged `scale` times (nearest neighbour: its pixels stay sharp); `row_labels`, one
    per row, are written above their rows."""
    images = repeat(images.detach().float().clamp(0, 1).cpu(), "n c h w -> n c (h a) (w b)", a=scale, b=scale)
    n, channels, height, width = images.shape
    rows = -(-n // columns)
    canvas = torch.ones(rows * columns, channels, height + 2 * padding, width + 2 * padding)
    canvas[:n, :, padding : padding + height, padding : padding + width] = images
    grid = rearrange(canvas, "(r c) ch h w -> (r h) (c w) ch", c=columns)
    array = (grid.numpy() * 255).round().astype(np.uint8)
    image = Image.fromarray(array[..., 0] if channels == 1 else array, mode="L" if channels == 1 else "RGB")
    return image if row_labels is None else label_rows(image, row_labels, height + 2 * padding)


def save_image_grid(
    images: torch.Tensor,
    path: str | Path,
    columns: int,
    padding: int = 2,
    scale: int = 1,
    row_labels: Sequence[str] | None = None,
) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image_grid(images, columns, padding, scale, row_labels).save(path)
    return path
