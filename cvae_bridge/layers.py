"""Small building blocks shared by modalities, posteriors and priors."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
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


class Dropout(nn.Dropout):
    """nn.Dropout that draws its mask on a CPU from 16-bit slices of 64-bit random integers.

    PyTorch's CPU dropout draws one random number per element (bernoulli_), a large share of a
    transformer's training step on a CPU; a 64-bit draw gives four elements' bits here (README
    "Performance"). The drop probability is rounded to a multiple of 1/65536. Other devices, evaluation and
    in-place dropout run nn.Dropout as it is; the seed comes from torch's default generator alike.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or x.device.type != "cpu" or self.inplace or not 0 < self.p < 1:
            return super().forward(x)
        words = torch.empty((x.numel() + 3) // 4, dtype=torch.int64).random_(-(2**63), None)
        bits = words.view(torch.int16)[: x.numel()].view(x.shape)
        keep = bits >= round(self.p * 65536) - 32768
        return torch.where(keep, x, 0.0).mul_(1 / (1 - self.p))


class Attention(nn.MultiheadAttention):
    """nn.MultiheadAttention whose attention weights, while training on a CPU, are dropped out by
    Dropout (PyTorch's attention there draws one bernoulli per weight); the same parameters and
    results otherwise. Elsewhere (a GPU, evaluation, a returned or
    masked-by-position attention) it is nn.MultiheadAttention itself."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__(dim, heads, dropout, batch_first=True)
        self.weights_dropout = Dropout(dropout)

    def forward(  # type: ignore[override]  # the subset of arguments PyTorch's layers pass
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if not (self.training and self.dropout > 0 and query.device.type == "cpu") or (
            need_weights or attn_mask is not None or is_causal
        ):
            return super().forward(
                query, key, value, key_padding_mask, need_weights, attn_mask, average_attn_weights, is_causal
            )
        if query is key is value:  # self-attention: one product for q, k and v
            q, k, v = F.linear(query, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        else:
            weights = self.in_proj_weight.chunk(3)
            biases = self.in_proj_bias.chunk(3) if self.in_proj_bias is not None else (None,) * 3
            q, k, v = (F.linear(x, w, b) for x, w, b in zip((query, key, value), weights, biases))
        q, k, v = (rearrange(x, "b l (h d) -> b h l d", h=self.num_heads) for x in (q, k, v))
        scores = q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5
        empty = None
        if key_padding_mask is not None:
            # PyTorch's layers pass the mask additive (-inf where padded); a bool mask is True there.
            additive = key_padding_mask
            if additive.dtype == torch.bool:
                additive = torch.zeros_like(additive, dtype=scores.dtype).masked_fill(additive, float("-inf"))
            # A row with every key masked attends to nothing, as in PyTorch: its scores are left
            # finite (a softmax over -inf alone is NaN, and so would be its gradient), its weights zeroed.
            no_keys = additive.isneginf().all(dim=-1)
            if no_keys.any():
                empty = no_keys
                additive = additive.masked_fill(rearrange(empty, "b -> b 1"), 0.0)
            scores = scores + rearrange(additive, "b s -> b 1 1 s")
        attention = scores.softmax(dim=-1)
        if empty is not None:
            attention = attention.masked_fill(rearrange(empty, "b -> b 1 1 1"), 0.0)
        out = rearrange(self.weights_dropout(attention) @ v, "b h l d -> b l (h d)")
        return self.out_proj(out), None


def _fast_dropout(layer: nn.Module) -> nn.Module:
    """A PyTorch transformer layer (batch first) with its dropout and attention modules replaced
    by Dropout and Attention: the same parameters, a faster dropout while training on a CPU."""
    for name, child in layer.named_children():
        if type(child) is nn.Dropout:
            setattr(layer, name, Dropout(child.p))
        elif type(child) is nn.MultiheadAttention:
            setattr(layer, name, Attention(child.embed_dim, child.num_heads, child.dropout))
    return layer


def transformer_encoder(
    dim: int, layers: int, heads: int, ff_dim: int, dropout: float, norm_first: bool
) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(
        dim, heads, ff_dim, dropout, activation="gelu", batch_first=True, norm_first=norm_first
    )
    # A final norm is needed after pre-norm layers; post-norm layers end normalised already.
    return nn.TransformerEncoder(
        _fast_dropout(layer),
        layers,
        norm=nn.LayerNorm(dim) if norm_first else None,
        enable_nested_tensor=False,
    )


def transformer_decoder(
    dim: int, layers: int, heads: int, ff_dim: int, dropout: float, norm_first: bool
) -> nn.TransformerDecoder:
    layer = nn.TransformerDecoderLayer(
        dim, heads, ff_dim, dropout, activation="gelu", batch_first=True, norm_first=norm_first
    )
    return nn.TransformerDecoder(_fast_dropout(layer), layers, norm=nn.LayerNorm(dim))
