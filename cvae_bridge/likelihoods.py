"""Likelihood heads: decoder features -> distribution parameters -> log p(y | z, c), mean, sample.

Every head works on targets laid out as (B, S, C): S sites (pixels, chunk steps, one for a vector)
of C channels. `forward` projects decoder features (B, S, F) to parameters (B, S, P) with one
linear map per site (a 1x1 convolution for images); `log_prob` returns one number per example,
in nats, summed over channels and over the sites that the mask keeps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .config import LikelihoodConfig, PositiveFloat, PositiveInt
from .errors import ConfigError, InputError
from .registry import LIKELIHOODS, register_likelihood

LEVELS = 256  # 8-bit pixels


class LikelihoodHead(nn.Module):
    """Base class. Subclasses set `Config`, implement `num_params`, `site_log_prob`, `mean`, `sample`."""

    Config: type[LikelihoodConfig]
    # True when targets must lie in [0, 1] (pixel intensities, Bernoulli probabilities).
    unit_interval: bool = False

    def __init__(self, config: LikelihoodConfig, in_features: int, sites: int, channels: int):
        super().__init__()
        self.config = config
        self.sites = sites
        self.channels = channels
        self.project = nn.Linear(in_features, self.num_params(channels))

    def num_params(self, channels: int) -> int:
        raise NotImplementedError

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, S, F) decoder features -> (B, S, P) distribution parameters."""
        return self.project(features)

    def site_log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """(B, S, P), (B, S, C) -> (B, S) log-density summed over channels."""
        raise NotImplementedError

    def log_prob(
        self, params: torch.Tensor, x: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Per-example log-likelihood in nats, (B,): sum over channels and unmasked sites."""
        site = self.site_log_prob(params.float(), x.float())
        if mask is not None:
            site = site * mask.to(site.dtype)
        return site.sum(dim=1)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def sample(self, params: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def check(self, x: torch.Tensor, name: str) -> None:
        if not self.unit_interval:
            return
        low, high = (float(v) for v in x.aminmax())
        if low < 0 or high > 1:
            raise InputError(
                f"batch[{name!r}]: the {self.registered_name} likelihood expects values in [0, 1], got {low:.4g}..{high:.4g}"
            )


LIKELIHOODS.define_contract(
    LikelihoodHead, LikelihoodConfig, ("num_params", "site_log_prob", "mean", "sample")
)


# ---------------------------------------------------------------------------------------------


@dataclass
class BernoulliConfig(LikelihoodConfig):
    pass


@register_likelihood("bernoulli")
class Bernoulli(LikelihoodHead):
    """Independent Bernoulli per channel, parameterised by logits (binary or [0, 1] targets)."""

    Config = BernoulliConfig
    unit_interval = True

    def num_params(self, channels: int) -> int:
        return channels

    def site_log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return -F.binary_cross_entropy_with_logits(params, x, reduction="none").sum(-1)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(params)

    def sample(self, params: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.bernoulli(torch.sigmoid(params), generator=generator)


# ---------------------------------------------------------------------------------------------


@dataclass
class LocationScaleConfig(LikelihoodConfig):
    # fixed: scale = init_scale; global: one learned scale; per_dim: a learned scale per site and
    # channel; predicted: the decoder predicts a scale per output (heteroscedastic).
    scale: Literal["fixed", "global", "per_dim", "predicted"] = "global"
    init_scale: PositiveFloat = 1.0  # the scale a learnt scale starts at (the fixed one)
    min_scale: PositiveFloat = 1e-3  # floor of a predicted scale

    def __post_init__(self) -> None:
        if self.init_scale <= self.min_scale:
            raise ConfigError(f"init_scale ({self.init_scale}) must exceed min_scale ({self.min_scale})")


class LocationScale(LikelihoodHead):
    """Shared logic of the Gaussian and Laplace heads: a location per output and a scale that is
    fixed, learned globally, learned per dimension, or predicted."""

    Config = LocationScaleConfig
    distribution: type[torch.distributions.Distribution]

    def __init__(self, config: LocationScaleConfig, in_features: int, sites: int, channels: int):
        super().__init__(config, in_features, sites, channels)
        # Scales live in "softplus space" above min_scale, so any learned value is valid.
        raw = _inverse_softplus(config.init_scale - config.min_scale)
        if config.scale == "fixed":
            self.register_buffer("raw_scale", torch.full((1, 1, 1), raw))
        elif config.scale == "global":
            self.raw_scale = nn.Parameter(torch.full((1, 1, 1), raw))
        elif config.scale == "per_dim":
            self.raw_scale = nn.Parameter(torch.full((1, sites, channels), raw))
        else:
            nn.init.constant_(self.project.bias[channels:], raw)

    def num_params(self, channels: int) -> int:
        return 2 * channels if self.config.scale == "predicted" else channels

    def loc_scale(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.config.scale == "predicted":
            loc, raw = params.chunk(2, dim=-1)
        else:
            loc, raw = params, self.raw_scale.to(params.dtype).expand_as(params)
        return loc, F.softplus(raw) + self.config.min_scale

    def site_log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        loc, scale = self.loc_scale(params)
        # No argument checks: each waits for a GPU, the model has checked `x`, and a non-finite
        # output reaches the loss, where training skips or stops at that step.
        return self.distribution(loc, scale, validate_args=False).log_prob(x).sum(-1)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return self.loc_scale(params)[0]

    def sample(self, params: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        loc, scale = self.loc_scale(params)
        noise = self.distribution(torch.zeros_like(loc), torch.ones_like(scale))
        if generator is None:
            return loc + scale * noise.sample()
        # torch.distributions has no generator argument: draw uniforms and invert the CDF.
        uniform = torch.rand(loc.shape, generator=generator, device=loc.device).clamp(1e-6, 1 - 1e-6)
        return loc + scale * noise.icdf(uniform)


def _inverse_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))


@register_likelihood("gaussian")
class Gaussian(LocationScale):
    distribution = torch.distributions.Normal


@register_likelihood("laplace")
class Laplace(LocationScale):
    """Laplace likelihood: with a fixed scale its negative log-likelihood is ACT's L1 loss."""

    distribution = torch.distributions.Laplace


# ---------------------------------------------------------------------------------------------


@dataclass
class CategoricalConfig(LikelihoodConfig):
    pass


@register_likelihood("categorical")
class Categorical256(LikelihoodHead):
    """A 256-way softmax per channel over 8-bit levels; targets in [0, 1] map to round(255 x)."""

    Config = CategoricalConfig
    unit_interval = True

    def num_params(self, channels: int) -> int:
        return channels * LEVELS

    def _logits(self, params: torch.Tensor) -> torch.Tensor:
        return rearrange(params, "b s (c k) -> b s c k", k=LEVELS)

    def site_log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        levels = (x * (LEVELS - 1)).round().long()
        log_p = self._logits(params).log_softmax(-1)
        return log_p.gather(-1, levels.unsqueeze(-1)).squeeze(-1).sum(-1)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        values = torch.linspace(0, 1, LEVELS, device=params.device)
        return (self._logits(params).softmax(-1) * values).sum(-1)

    def sample(self, params: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        probs = rearrange(self._logits(params).softmax(-1), "b s c k -> (b s c) k")
        levels = torch.multinomial(probs, 1, generator=generator)
        return rearrange(levels, "(b s c) 1 -> b s c", b=params.shape[0], s=params.shape[1]).float() / (
            LEVELS - 1
        )


# ---------------------------------------------------------------------------------------------


@dataclass
class LogisticMixtureConfig(LikelihoodConfig):
    components: PositiveInt = 10  # mixture components per pixel


@register_likelihood("logistic_mixture")
class DiscretizedLogisticMixture(LikelihoodHead):
    """PixelCNN++'s discretised mixture of logistics (Salimans et al. 2017).

    Per site: mixture logits, and for each component a mean and log-scale per channel plus linear
    coefficients that let channel c's mean depend on channels < c (R -> G -> B). Targets in [0, 1]
    are rescaled to [-1, 1] and binned into 256 levels; the end bins take the tails.
    """

    Config = LogisticMixtureConfig
    unit_interval = True

    def num_params(self, channels: int) -> int:
        coefficients = channels * (channels - 1) // 2
        return self.config.components * (1 + 2 * channels + coefficients)

    def _split(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        c, m = self.channels, self.config.components
        params = rearrange(params, "b s (m p) -> b s m p", m=m)
        logits = params[..., 0]
        means = params[..., 1 : 1 + c]
        log_scales = params[..., 1 + c : 1 + 2 * c].clamp(min=-7.0)
        coefficients = torch.tanh(params[..., 1 + 2 * c :])
        return logits, means, log_scales, coefficients

    def _conditional_means(
        self, means: torch.Tensor, coefficients: torch.Tensor, x: torch.Tensor
    ) -> torch.Tensor:
        """Shift channel c's mean by coefficient-weighted values of channels < c. x: (B, S, 1, C)."""
        shifted = [means[..., 0]]
        k = 0
        for c in range(1, self.channels):
            shift = sum(coefficients[..., k + j] * x[..., j] for j in range(c))
            shifted.append(means[..., c] + shift)
            k += c
        return torch.stack(shifted, dim=-1)

    def site_log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        logits, means, log_scales, coefficients = self._split(params)
        x = rearrange(2 * x - 1, "b s c -> b s 1 c")  # [-1, 1], broadcast over components
        means = self._conditional_means(means, coefficients, x)
        centered = x - means
        inv_scale = torch.exp(-log_scales)
        half_bin = 1.0 / (LEVELS - 1)
        cdf_plus = torch.sigmoid(inv_scale * (centered + half_bin))
        cdf_minus = torch.sigmoid(inv_scale * (centered - half_bin))
        log_cdf_plus = F.logsigmoid(inv_scale * (centered + half_bin))  # lowest bin: P(X <= x + 1/255)
        log_one_minus_cdf_minus = -F.softplus(inv_scale * (centered - half_bin))  # highest bin
        mid = inv_scale * centered
        # Log-density at the bin centre times the bin width: used when the bin mass underflows.
        log_pdf_mid = mid - log_scales - 2 * F.softplus(mid) + math.log(2 * half_bin)
        bin_mass = (cdf_plus - cdf_minus).clamp(min=1e-12)
        interior = torch.where(cdf_plus - cdf_minus > 1e-5, torch.log(bin_mass), log_pdf_mid)
        log_probs = torch.where(
            x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_minus, interior)
        )
        return torch.logsumexp(log_probs.sum(-1) + logits.log_softmax(-1), dim=-1)

    def _component(self, logits: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        flat = rearrange(logits.softmax(-1), "b s m -> (b s) m")
        index = torch.multinomial(flat, 1, generator=generator)
        return rearrange(index, "(b s) 1 -> b s 1", b=logits.shape[0])

    def _decode(
        self, params: torch.Tensor, noise: torch.Tensor | None, generator: torch.Generator | None
    ) -> torch.Tensor:
        """Channel by channel: pick values (mean when noise is None), feeding each into the next
        channel's conditional mean."""
        logits, means, log_scales, coefficients = self._split(params)
        if noise is None:
            weights = logits.softmax(-1).unsqueeze(-1)  # mixture mean
        else:
            weights = (
                F.one_hot(self._component(logits, generator).squeeze(-1), self.config.components)
                .unsqueeze(-1)
                .to(params.dtype)
            )
        values: list[torch.Tensor] = []
        k = 0
        for c in range(self.channels):
            mean = means[..., c] + sum(coefficients[..., k + j] * values[j].unsqueeze(-1) for j in range(c))
            k += c
            if noise is not None:
                mean = mean + torch.exp(log_scales[..., c]) * noise[..., c].unsqueeze(-1)
            values.append(((weights.squeeze(-1) * mean).sum(-1)).clamp(-1, 1))
        return (torch.stack(values, dim=-1) + 1) / 2

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return self._decode(params, None, None)

    def sample(self, params: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        shape = (*params.shape[:2], self.channels)
        uniform = torch.rand(shape, generator=generator, device=params.device).clamp(1e-5, 1 - 1e-5)
        logistic = torch.log(uniform) - torch.log1p(-uniform)
        sample = self._decode(params, logistic, generator)
        return (sample * (LEVELS - 1)).round() / (LEVELS - 1)
