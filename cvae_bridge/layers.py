"""Small building blocks shared by modalities, posteriors and priors."""

from __future__ import annotations

import math

import torch
from einops import rearrange, repeat
from torch import nn

from .errors import ConfigError


def sine_positions_1d(length: int, dim: int, device: torch.device | None = None) -> torch.Tensor:
    """Transformer sinusoidal positions, (length, dim)."""
    position = torch.arange(length, device=device, dtype=torch.float32)
    return _sine_embed(position, dim)


def sine_positions_2d(height: int, width: int, dim: int, device: torch.device | None = None) -> torch.Tensor:
    """DETR-style 2-D sinusoidal positions for an image token grid, (height * width, dim).

    Half of the channels encode the row, half the column.
    """
    if dim % 4:
        raise ConfigError(f"2-D sine positions need a width divisible by 4, got {dim}")
    rows = _sine_embed(torch.arange(height, device=device, dtype=torch.float32), dim // 2)
    cols = _sine_embed(torch.arange(width, device=device, dtype=torch.float32), dim // 2)
    grid = torch.cat([repeat(rows, "h d -> h w d", w=width), repeat(cols, "w d -> h w d", h=height)], dim=-1)
    return rearrange(grid, "h w d -> (h w) d")


def _sine_embed(position: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    frequency = torch.exp(-math.log(10000.0) * torch.arange(half, device=position.device) / max(half, 1))
    angle = position[:, None] * frequency[None, :]
    embedding = torch.cat([angle.sin(), angle.cos()], dim=-1)
    return nn.functional.pad(embedding, (0, dim - 2 * half))


def mlp(in_dim: int, hidden: list[int], out_dim: int, activation: type[nn.Module] = nn.SiLU) -> nn.Sequential:
    """Linear layers with `activation` between them (none after the last)."""
    dims = [in_dim, *hidden, out_dim]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over valid tokens: (B, N, D), (B, N) -> (B, D); zeros where a row has no valid token."""
    if tokens.shape[1] == 1:  # a single token (a vector, a pooled caption): no division needed
        return tokens[:, 0] * mask.to(tokens.dtype)
    weight = mask.to(tokens.dtype).unsqueeze(-1)
    return (tokens * weight).sum(1) / weight.sum(1).clamp(min=1.0)


class AttentionPool(nn.Module):
    """One learned query attending over a token sequence: (B, N, D) -> (B, D).

    Keeps what each condition modality contributes separable (a mean would blur a grid of image
    tokens with a state token); rows without valid tokens give zeros.
    """

    def __init__(self, dim: int, heads: int = 4):
        super().__init__()
        self.query = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch = tokens.shape[0]
        if tokens.shape[1] == 0:
            return tokens.new_zeros(batch, tokens.shape[-1])
        empty = ~mask.any(dim=1)
        # Fully masked rows would give NaN from the softmax: let them attend, then zero them.
        key_padding = ~mask & ~empty[:, None]
        query = repeat(self.query, "1 1 d -> b 1 d", b=batch)
        pooled, _ = self.attention(query, tokens, tokens, key_padding_mask=key_padding, need_weights=False)
        return rearrange(pooled, "b 1 d -> b d").masked_fill(empty[:, None], 0.0)


def transformer_encoder(
    dim: int, layers: int, heads: int, ff_dim: int, dropout: float, norm_first: bool
) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(
        dim, heads, ff_dim, dropout, activation="gelu", batch_first=True, norm_first=norm_first
    )
    # A final norm is needed after pre-norm layers; post-norm layers end normalised already.
    return nn.TransformerEncoder(
        layer, layers, norm=nn.LayerNorm(dim) if norm_first else None, enable_nested_tensor=False
    )
