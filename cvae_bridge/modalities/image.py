"""Images (C x H x W, values in [0, 1]): a ResNet-style encoder and its mirror as decoder.

Encoder: one stage per width, each a stride-2 3x3 convolution followed by `blocks` pre-activation
residual blocks, then GroupNorm and SiLU. Its output is either a grid of tokens with 2-D sine positions
(for attention over the image, as ACT's backbone features) or one token from the flattened final
feature map (a classic conv VAE encoder, keeping where things are).

Decoder: [z, pooled conditions] -> linear -> smallest feature map, then the stages in reverse, each
`blocks` residual blocks and a stride-2 transposed convolution (GroupNorm, SiLU), back to H x W. Any H, W work:
sizes halve rounding up and the transposed convolutions add the row or column that was rounded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from einops import rearrange
from torch import nn

from ..config import DecoderConfig, EncoderConfig, NonNegativeInt, PositiveInt
from ..errors import ConfigError, InputError
from ..layers import AttentionPool, sine_positions_2d
from ..registry import register_decoder, register_encoder
from .base import Decoder, Encoder, Tokens, check_tensor


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(groups, channels), channels)


class ResBlock(nn.Module):
    """Pre-activation residual block: x + conv(act(norm(conv(act(norm(x))))))."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.net = nn.Sequential(
            _norm(channels, groups),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            _norm(channels, groups),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


def _halved_sizes(height: int, width: int, stages: int) -> list[tuple[int, int]]:
    """Feature-map sizes after each stride-2 stage, input size first."""
    sizes = [(height, width)]
    for _ in range(stages):
        h, w = sizes[-1]
        sizes.append(((h + 1) // 2, (w + 1) // 2))
    return sizes


@dataclass
class ImageEncoderConfig(EncoderConfig):
    channels: PositiveInt = 3  # input channels (1: grey, 3: RGB)
    widths: list[PositiveInt] = field(default_factory=lambda: [32, 64])  # channels of each downsampling stage
    blocks: NonNegativeInt = 1  # residual blocks per stage
    norm_groups: PositiveInt = 8  # GroupNorm groups
    tokens: Literal["grid", "flat"] = "grid"  # grid: a token per feature-map cell; flat: one
    # Needed for `tokens: flat` (the linear layer's size) and checked against inputs when given.
    size: list[PositiveInt] | None = None

    def __post_init__(self) -> None:
        if self.tokens == "flat" and self.size is None:
            raise ConfigError("tokens: flat needs `size: [height, width]`")
        if not self.widths:
            raise ConfigError("widths must list at least one stage width")


@register_encoder("image")
class ImageEncoder(Encoder):
    Config = ImageEncoderConfig
    input_kind = "image"

    def __init__(self, config: ImageEncoderConfig, d_model: int):
        super().__init__(config, d_model)
        layers: list[nn.Module] = []
        previous = config.channels
        for width in config.widths:
            layers.append(nn.Conv2d(previous, width, 3, stride=2, padding=1))
            layers += [ResBlock(width, config.norm_groups) for _ in range(config.blocks)]
            # Each stage ends normalised and activated, so that stages stay non-linear even
            # without residual blocks (blocks: 0, a plain strided conv stack).
            layers += [_norm(width, config.norm_groups), nn.SiLU()]
            previous = width
        self.body = nn.Sequential(*layers)
        if config.tokens == "grid":
            self.out = nn.Conv2d(previous, d_model, 1)
        else:
            h, w = _halved_sizes(*config.size, len(config.widths))[-1]
            self.out = nn.Sequential(nn.Linear(previous * h * w, d_model), nn.SiLU())

    def check(self, value: Any, name: str) -> None:
        low, high = check_tensor(
            value,
            name,
            ndim=4,
            trailing=(self.config.channels, *(self.config.size or (None, None))),
            dtype=self.dtype,
        )
        if low < 0 or high > 1:
            raise InputError(f"batch[{name!r}]: expected image values in [0, 1], got {low:.4g}..{high:.4g}")

    def forward(self, value: torch.Tensor, mask: torch.Tensor | None = None) -> Tokens:
        features = self.body(value * 2 - 1)
        if self.config.tokens == "grid":
            _, _, h, w = features.shape
            x = rearrange(self.out(features), "b d h w -> b (h w) d") + sine_positions_2d(
                h, w, self.d_model, features.device
            )
        else:
            x = rearrange(self.out(rearrange(features, "b c h w -> b (c h w)")), "b d -> b 1 d")
        return Tokens(x, torch.ones(x.shape[:2], dtype=torch.bool, device=x.device))


@dataclass
class ImageDecoderConfig(DecoderConfig):
    channels: PositiveInt = 3  # output channels
    size: list[PositiveInt] = field(default_factory=lambda: [32, 32])  # [H, W] of the generated image
    widths: list[PositiveInt] = field(default_factory=lambda: [32, 64])  # widths of the stages, reversed
    blocks: NonNegativeInt = 1  # residual blocks per stage
    norm_groups: PositiveInt = 8  # GroupNorm groups

    def __post_init__(self) -> None:
        if len(self.size) != 2:
            raise ConfigError(f"size must be [height, width], got {self.size}")
        if not self.widths:
            raise ConfigError("widths must list at least one stage width")


@register_decoder("image")
class ImageDecoder(Decoder):
    Config = ImageDecoderConfig
    output_kind = "image"

    def __init__(self, config: ImageDecoderConfig, d_model: int, latent_dim: int, conditioned: bool):
        super().__init__(config, d_model, latent_dim, conditioned)
        height, width = config.size
        self.event_shape = (config.channels, height, width)
        self.sites, self.channels = height * width, config.channels
        self.out_features = config.widths[0]
        self.pool = AttentionPool(d_model) if conditioned else None

        sizes = _halved_sizes(height, width, len(config.widths))
        self.start_shape = (config.widths[-1], *sizes[-1])
        self.input = nn.Linear(latent_dim + (d_model if conditioned else 0), math.prod(self.start_shape))
        layers: list[nn.Module] = []
        for i in reversed(range(len(config.widths))):
            layers += [ResBlock(config.widths[i], config.norm_groups) for _ in range(config.blocks)]
            (out_h, out_w), (in_h, in_w) = sizes[i], sizes[i + 1]
            layers.append(
                nn.ConvTranspose2d(
                    config.widths[i],
                    config.widths[max(i - 1, 0)],
                    3,
                    stride=2,
                    padding=1,
                    output_padding=(out_h - (2 * in_h - 1), out_w - (2 * in_w - 1)),
                )
            )
            layers += [_norm(config.widths[max(i - 1, 0)], config.norm_groups), nn.SiLU()]
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, conditions: Tokens) -> torch.Tensor:
        if self.pool is not None:
            z = torch.cat([z, self.pool(conditions.x, conditions.mask)], dim=-1)
        features = self.body(self.input(z).view(-1, *self.start_shape))
        return rearrange(features, "b f h w -> b (h w) f")

    def to_sites(self, x: torch.Tensor) -> torch.Tensor:
        return rearrange(x, "b c h w -> b (h w) c")

    def from_sites(self, y: torch.Tensor) -> torch.Tensor:
        return rearrange(y, "b (h w) c -> b c h w", h=self.event_shape[1])
