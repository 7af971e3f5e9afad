"""The latent side: diagonal Gaussians, their KL, posteriors q(z | x, c) and priors p(z | c).

A posterior (or the network of a conditional prior) reads a list of token sequences, one per
modality it sees, and returns the mean and log-variance of a diagonal Gaussian over z.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from einops import repeat
from torch import nn

from .config import FractionBelowOne, PositiveInt, PosteriorConfig, PriorConfig, component
from .errors import ConfigError
from .layers import masked_mean, mlp, transformer_encoder
from .modalities.base import Tokens
from .registry import POSTERIORS, PRIORS, register_posterior, register_prior

LOG_2PI = math.log(2 * math.pi)


def reparameterize(
    mu: torch.Tensor, logvar: torch.Tensor, temperature: float = 1.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """z = mu + temperature * sigma * eps: differentiable in mu and logvar."""
    eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + temperature * torch.exp(0.5 * logvar) * eps


def gaussian_log_prob(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag(exp(logvar))) summed over the last dimension."""
    return -0.5 * (LOG_2PI + logvar + (z - mu) ** 2 * torch.exp(-logvar)).sum(-1)


def gaussian_kl(
    mu_q: torch.Tensor, logvar_q: torch.Tensor, mu_p: torch.Tensor, logvar_p: torch.Tensor
) -> torch.Tensor:
    """KL(q || p) between diagonal Gaussians, per dimension (not summed)."""
    return 0.5 * (
        logvar_p - logvar_q + (torch.exp(logvar_q) + (mu_q - mu_p) ** 2) * torch.exp(-logvar_p) - 1.0
    )


class GaussianNetwork(nn.Module):
    """Base of posteriors: token sequences (one per modality) -> (mu, logvar), each (B, L)."""

    Config: type[PosteriorConfig]

    def __init__(self, config: PosteriorConfig, d_model: int, latent_dim: int, num_inputs: int):
        super().__init__()
        self.config = config
        self.latent_dim = latent_dim

    def forward(self, parts: list[Tokens]) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


POSTERIORS.define_contract(GaussianNetwork, PosteriorConfig, ("forward",))


@dataclass
class MLPPosteriorConfig(PosteriorConfig):
    hidden: list[PositiveInt] = field(default_factory=list)  # hidden layer widths of the MLP


@register_posterior("mlp")
class MLPPosterior(GaussianNetwork):
    """Mean-pool each modality's tokens, concatenate, MLP to (mu, logvar).

    With one single-token modality and no hidden layers this is the classic VAE encoder head
    (Kingma & Welling): a linear map from the encoder's features to mu and log sigma^2.
    """

    Config = MLPPosteriorConfig

    def __init__(self, config: MLPPosteriorConfig, d_model: int, latent_dim: int, num_inputs: int):
        super().__init__(config, d_model, latent_dim, num_inputs)
        self.net = mlp(d_model * num_inputs, config.hidden, 2 * latent_dim)

    def forward(self, parts: list[Tokens]) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = torch.cat([masked_mean(p.x, p.mask) for p in parts], dim=-1)
        mu, logvar = self.net(pooled).chunk(2, dim=-1)
        return mu, logvar


@dataclass
class TransformerPosteriorConfig(PosteriorConfig):
    layers: PositiveInt = 4  # transformer encoder layers
    heads: PositiveInt = 8  # attention heads
    ff_dim: PositiveInt = 3200  # feed-forward width
    dropout: FractionBelowOne = 0.1  # dropout in the transformer layers
    norm_first: bool = False  # pre-norm (LayerNorm before attention) instead of post-norm


@register_posterior("transformer")
class TransformerPosterior(GaussianNetwork):
    """ACT's CVAE encoder: a [CLS] token prepended to all input tokens, a transformer encoder,
    and (mu, logvar) read from the [CLS] output."""

    Config = TransformerPosteriorConfig

    def __init__(self, config: TransformerPosteriorConfig, d_model: int, latent_dim: int, num_inputs: int):
        super().__init__(config, d_model, latent_dim, num_inputs)
        self.cls = nn.Parameter(torch.randn(1, 1, d_model) * 0.02)
        self.encoder = transformer_encoder(
            d_model, config.layers, config.heads, config.ff_dim, config.dropout, config.norm_first
        )
        self.out = nn.Linear(d_model, 2 * latent_dim)

    def forward(self, parts: list[Tokens]) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = torch.cat([p.x for p in parts], dim=1)
        mask = torch.cat([p.mask for p in parts], dim=1)
        batch = tokens.shape[0]
        tokens = torch.cat([repeat(self.cls, "1 1 d -> b 1 d", b=batch), tokens], dim=1)
        mask = torch.cat([mask.new_ones(batch, 1), mask], dim=1)
        hidden = self.encoder(tokens, src_key_padding_mask=~mask)
        mu, logvar = self.out(hidden[:, 0]).chunk(2, dim=-1)
        return mu, logvar


# ---------------------------------------------------------------------------------------------


class Prior(nn.Module):
    """Base of priors: condition token sequences -> (mu, logvar), each (B, L)."""

    Config: type[PriorConfig]
    conditional: bool = False

    def __init__(self, config: PriorConfig, d_model: int, latent_dim: int, num_conditions: int):
        super().__init__()
        self.config = config
        self.latent_dim = latent_dim

    def forward(self, parts: list[Tokens], batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def kl(self, mu_q: torch.Tensor, logvar_q: torch.Tensor, parts: list[Tokens]) -> torch.Tensor:
        """KL(q || p) per example and dimension, (B, L)."""
        mu_p, logvar_p = self(parts, mu_q.shape[0])
        return gaussian_kl(mu_q, logvar_q, mu_p.to(mu_q), logvar_p.to(mu_q))


PRIORS.define_contract(Prior, PriorConfig, ("forward",))


@dataclass
class StandardPriorConfig(PriorConfig):
    pass


@register_prior("standard")
class StandardNormalPrior(Prior):
    """p(z) = N(0, I), whatever the conditions."""

    Config = StandardPriorConfig

    def forward(self, parts: list[Tokens], batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        zeros = torch.zeros(batch, self.latent_dim, device=self._device(parts))
        return zeros, zeros

    @staticmethod
    def _device(parts: list[Tokens]) -> torch.device | None:
        return parts[0].x.device if parts else None

    def kl(self, mu_q: torch.Tensor, logvar_q: torch.Tensor, parts: list[Tokens]) -> torch.Tensor:
        # The closed form against N(0, I), without materialising the prior's zeros.
        return 0.5 * (mu_q.pow(2) + logvar_q.exp() - 1.0 - logvar_q)


@dataclass
class ConditionalPriorConfig(PriorConfig):
    # Any registered posterior network, applied to the condition tokens alone.
    network: PosteriorConfig = field(default_factory=lambda: component(PosteriorConfig, "mlp", hidden=[256]))


@register_prior("conditional")
class ConditionalPrior(Prior):
    """Learned p(z | c) = N(mu(c), sigma(c)) (Sohn, Lee & Yan 2015)."""

    Config = ConditionalPriorConfig
    conditional = True

    def __init__(self, config: ConditionalPriorConfig, d_model: int, latent_dim: int, num_conditions: int):
        super().__init__(config, d_model, latent_dim, num_conditions)
        if num_conditions == 0:
            raise ConfigError(
                "model.prior: the conditional prior needs at least one condition modality in model.conditions"
            )
        network = POSTERIORS.get(config.network.type)
        self.network = network(config.network, d_model, latent_dim, num_conditions)

    def forward(self, parts: list[Tokens], batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.network(parts)
