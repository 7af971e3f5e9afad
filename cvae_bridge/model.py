"""ConditionalVAE: one generic conditional VAE assembled from registered parts.

    conditions c_i --encoder--> tokens (+ type embedding) --concat--> C
    targets    x_j --encoder--> tokens                      (training only: feed the posterior)
    posterior  q(z | x, c)      from the target tokens and the chosen condition tokens
    prior      p(z) = N(0, I)   or a learned p(z | c) from C
    decoders   x_j <-- head_j(decoder_j(z, C))               log p(x_j | z, c), mean, sample
    loss       sum_j w_j * -log p(x_j | z, c) + beta(step) * KL(q || p)

A batch is a dict: modality name -> tensor (or list of strings for text); a target may come with
a boolean mask `<name>_mask` of shape (B, sites), True where the target counts (e.g. the steps of
an action chunk that lie inside the episode). All losses are in nats per example.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection
from pathlib import Path
from typing import Any, Literal

import torch
from einops import rearrange, repeat
from torch import nn

from .config import ModelConfig, RunConfig, unset_sizes
from .errors import ConfigError, InputError, UsageError
from .hub import load_pretrained, push_to_hub, resolve_folder, save_pretrained
from .latent import gaussian_log_prob, reparameterize
from .modalities.base import Tokens
from .registry import DECODERS, ENCODERS, LIKELIHOODS, POSTERIORS, PRIORS
from .utils.runtime import capturing_cuda_graph

Batch = dict[str, Any]
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Normalizer(nn.Module):
    """Per-feature standardisation (last axis) with statistics saved in the model's weights."""

    def __init__(self, features: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(features))
        self.register_buffer("std", torch.ones(features))
        self.register_buffer("fitted", torch.tensor(False))

    def set(self, mean: torch.Tensor, std: torch.Tensor, min_std: float = 1e-2) -> None:
        self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32).reshape(self.mean.shape))
        # Clipped from below so that a constant feature (a gripper never used) is not blown up.
        self.std.copy_(torch.as_tensor(std, dtype=torch.float32).reshape(self.std.shape).clamp(min=min_std))
        self.fitted.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std + self.mean


def _check_decoder_layout(decoder: nn.Module, where: str) -> None:
    """A decoder sets the layout the model and its likelihood head read; a plugin that forgets one
    would otherwise fail later with an AttributeError naming no config key."""
    problems = []
    shape = getattr(decoder, "event_shape", None)
    if not (isinstance(shape, tuple) and shape and all(isinstance(s, int) and s > 0 for s in shape)):
        problems.append(f"event_shape (a tuple of positive ints, got {shape!r})")
    for attribute in ("sites", "channels", "out_features"):
        value = getattr(decoder, attribute, None)
        if not (isinstance(value, int) and value > 0):
            problems.append(f"{attribute} (a positive int, got {value!r})")
    if problems:
        raise ConfigError(f"{where}: {type(decoder).__qualname__}.__init__ must set " + ", ".join(problems))


