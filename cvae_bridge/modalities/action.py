"""Action chunks: k future actions of d dimensions, (B, k, d), with a padding mask (B, k).

Encoder (ACT's posterior input): each action -> linear -> token, plus 1-D sine positions.
Decoder (ACT / DETR): z becomes one more token in front of the condition tokens; a transformer
encoder mixes them; a transformer decoder turns k learned queries into k action features through
self-attention and cross-attention over that memory. Every decoder layer is used (ACT's original
code read only the first layer's output).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from einops import rearrange, repeat
from torch import nn

from ..config import DecoderConfig, EncoderConfig, FractionBelowOne, NonNegativeInt, PositiveInt
from ..layers import sine_positions_1d, transformer_decoder, transformer_encoder
from ..registry import register_decoder, register_encoder
from ..utils.runtime import capturing_cuda_graph
from .base import Decoder, Encoder, Tokens, check_tensor


@dataclass
class ActionEncoderConfig(EncoderConfig):
    dim: PositiveInt | None = None  # action features per step; None: the data's (robot datasets)
    chunk_size: PositiveInt = 100  # k: actions in a chunk


@register_encoder("action")
class ActionEncoder(Encoder):
    Config = ActionEncoderConfig
    input_kind = "action"

    def __init__(self, config: ActionEncoderConfig, d_model: int):
        super().__init__(config, d_model)
        self.embed = nn.Linear(config.dim, d_model)

    def check(self, value: Any, name: str) -> None:
        check_tensor(
            value, name, ndim=3, trailing=(self.config.chunk_size, self.config.dim), dtype=self.dtype
        )

    def forward(self, value: torch.Tensor, mask: torch.Tensor | None = None) -> Tokens:
        batch, steps, _ = value.shape
        x = self.embed(value) + sine_positions_1d(steps, self.d_model, value.device)
        if mask is None:
            mask = torch.ones(batch, steps, dtype=torch.bool, device=value.device)
        return Tokens(x, mask)


@dataclass
class ActionDecoderConfig(DecoderConfig):
    dim: PositiveInt | None = None  # action features per step; None: the data's (robot datasets)
    chunk_size: PositiveInt = 100  # k: actions per generated chunk
    encoder_layers: NonNegativeInt = 4  # 0: the latent and condition tokens go to the decoder as they are
    decoder_layers: PositiveInt = 7  # transformer decoder layers (queries attend to memory)
    heads: PositiveInt = 8  # attention heads
    ff_dim: PositiveInt = 3200  # feed-forward width
    dropout: FractionBelowOne = 0.1  # dropout in the transformer layers
    norm_first: bool = False  # pre-norm instead of post-norm


@register_decoder("action")
class ActionDecoder(Decoder):
    Config = ActionDecoderConfig
    output_kind = "action"

    def __init__(self, config: ActionDecoderConfig, d_model: int, latent_dim: int, conditioned: bool):
        super().__init__(config, d_model, latent_dim, conditioned)
        self.event_shape = (config.chunk_size, config.dim)
        self.sites, self.channels = config.chunk_size, config.dim
        self.out_features = d_model
        self.latent_in = nn.Linear(latent_dim, d_model)
        self.latent_position = nn.Parameter(torch.randn(1, 1, d_model) * 0.02)
        self.encoder = transformer_encoder(
            d_model, config.encoder_layers, config.heads, config.ff_dim, config.dropout, config.norm_first
        )
        self.decoder = transformer_decoder(
            d_model, config.decoder_layers, config.heads, config.ff_dim, config.dropout, config.norm_first
        )
        self.queries = nn.Parameter(torch.randn(1, config.chunk_size, d_model) * 0.02)

    def forward(self, z: torch.Tensor, conditions: Tokens) -> torch.Tensor:
        batch = z.shape[0]
        latent = rearrange(self.latent_in(z), "b d -> b 1 d") + self.latent_position
        memory = torch.cat([latent, conditions.x], dim=1)
        valid = torch.cat([conditions.mask.new_ones(batch, 1), conditions.mask], dim=1)
        padding = ~valid
        # Nothing padded (a camera's grid, vectors): without a mask PyTorch's inference attention
        # skips its masked softmax, a fifth of the encoder's time on a CPU. Inference only, where
        # .any() waiting for a GPU costs nothing; an exported or captured graph keeps the mask.
        if not (
            torch.is_grad_enabled()
            or torch.compiler.is_compiling()
            or capturing_cuda_graph()
            or padding.any()
        ):
            padding = None
        memory = self.encoder(memory, src_key_padding_mask=padding)
        queries = repeat(self.queries, "1 k d -> b k d", b=batch)
        return self.decoder(queries, memory, memory_key_padding_mask=padding)

    def to_sites(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def from_sites(self, y: torch.Tensor) -> torch.Tensor:
        return y
