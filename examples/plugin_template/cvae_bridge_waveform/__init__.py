"""Example plugin: 1-D waveforms of `channels` x `length` samples.

Importing this module registers an encoder and a decoder named "waveform" and a dataset named
"sine_waves"; cvae_bridge imports it through the entry point declared in pyproject.toml.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from einops import rearrange
from torch import nn

from cvae_bridge import Decoder, Encoder, Tokens, register_dataset, register_decoder, register_encoder
from cvae_bridge.config import DatasetConfig, DecoderConfig, EncoderConfig, PositiveInt, Seed
from cvae_bridge.data import DataSource, PairedDataset
from cvae_bridge.errors import InputError


@dataclass
class WaveformEncoderConfig(EncoderConfig):
    # Every numeric field states its range (cvae_bridge.config: PositiveInt, Fraction, ...),
    # checked when a config is parsed.
    channels: PositiveInt = 1
    length: PositiveInt = 64
    width: PositiveInt = 32


@register_encoder("waveform")
class WaveformEncoder(Encoder):
    """Two stride-2 1-D convolutions; each remaining step becomes a token."""

    Config = WaveformEncoderConfig

    def __init__(self, config: WaveformEncoderConfig, d_model: int):
        super().__init__(config, d_model)
        self.net = nn.Sequential(
            nn.Conv1d(config.channels, config.width, 5, stride=2, padding=2),
            nn.SiLU(),
            nn.Conv1d(config.width, d_model, 5, stride=2, padding=2),
        )

    def check(self, value, name: str) -> None:
        expected = (self.config.channels, self.config.length)
        if not isinstance(value, torch.Tensor) or value.ndim != 3 or tuple(value.shape[1:]) != expected:
            raise InputError(
                f"batch[{name!r}]: expected a tensor (batch, {expected[0]}, {expected[1]}), got {getattr(value, 'shape', type(value))}"
            )

    def forward(self, value: torch.Tensor, mask: torch.Tensor | None = None) -> Tokens:
        x = rearrange(self.net(value), "b d n -> b n d")
        return Tokens(x, torch.ones(x.shape[:2], dtype=torch.bool, device=x.device))


@dataclass
class WaveformDecoderConfig(DecoderConfig):
    channels: PositiveInt = 1
    length: PositiveInt = 64
    hidden: PositiveInt = 128


@register_decoder("waveform")
class WaveformDecoder(Decoder):
    """An MLP from z (and the mean condition token) to one feature vector per time step."""

    Config = WaveformDecoderConfig

    def __init__(self, config: WaveformDecoderConfig, d_model: int, latent_dim: int, conditioned: bool):
        super().__init__(config, d_model, latent_dim, conditioned)
        self.event_shape = (config.channels, config.length)
        self.sites, self.channels, self.out_features = config.length, config.channels, 8
        in_dim = latent_dim + (d_model if conditioned else 0)
        self.net = nn.Sequential(
            nn.Linear(in_dim, config.hidden), nn.SiLU(), nn.Linear(config.hidden, config.length * 8)
        )

    def forward(self, z: torch.Tensor, conditions: Tokens) -> torch.Tensor:
        if self.conditioned:
            weight = conditions.mask.unsqueeze(-1).float()
            z = torch.cat([z, (conditions.x * weight).sum(1) / weight.sum(1).clamp(min=1)], dim=-1)
        return rearrange(self.net(z), "b (n f) -> b n f", f=8)

    def to_sites(self, x: torch.Tensor) -> torch.Tensor:
        return rearrange(x, "b c n -> b n c")

    def from_sites(self, y: torch.Tensor) -> torch.Tensor:
        return rearrange(y, "b n c -> b c n")


@dataclass
class SineWavesConfig(DatasetConfig):
    length: PositiveInt = 64
    size: PositiveInt = 256
    seed: Seed = 0


class SineWaves(PairedDataset):
    def __init__(self, length: int, size: int, seed: int):
        super().__init__(seed)
        self.length, self.size = length, size

    def __len__(self) -> int:
        return self.size

    def sample(self, index: int, rng: np.random.Generator) -> dict:
        params = np.random.default_rng([self.seed, index]).uniform([1.0, 0.0], [4.0, 2 * math.pi])
        t = np.linspace(0, 2 * math.pi, self.length)
        wave = np.sin(params[0] * t + params[1]) + 0.05 * rng.standard_normal(self.length)
        return {
            "wave": torch.tensor(wave, dtype=torch.float32).unsqueeze(0),
            "frequency": torch.tensor([params[0]], dtype=torch.float32),
        }


@register_dataset("sine_waves")
class SineWavesSource(DataSource):
    """Noisy sine waves of random frequency and phase, with their frequency as a condition."""

    Config = SineWavesConfig

    def split(self, name: str) -> SineWaves:
        sizes = {"train": self.config.size, "test": self.config.size // 4}
        if name not in sizes:
            raise ValueError(f"sine_waves has splits {sorted(sizes)}, not {name!r}")
        return SineWaves(self.config.length, sizes[name], self.config.seed + (name == "test"))
