"""ACT's original network, rebuilt in plain torch: the peer tools/act_benchmark.py times
cvae_bridge's ACT config against.

The architecture of Zhao et al. 2023 as its public code builds it (tonyzhaozh/act, detr/models:
detr_vae.py, transformer.py, backbone.py, position_encoding.py), written afresh, with random
weights (timings and FLOPs do not depend on them):

- backbone: ResNet-18 in torchvision's layout with FrozenBatchNorm2d, to layer4 (512 channels at
  stride 32); input_proj, a 1x1 convolution to the hidden width; DETR's 2-D sine positions
  (PositionEmbeddingSine, normalize=True, hidden / 2 features per axis).
- transformer: DETR's post-norm encoder-decoder, sequence-first, ReLU, positions added to queries
  and keys in every attention (nn.MultiheadAttention called as DETR calls it, attention weights
  included). The memory is [latent, qpos, image tokens]; the decoder turns `num_queries` learned
  query positions (over a zero target) into action features. ACT keeps every decoder layer's
  normed output (return_intermediate_dec=True) and reads only the first (`hs = ...[0]`): all 7
  layers are computed, as there.
- CVAE encoder (training only): a 4-layer transformer encoder over [CLS, qpos, actions] with
  sinusoidal positions; CLS -> mu, logvar (32-d). At inference z = 0, projected to the hidden width.
- loss: L1 on unpadded actions + kl_weight x KL (ACTPolicy).

The image comes already normalised (ACT normalises it in its policy wrapper). The benchmark splits
time and FLOPs by module: `backbone`, `transformer.encoder`, `transformer.decoder`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn


class FrozenBatchNorm2d(nn.Module):
    """Batch norm with fixed statistics and affine weights: buffers, not parameters, so nothing in
    it trains (DETR's, which adds eps before the rsqrt)."""

    def __init__(self, channels: int):
        super().__init__()
        self.register_buffer("weight", torch.ones(channels))
        self.register_buffer("bias", torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * (self.running_var + 1e-5).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * rearrange(scale, "c -> 1 c 1 1") + rearrange(shift, "c -> 1 c 1 1")


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = FrozenBatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = FrozenBatchNorm2d(channels)
        self.downsample = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride, bias=False), FrozenBatchNorm2d(channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet18(nn.Module):
    """torchvision's resnet18 up to layer4: (B, 3, H, W) -> (B, 8 width, H / 32, W / 32).
    `width` is the first stage's channels (64 in ResNet-18; smaller only for tests)."""

    def __init__(self, width: int = 64):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = FrozenBatchNorm2d(width)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        widths = [width, 2 * width, 4 * width, 8 * width]
        previous = width
        for i, channels in enumerate(widths):
            stride = 1 if i == 0 else 2
            self.add_module(
                f"layer{i + 1}",
                nn.Sequential(BasicBlock(previous, channels, stride), BasicBlock(channels, channels, 1)),
            )
            previous = channels
        self.out_channels = previous

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def _sine(coordinates: torch.Tensor, features: int, temperature: float = 10000.0) -> torch.Tensor:
    """(N,) -> (N, features): sin at even channels, cos at odd ones, channels 2i and 2i + 1 sharing
    the frequency temperature^(-2i / features) (DETR's and ACT's tables)."""
    channel = torch.arange(features, device=coordinates.device)
    frequency = temperature ** (2 * (channel // 2) / features)
    angle = coordinates[:, None] / frequency
    return torch.where(channel % 2 == 0, angle.sin(), angle.cos())


def sine_positions_2d(
    height: int, width: int, features: int, device: torch.device | None = None
) -> torch.Tensor:
    """DETR's PositionEmbeddingSine(features, normalize=True) of an unpadded grid: (1, 2 features, h, w),
    the row's features first. Row i (from 0) sits at (i + 1) / (height + 1e-6) x 2 pi, columns alike."""
    rows = torch.arange(1, height + 1, dtype=torch.float32, device=device) / (height + 1e-6) * 2 * math.pi
    cols = torch.arange(1, width + 1, dtype=torch.float32, device=device) / (width + 1e-6) * 2 * math.pi
    y = repeat(_sine(rows, features), "h f -> f h w", w=width)
    x = repeat(_sine(cols, features), "w f -> f h w", h=height)
    return torch.cat([y, x])[None]


def _with(x: torch.Tensor, pos: torch.Tensor | None) -> torch.Tensor:
    return x if pos is None else x + pos


class EncoderLayer(nn.Module):
    """DETR's post-norm encoder layer; tokens are (N, B, D)."""

    def __init__(self, d_model: int, heads: int, ff_dim: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, heads, dropout=dropout)
        self.linear1, self.linear2 = nn.Linear(d_model, ff_dim), nn.Linear(ff_dim, d_model)
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, src: torch.Tensor, pos: torch.Tensor | None, key_padding_mask: torch.Tensor | None
    ) -> torch.Tensor:
        q = k = _with(src, pos)
        src = self.norm1(src + self.dropout(self.self_attn(q, k, src, key_padding_mask=key_padding_mask)[0]))
        ff = self.linear2(self.dropout(F.relu(self.linear1(src))))
        return self.norm2(src + self.dropout(ff))


class DecoderLayer(nn.Module):
    """DETR's post-norm decoder layer: self-attention over the queries, cross-attention to the memory."""

    def __init__(self, d_model: int, heads: int, ff_dim: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, heads, dropout=dropout)
        self.multihead_attn = nn.MultiheadAttention(d_model, heads, dropout=dropout)
        self.linear1, self.linear2 = nn.Linear(d_model, ff_dim), nn.Linear(ff_dim, d_model)
        self.norm1, self.norm2, self.norm3 = (
            nn.LayerNorm(d_model),
            nn.LayerNorm(d_model),
            nn.LayerNorm(d_model),
        )
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, tgt: torch.Tensor, memory: torch.Tensor, pos: torch.Tensor, query_pos: torch.Tensor
    ) -> torch.Tensor:
        q = k = _with(tgt, query_pos)
        tgt = self.norm1(tgt + self.dropout(self.self_attn(q, k, tgt)[0]))
        attended = self.multihead_attn(_with(tgt, query_pos), _with(memory, pos), memory)[0]
        tgt = self.norm2(tgt + self.dropout(attended))
        ff = self.linear2(self.dropout(F.relu(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout(ff))


class TransformerEncoder(nn.Module):
    def __init__(self, d_model: int, layers: int, heads: int, ff_dim: int, dropout: float):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(d_model, heads, ff_dim, dropout) for _ in range(layers))

    def forward(
        self, src: torch.Tensor, pos: torch.Tensor | None = None, key_padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        for layer in self.layers:
            src = layer(src, pos, key_padding_mask)
        return src


class TransformerDecoder(nn.Module):
    """DETR's decoder with ACT's return_intermediate: from zeros at the query positions, every
    layer's output through the shared final norm, (layers, queries, B, D)."""

    def __init__(self, d_model: int, layers: int, heads: int, ff_dim: int, dropout: float):
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(d_model, heads, ff_dim, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(d_model)

    def forward(self, memory: torch.Tensor, pos: torch.Tensor, query_pos: torch.Tensor) -> torch.Tensor:
        tgt, outputs = torch.zeros_like(query_pos), []
        for layer in self.layers:
            tgt = layer(tgt, memory, pos, query_pos)
            outputs.append(self.norm(tgt))
        return torch.stack(outputs)


class Transformer(nn.Module):
    """DETR's encoder-decoder as ACT builds it: src and pos (N, B, D), the memory tokens and their
    positions, and query_pos (queries, B, D) -> every decoder layer's output, (layers, B, queries, D)."""

    def __init__(
        self, d_model: int, heads: int, encoder_layers: int, decoder_layers: int, ff_dim: int, dropout: float
    ):
        super().__init__()
        self.encoder = TransformerEncoder(d_model, encoder_layers, heads, ff_dim, dropout)
        self.decoder = TransformerDecoder(d_model, decoder_layers, heads, ff_dim, dropout)

    def forward(self, src: torch.Tensor, pos: torch.Tensor, query_pos: torch.Tensor) -> torch.Tensor:
        hs = self.decoder(self.encoder(src, pos), pos, query_pos)
        return rearrange(hs, "l k b d -> l b k d")


class ACTReference(nn.Module):
    """ACT's DETRVAE with one camera and its defaults (hidden 512, 8 heads, feed-forward 3200,
    4 encoder and 7 decoder layers, 100 queries, 32-d latent, 14 joints)."""

    def __init__(
        self,
        state_dim: int = 14,
        hidden: int = 512,
        heads: int = 8,
        ff_dim: int = 3200,
        encoder_layers: int = 4,
        decoder_layers: int = 7,
        num_queries: int = 100,
        latent_dim: int = 32,
        dropout: float = 0.1,
        backbone_width: int = 64,
    ):
        super().__init__()
        self.latent_dim = latent_dim
        self.backbone = ResNet18(backbone_width)
        self.input_proj = nn.Conv2d(self.backbone.out_channels, hidden, 1)
        self.transformer = Transformer(hidden, heads, encoder_layers, decoder_layers, ff_dim, dropout)
        self.query_embed = nn.Embedding(num_queries, hidden)
        self.input_proj_robot_state = nn.Linear(state_dim, hidden)
        self.additional_pos_embed = nn.Embedding(2, hidden)  # the latent's and the qpos token's positions
        self.latent_out_proj = nn.Linear(latent_dim, hidden)
        self.action_head = nn.Linear(hidden, state_dim)
        self.is_pad_head = nn.Linear(hidden, 1)
        # The CVAE encoder (ACT shares enc_layers between it and the transformer's encoder).
        self.encoder = TransformerEncoder(hidden, encoder_layers, heads, ff_dim, dropout)
        self.cls_embed = nn.Embedding(1, hidden)
        self.encoder_joint_proj = nn.Linear(state_dim, hidden)
        self.encoder_action_proj = nn.Linear(state_dim, hidden)
        self.latent_proj = nn.Linear(hidden, 2 * latent_dim)
        positions = torch.arange(2 + num_queries, dtype=torch.float32)  # [CLS], qpos, actions
        self.register_buffer(
            "pos_table", rearrange(_sine(positions, hidden), "n d -> n 1 d"), persistent=False
        )

    def forward(
        self,
        qpos: torch.Tensor,
        image: torch.Tensor,
        actions: torch.Tensor | None = None,
        is_pad: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor | None, torch.Tensor | None]]:
        """qpos (B, state), a normalised image (B, 3, H, W); actions (B, queries, state) and is_pad
        (B, queries) when training -> actions (B, queries, state), padding logits (B, queries, 1),
        (mu, logvar) (None at inference, where z = 0)."""
        batch = qpos.shape[0]
        mu = logvar = None
        if actions is None:
            latent = qpos.new_zeros(batch, self.latent_dim)
        else:
            tokens = torch.cat(
                [
                    repeat(self.cls_embed.weight, "1 d -> b 1 d", b=batch),
                    rearrange(self.encoder_joint_proj(qpos), "b d -> b 1 d"),
                    self.encoder_action_proj(actions),
                ],
                dim=1,
            )
            pad = torch.cat([is_pad.new_zeros(batch, 2), is_pad], dim=1)
            cls = self.encoder(rearrange(tokens, "b n d -> n b d"), self.pos_table, pad)[0]
            mu, logvar = self.latent_proj(cls).chunk(2, dim=-1)
            latent = mu + (logvar / 2).exp() * torch.randn_like(mu)
        features = self.backbone(image)
        _, _, h, w = features.shape
        grid = sine_positions_2d(h, w, self.query_embed.embedding_dim // 2, features.device)
        # The memory: [latent, qpos, image tokens], sequence first; the first two with learned positions.
        src = torch.cat(
            [
                torch.stack([self.latent_out_proj(latent), self.input_proj_robot_state(qpos)]),
                rearrange(self.input_proj(features), "b d h w -> (h w) b d"),
            ]
        )
        pos = torch.cat(
            [
                repeat(self.additional_pos_embed.weight, "n d -> n b d", b=batch),
                repeat(grid, "1 d h w -> (h w) b d", b=batch),
            ]
        )
        # A copy, not a view of the parameter (as ACT's .repeat): FlopCounterMode's module tracker
        # fails on a view of a parameter passed to a module under inference mode.
        query_pos = self.query_embed.weight[:, None].repeat(1, batch, 1)
        hs = self.transformer(src, pos, query_pos)[0]  # ACT reads the first decoder layer's output
        return self.action_head(hs), self.is_pad_head(hs), (mu, logvar)

    def loss(
        self,
        qpos: torch.Tensor,
        image: torch.Tensor,
        actions: torch.Tensor,
        is_pad: torch.Tensor,
        kl_weight: float = 10.0,
    ) -> dict[str, torch.Tensor]:
        """ACTPolicy's training loss: mean L1 over the unpadded actions + kl_weight x KL(q || N(0, I))
        (summed over latent dimensions, averaged over the batch)."""
        predicted, _, (mu, logvar) = self(qpos, image, actions, is_pad)
        l1 = (F.l1_loss(predicted, actions, reduction="none") * ~is_pad[..., None]).mean()
        kl = (-0.5 * (1 + logvar - mu.square() - logvar.exp())).sum(1).mean()
        return {"l1": l1, "kl": kl, "loss": l1 + kl_weight * kl}
