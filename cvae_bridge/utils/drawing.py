"""Text on images, in Pillow's built-in bitmap font (nothing to install or download).

label_rows   a grid image -> the same with each row's label above it (sample grids' prompts)
caption      an (H, W, 3) uint8 frame -> a copy with lines of text at its top (rollout videos)
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..errors import InputError

MARGIN = 3  # pixels around a block of text
BAND_ALPHA = 150  # opacity (of 255) of the dark band behind a caption: the scene still shows through

Colour = str | tuple[int, ...]


@functools.cache
def font() -> ImageFont.ImageFont:
    """Pillow's bitmap font: crisp at its one size (6 x 11 pixels), and it survives video compression.
    Pillow 10.0's load_default() gives it; from 10.1 on that is a small anti-aliased FreeType font."""
    return getattr(ImageFont, "load_default_imagefont", ImageFont.load_default)()


def line_height() -> int:
    return font().getbbox("Ag")[3] + 2


def wrap(text: str, width: int) -> list[str]:
    """The words of `text` in lines at most `width` pixels wide (a longer word gets a line of its own)."""
    lines: list[str] = []
    for word in text.split():
        if lines and font().getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] += f" {word}"
        else:
            lines.append(word)
    return lines or [""]


def _draw_lines(draw: ImageDraw.ImageDraw, top: int, lines: Sequence[tuple[str, Colour]]) -> None:
    for k, (text, colour) in enumerate(lines):
        draw.text((MARGIN, top + MARGIN + k * line_height()), text, fill=colour, font=font())


def label_rows(grid: Image.Image, labels: Sequence[str], row_height: int) -> Image.Image:
    """`grid`, rows of `row_height` pixels, with each row's label above it: black on white, wrapped
    to the grid's width."""
    if len(labels) * row_height != grid.height:
        raise InputError(f"row_labels: expected one per row ({grid.height // row_height}), got {len(labels)}")
    texts = [wrap(label, grid.width - 2 * MARGIN) for label in labels]
    strips = [len(lines) * line_height() + 2 * MARGIN for lines in texts]
    canvas = Image.new(grid.mode, (grid.width, grid.height + sum(strips)), "white")
    draw = ImageDraw.Draw(canvas)
    top = 0
    for row, (lines, strip) in enumerate(zip(texts, strips)):
        _draw_lines(draw, top, [(line, "black") for line in lines])
        canvas.paste(grid.crop((0, row * row_height, grid.width, (row + 1) * row_height)), (0, top + strip))
        top += strip + row_height
    return canvas


def caption(frame: np.ndarray, lines: Sequence[tuple[str, Colour]]) -> np.ndarray:
    """A copy of the (H, W, 3) uint8 `frame` with `lines` of (text, colour), wrapped to its width,
    at its top on a translucent dark band, so that they read on any scene."""
    image = Image.fromarray(frame).convert("RGBA")
    wrapped = [(part, colour) for text, colour in lines for part in wrap(text, image.width - 2 * MARGIN)]
    band = Image.new("RGBA", image.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(band)
    draw.rectangle((0, 0, image.width, len(wrapped) * line_height() + 2 * MARGIN), fill=(0, 0, 0, BAND_ALPHA))
    _draw_lines(draw, 0, wrapped)
    return np.asarray(Image.alpha_composite(image, band).convert("RGB"))
