"""Vectors: proprioception, environment state, class labels, or any fixed-shape tensor flattened.

Encoder: flatten -> MLP -> one token. Decoder: [z, pooled conditions] -> MLP -> one site whose
channels are the flattened vector. With `hidden: [400]` and ReLU on both sides this is the MLP
VAE of the PyTorch examples (784-400-20).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..config import DecoderConfig, EncoderConfig, NonNegativeInt, PositiveInt
from ..errors import ConfigError, InputError
from ..layers import AttentionPool
from ..registry import register_decoder, register_encoder
from .base import Decoder, Encoder, Tokens, check_tensor

ACTIVATIONS = {"relu": nn.ReLU, "silu": nn.SiLU, "gelu": nn.GELU, "tanh": nn.Tanh, "none": nn.Identity}
Activation = Literal["relu", "silu", "gelu", "tanh", "none"]


def _layers(dims: list[int], activation: Activation) -> nn.Sequential:
    """Linear layers, each followed by `activation` (the last one too)."""
    layers: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), ACTIVATIONS[activation]()]
    return nn.Sequential(*layers)


@dataclass
class VectorEncoderConfig(EncoderConfig):
    # Shape of one example, flattened by the encoder (e.g. [14] for joint positions); None: the
    # shape of the data's feature (a robot dataset's, when training).
    shape: list[PositiveInt] | None = None
    hidden: list[PositiveInt] = field(default_factory=list)  # hidden layer widths before the projection
    activation: Activation = "none"  # between hidden layers
    # > 0: inputs are integer class labels (B,), one-hot encoded; `shape` is then [1].
    num_classes: NonNegativeInt = 0

    def __post_init__(self) -> None:
        if self.num_classes:
            if self.shape not in (None, [1]):
                raise ConfigError("a label encoder (num_classes > 0) takes no `shape`")
            self.shape = [1]


@register_encoder("vector")
class VectorEncoder(Encoder):
    Config = VectorEncoderConfig
    input_kind = "vector"

    def __init__(self, config: VectorEncoderConfig, d_model: int):
        super().__init__(config, d_model)
        in_dim = config.num_classes or math.prod(config.shape)
        self.net = _layers([in_dim, *config.hidden, d_model], config.activation)

    def check(self, value: Any, name: str) -> None:
        if self.config.num_classes:
            check_tensor(value, name, ndim=1, floating=False)
            if (
                value.dtype.is_floating_point
                or value.dtype == torch.bool
                or value.min() < 0
                or value.max() >= self.config.num_classes
            ):
                raise InputError(
                    f"batch[{name!r}]: expected integer labels in [0, {self.config.num_classes}), got {value.dtype} values {value.min().item()}..{value.max().item()}"
                )
            return
        check_tensor(
            value, name, ndim=1 + len(self.config.shape), trailing=tuple(self.config.shape), dtype=self.dtype
        )

    def forward(self, value: torch.Tensor, mask: torch.Tensor | None = None) -> Tokens:
        if self.config.num_classes:
            flat = F.one_hot(value.long(), self.config.num_classes).to(self.net[0].weight.dtype)
        else:
            flat = value.reshape(value.shape[0], -1)
        x = rearrange(self.net(flat), "b d -> b 1 d")
        return Tokens(x, torch.ones(x.shape[:2], dtype=torch.bool, device=x.device))


@dataclass
class VectorDecoderConfig(DecoderConfig):
    shape: list[PositiveInt] | None = None  # output shape; None: the data's (robot datasets)
    hidden: list[PositiveInt] = field(default_factory=lambda: [256])  # hidden layer widths
    activation: Activation = "relu"  # between hidden layers


@register_decoder("vector")
class VectorDecoder(Decoder):
    Config = VectorDecoderConfig
    output_kind = "vector"

    def __init__(self, config: VectorDecoderConfig, d_model: int, latent_dim: int, conditioned: bool):
        super().__init__(config, d_model, latent_dim, conditioned)
        self.event_shape = tuple(config.shape)
        if len(self.event_shape) == 3:  # declared (C, H, W): an image to evaluation (a classic MLP VAE)
            self.output_kind = "image"
        self.sites, self.channels = 1, math.prod(config.shape)
        self.pool = AttentionPool(d_model) if conditioned else None
        in_dim = latent_dim + (d_model if conditioned else 0)
        self.net = _layers([in_dim, *config.hidden], config.activation)
        self.out_features = config.hidden[-1] if config.hidden else in_dim

    def forward(self, z: torch.Tensor, conditions: Tokens) -> torch.Tensor:
        if self.pool is not None:
            z = torch.cat([z, self.pool(conditions.x, conditions.mask)], dim=-1)
        return rearrange(self.net(z), "b f -> b 1 f")

    def to_sites(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], 1, self.channels)

    def from_sites(self, y: torch.Tensor) -> torch.Tensor:
        return y.reshape(y.shape[0], *self.event_shape)