class ConditionalVAE(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        d, latent = config.d_model, config.latent_dim
        for name in [*config.conditions, *config.targets]:
            if not _NAME.match(name):
                raise ConfigError(f"model: modality name {name!r} must be an identifier (letters, digits, _)")
        overlap = set(config.conditions) & set(config.targets)
        if overlap:
            raise ConfigError(f"model: {sorted(overlap)} cannot be both a condition and a target")
        if not config.targets:
            raise ConfigError("model.targets: at least one target modality is needed")
        unset = unset_sizes(config)
        if unset:
            raise ConfigError(
                f"{', '.join(unset)}: unset; training on a robot dataset takes such sizes from its features "
                f"(meta/info.json, the HDF5 shapes); to build the model without data, give them"
            )

        self.condition_encoders = nn.ModuleDict(
            {n: ENCODERS.get(c.type)(c, d) for n, c in config.conditions.items()}
        )
        self.target_encoders = nn.ModuleDict(
            {n: ENCODERS.get(t.encoder.type)(t.encoder, d) for n, t in config.targets.items()}
        )
        conditioned = bool(config.conditions)
        self.decoders = nn.ModuleDict(
            {
                n: DECODERS.get(t.decoder.type)(t.decoder, d, latent, conditioned)
                for n, t in config.targets.items()
            }
        )
        for name, decoder in self.decoders.items():
            _check_decoder_layout(decoder, f"model.targets.{name}.decoder")
        self.heads = nn.ModuleDict(
            {
                n: LIKELIHOODS.get(t.likelihood.type)(t.likelihood, dec.out_features, dec.sites, dec.channels)
                for (n, t), dec in zip(config.targets.items(), self.decoders.values())
            }
        )
        # A learned embedding per modality tells the attention layers which tokens came from where.
        self.type_embeddings = nn.ParameterDict(
            {n: nn.Parameter(torch.zeros(d)) for n in [*config.conditions, *config.targets]}
        )

        wanted = config.posterior.conditions
        self.posterior_conditions = list(config.conditions) if wanted is None else list(wanted)
        unknown = sorted(set(self.posterior_conditions) - set(config.conditions))
        if unknown:
            raise ConfigError(
                f"model.posterior.conditions: {unknown} are not condition modalities; known: {sorted(config.conditions)}"
            )
        self.posterior = POSTERIORS.get(config.posterior.type)(
            config.posterior, d, latent, len(config.targets) + len(self.posterior_conditions)
        )
        network = getattr(config.prior, "network", None)
        if network is not None and network.conditions is not None:
            raise ConfigError(
                "model.prior.network.conditions: the prior always sees every condition; remove this key"
            )
        self.prior = PRIORS.get(config.prior.type)(config.prior, d, latent, len(config.conditions))
        if config.deterministic and self.prior.conditional:
            raise ConfigError(
                "model.deterministic: a deterministic autoencoder has no KL term, so a learned prior would never be trained"
            )

        known = {**config.conditions, **{n: t.encoder for n, t in config.targets.items()}}
        missing = sorted(set(config.normalize) - set(known))
        if missing:
            raise ConfigError(
                f"model.normalize: {missing} are not modalities of this model; known: {sorted(known)}"
            )
        self.normalizers = nn.ModuleDict({n: Normalizer(self._feature_size(n)) for n in config.normalize})

    def _feature_size(self, name: str) -> int:
        """Size of the last axis of modality `name`, the axis that normalisation works on."""
        cfg = self.config.conditions.get(name) or self.config.targets[name].encoder
        for key in ("dim", "shape"):
            value = getattr(cfg, key, None)
            if value is not None:
                return value if isinstance(value, int) else value[-1]
        raise ConfigError(
            f"model.normalize: modality {name!r} ({cfg.type}) has no feature dimension to normalise"
        )

    # -- saving ------------------------------------------------------------------------------

    def save_pretrained(self, directory: str | Path, run_config: RunConfig | None = None) -> Path:
        """Write `config.json` + `model.safetensors` (atomically), and `run_config.json` when
        given: the training run, for tools that need more than the model (the policy's
        observation keys, evaluation's dataset; `hub.read_run_config` reads it)."""
        return save_pretrained(self, directory, run_config)

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        device: str | torch.device = "cpu",
        revision: str | None = None,
        cache_dir: str | Path | None = None,
    ) -> ConditionalVAE:
        """Rebuild from a saved folder, or a Hub repo id (the local Hugging Face cache first, at
        `revision`); weights load strictly. Returned in eval mode."""
        return load_pretrained(cls, resolve_folder(directory, revision, cache_dir), device)

    def push_to_hub(self, repo_id: str, run_config: RunConfig | None = None, **options: Any) -> str:
        """Upload the model folder (weights, config, card) to a Hub repo; returns the commit URL.
        `options`: private, token, commit_message."""
        return push_to_hub(self, repo_id, run_config, **options)

    # -- input handling --------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def external_modules(self) -> list[str]:
        """Fully qualified names of submodules whose weights are not saved (frozen pretrained parts)."""
        names = []
        for group in ("condition_encoders", "target_encoders"):
            for modality, encoder in getattr(self, group).items():
                names += [f"{group}.{modality}.{sub}" for sub in encoder.external_modules()]
        return names

    def lr_multipliers(self) -> dict[str, float]:
        """Fully qualified submodule names -> learning-rate factor, as the encoders declare them."""
        return {
            f"{group}.{modality}.{sub}": factor
            for group in ("condition_encoders", "target_encoders")
            for modality, encoder in getattr(self, group).items()
            for sub, factor in encoder.lr_multipliers().items()
        }

    def check_batch(self, batch: Batch, targets: bool = True) -> int:
        """Validate a batch before use; returns the batch size. Errors name the offending key."""
        if not isinstance(batch, dict):
            raise InputError(f"batch: expected a dict of modality name -> values, got {type(batch).__name__}")
        needed = [*self.condition_encoders, *(self.target_encoders if targets else [])]
        missing = [n for n in needed if n not in batch]
        if missing:
            raise InputError(
                f"batch: missing modality {missing}; the model needs {needed}, the batch has {sorted(batch)}"
            )
        sizes = {}
        for name, encoder in self.condition_encoders.items():
            encoder.check(batch[name], name)
            sizes[name] = encoder.batch_size(batch[name])
        if targets:
            for name, encoder in self.target_encoders.items():
                value, decoder = batch[name], self.decoders[name]
                encoder.check(value, name)
                if tuple(value.shape[1:]) != decoder.event_shape:
                    raise InputError(
                        f"batch[{name!r}]: expected shape (batch, {', '.join(map(str, decoder.event_shape))}), got {tuple(value.shape)}"
                    )
                self.heads[name].check(value, name)
                mask = batch.get(f"{name}_mask")
                if mask is not None and (
                    mask.dtype != torch.bool or tuple(mask.shape) != (value.shape[0], decoder.sites)
                ):
                    raise InputError(
                        f"batch[{name + '_mask'!r}]: expected a bool tensor of shape ({value.shape[0]}, {decoder.sites}), got {mask.dtype} {tuple(mask.shape)}"
                    )
                sizes[name] = encoder.batch_size(value)
        if len(set(sizes.values())) > 1:
            raise InputError(f"batch: modalities disagree on the batch size: {sizes}")
        return next(iter(sizes.values()), 1)

    def _normalized(self, batch: Batch) -> Batch:
        # A CUDA graph's capture reads nothing on the host: it records a call already checked.
        for name, normalizer in self.normalizers.items():
            if not capturing_cuda_graph() and not bool(normalizer.fitted):
                raise UsageError(
                    f"normalisation statistics for {name!r} were never set: call model.set_normalization or train through cvae_bridge.training"
                )
        return {
            k: self.normalizers[k](v) if k in self.normalizers and k in batch else v for k, v in batch.items()
        }

    def set_normalization(
        self, stats: dict[str, tuple[torch.Tensor, torch.Tensor]], min_std: float = 1e-2
    ) -> None:
        """Set per-feature mean and std for each modality listed in `model.normalize`."""
        missing = sorted(set(self.normalizers) - set(stats))
        if missing:
            raise ConfigError(f"normalisation statistics missing for {missing}")
        for name, (mean, std) in stats.items():
            if name in self.normalizers:
                self.normalizers[name].set(mean, std, min_std)

    # -- the model ---------------------------------------------------------------------------

    def encode_conditions(self, batch: Batch) -> dict[str, Tokens]:
        return {
            n: self._typed(n, enc(batch[n], batch.get(f"{n}_mask")))
            for n, enc in self.condition_encoders.items()
        }

    def _typed(self, name: str, tokens: Tokens) -> Tokens:
        return Tokens(tokens.x + self.type_embeddings[name], tokens.mask)

    def _condition_sequence(self, conditions: dict[str, Tokens], batch: int) -> Tokens:
        return Tokens.cat(list(conditions.values()), batch, self.config.d_model, self.device)

    def _posterior(self, batch: Batch, conditions: dict[str, Tokens]) -> tuple[torch.Tensor, torch.Tensor]:
        parts = [
            self._typed(n, enc(batch[n], batch.get(f"{n}_mask"))) for n, enc in self.target_encoders.items()
        ]
        parts += [conditions[n] for n in self.posterior_conditions]
        return self.posterior(parts)

    def _prior(self, conditions: dict[str, Tokens], batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.prior(list(conditions.values()), batch)
        return mu.to(self.device), logvar.to(self.device)

    def _decode(self, z: torch.Tensor, sequence: Tokens) -> dict[str, torch.Tensor]:
        """Distribution parameters (B, sites, P) of every target."""
        return {n: self.heads[n](dec(z, sequence)) for n, dec in self.decoders.items()}

    def _target_log_probs(self, params: dict[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        return {
            n: self.heads[n].log_prob(params[n], self.decoders[n].to_sites(batch[n]), batch.get(f"{n}_mask"))
            for n in self.decoders
        }

    def beta(self, step: int | None) -> float:
        kl = self.config.kl
        if step is None or kl.warmup_steps <= 0:
            return kl.beta
        return kl.beta * min(1.0, step / kl.warmup_steps)

    def forward(
        self, batch: Batch, step: int | None = None, reconstructions: Collection[str] = ()
    ) -> dict[str, torch.Tensor]:
        """Negative ELBO and its parts for a training batch.

        Returns `loss` (what to minimise: weighted reconstruction + beta * KL with free bits),
        `nelbo` (unweighted -ELBO), `kl`, and `rec_<target>` (-log p(x_j | z, c)), all in nats
        per example averaged over the batch, and `beta`. For each target named in
        `reconstructions`, also `reconstruction_<target>`: the likelihood's mean (B, *event_shape),
        differentiable, for training-only losses on it (training/losses.py).
        """
        size = self.check_batch(batch)
        batch = self._normalized(batch)
        conditions = self.encode_conditions(batch)
        mu_q, logvar_q = self._posterior(batch, conditions)
        z = mu_q if self.config.deterministic else reparameterize(mu_q, logvar_q)
        params = self._decode(z, self._condition_sequence(conditions, size))
        log_probs = self._target_log_probs(params, batch)

        out: dict[str, torch.Tensor] = {}
        terms: list[torch.Tensor] = []  # the parts of the optimised loss
        for name, log_p in log_probs.items():
            target = self.config.targets[name]
            rec = -log_p.mean()
            out[f"rec_{name}"] = rec.detach()
            if target.reduction == "mean":
                rec = rec / self._elements(name, batch)
            terms.append(rec if target.weight == 1.0 else target.weight * rec)
        nelbo = sum(out.values())
        if not self.config.deterministic:
            kl_dims = self.prior.kl(mu_q, logvar_q, list(conditions.values())).mean(0)  # (L,), batch-averaged
            kl = kl_dims.sum()
            beta = self.beta(step)
            free = kl_dims.clamp(min=self.config.kl.free_bits).sum() if self.config.kl.free_bits > 0 else kl
            terms.append(beta * free)
            out["kl"] = kl.detach()
            out["beta"] = torch.tensor(beta)
            nelbo = nelbo + out["kl"]
        out["nelbo"] = nelbo
        out["loss"] = sum(terms[1:], terms[0])
        for name in reconstructions:
            out[f"reconstruction_{name}"] = self.decoders[name].from_sites(
                self.heads[name].mean(params[name])
            )
        return out

    def _elements(self, name: str, batch: Batch) -> torch.Tensor | float:
        """Number of counted elements per example of a target (its unmasked sites x channels)."""
        decoder = self.decoders[name]
        mask = batch.get(f"{name}_mask")
        sites = decoder.sites if mask is None else mask.sum(1).float().mean().clamp(min=1.0)
        return sites * decoder.channels

    # -- inference ------------------------------------------------------------------------------

    def _outputs(
        self,
        params: dict[str, torch.Tensor],
        output: Literal["mean", "sample"],
        generator: torch.Generator | None,
    ) -> dict[str, torch.Tensor]:
        """Likelihood means or draws, in each target's natural shape and units."""
        result = {}
        for name, p in params.items():
            head = self.heads[name]
            value = self.decoders[name].from_sites(
                head.mean(p) if output == "mean" else head.sample(p, generator)
            )
            result[name] = self.normalizers[name].inverse(value) if name in self.normalizers else value
        return result

    @torch.no_grad()
    def encode(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior q(z | x, c): mean and log-variance, each (B, latent_dim)."""
        self.check_batch(batch)
        batch = self._normalized(batch)
        return self._posterior(batch, self.encode_conditions(batch))

    @torch.no_grad()
    def prior_params(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Prior p(z | c) for the conditions of `batch` (N(0, I) for a standard prior): mean and
        log-variance, each (B, latent_dim). Targets in the batch only set B for a model
        without conditions."""
        size = self.check_batch(batch, targets=all(n in batch for n in self.target_encoders))
        return self._prior(self.encode_conditions(self._normalized(batch)), size)

    @torch.no_grad()
    def decode(
        self,
        z: torch.Tensor,
        conditions: Batch,
        output: Literal["mean", "sample"] = "mean",
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """Targets from latents z (B, latent_dim) and a condition batch, in their natural shape
        and units (normalisation undone)."""
        size = self.check_batch(conditions, targets=False) if self.condition_encoders else z.shape[0]
        conditions = self._normalized(conditions)
        sequence = self._condition_sequence(self.encode_conditions(conditions), size)
        if self.condition_encoders and size != z.shape[0]:
            raise InputError(f"decode: {z.shape[0]} latents for a condition batch of {size}")
        return self._outputs(self._decode(z, sequence), output, generator)

    @torch.no_grad()
    def sample(
        self,
        conditions: Batch | None = None,
        num_samples: int = 1,
        temperature: float = 1.0,
        latent: Literal["sample", "mean"] = "sample",
        output: Literal["mean", "sample"] = "mean",
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """Generate targets from conditions.

        z comes from the prior: drawn with its standard deviation scaled by `temperature`, or its
        mean (`latent="mean"`; z = 0 under N(0, I), as ACT does at inference). Each condition
        example gives `num_samples` outputs; results are (B * num_samples, ...), the samples of
        example b in rows b * num_samples ... (b + 1) * num_samples - 1. `output` picks the
        likelihood's mean or a draw from it.
        """
        conditions = conditions or {}
        size = self.check_batch(conditions, targets=False) if self.condition_encoders else 1
        normalized = self._normalized(conditions)
        encoded = {n: _repeat_tokens(t, num_samples) for n, t in self.encode_conditions(normalized).items()}
        total = size * num_samples
        mu, logvar = self._prior(encoded, total)
        z = mu if latent == "mean" else reparameterize(mu, logvar, temperature, generator)
        sequence = self._condition_sequence(encoded, total)
        return self._outputs(self._decode(z, sequence), output, generator)

    @torch.no_grad()
    def reconstruct(
        self, batch: Batch, latent: Literal["sample", "mean"] = "mean"
    ) -> dict[str, torch.Tensor]:
        """Encode targets, decode again: the likelihood means, in the targets' natural shape."""
        mu, logvar = self.encode(batch)
        z = mu if latent == "mean" or self.config.deterministic else reparameterize(mu, logvar)
        return self.decode(z, {n: batch[n] for n in self.condition_encoders})

    @torch.no_grad()
    def log_likelihood(self, batch: Batch, num_samples: int = 1000, chunk_size: int = 500) -> torch.Tensor:
        """Importance-weighted estimate of log p(x | c) per example, in nats (Burda et al. 2016):

            log (1/K) sum_k p(x | z_k, c) p(z_k | c) / q(z_k | x, c),   z_k ~ q(z | x, c).

        A lower bound that tightens as K grows; K = 1 gives the ELBO. Samples are processed
        `chunk_size` at a time per example to bound memory.
        """
        if self.config.deterministic:
            raise ConfigError("log_likelihood: a deterministic autoencoder defines no likelihood")
        size = self.check_batch(batch)
        batch = self._normalized(batch)
        conditions = self.encode_conditions(batch)
        mu_q, logvar_q = self._posterior(batch, conditions)
        mu_p, logvar_p = self._prior(conditions, size)
        # The Jacobian of normalisation: log p(x) = log p(x_normalised) - sum log std.
        correction = sum(
            self.normalizers[n].std.log().sum()
            * (self.decoders[n].sites if f"{n}_mask" not in batch else batch[f"{n}_mask"].sum(1))
            for n in self.decoders
            if n in self.normalizers
        )
        weights = []
        for start in range(0, num_samples, chunk_size):
            k = min(chunk_size, num_samples - start)
            expand = lambda t, k=k: repeat(t, "b ... -> (b k) ...", k=k)  # noqa: E731
            z = reparameterize(expand(mu_q), expand(logvar_q))
            sequence = self._condition_sequence(
                {n: _repeat_tokens(t, k) for n, t in conditions.items()}, size * k
            )
            targets = {n: expand(batch[n]) for n in self.decoders}
            targets.update(
                {f"{n}_mask": expand(batch[f"{n}_mask"]) for n in self.decoders if f"{n}_mask" in batch}
            )
            log_px = sum(self._target_log_probs(self._decode(z, sequence), targets).values())
            log_w = (
                log_px
                + gaussian_log_prob(z, expand(mu_p), expand(logvar_p))
                - gaussian_log_prob(z, expand(mu_q), expand(logvar_q))
            )
            weights.append(rearrange(log_w, "(b k) -> b k", k=k))
        log_w = torch.cat(weights, dim=1)
        return torch.logsumexp(log_w, dim=1) - math.log(num_samples) - correction


def _repeat_tokens(tokens: Tokens, n: int) -> Tokens:
    if n == 1:
        return tokens
    return Tokens(repeat(tokens.x, "b t d -> (b n) t d", n=n), repeat(tokens.mask, "b t -> (b n) t", n=n))
