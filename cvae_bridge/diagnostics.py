"""Latent-space diagnostics: how much of z the model uses, and whether the posterior collapsed.

    kl_per_dim       E_x[KL(q(z_u | x, c) || p(z_u | c))] for each latent dimension u, in nats
    active_units     #{u : Var_x(E_q[z_u | x, c]) > 0.01}: a unit whose posterior mean does not
                     move with the input carries nothing (Burda, Grosse & Salakhutdinov 2016)
    mutual_info      I(x; z) under q, in nats (Hoffman & Johnson 2016; He et al. 2019):
                         I = E_x[KL(q(z|x) || p(z))] - KL(q(z) || p(z))
                           = E_x E_{z ~ q(z|x)}[log q(z|x) - log q(z)]
                     estimated with the aggregate posterior q(z) = 1/N sum_n q(z | x_n) over the
                     N examples given and one draw z_n ~ q(z | x_n) per example. The same draw
                     enters both log-densities, so a posterior that ignores x gives exactly 0;
                     the estimate never exceeds log N (N examples can tell at most N inputs
                     apart), reported as `mutual_info_max`.

With conditions c, x stands for the pair (x, c) and the KL is to the model's prior p(z | c).
A posterior has collapsed (Bowman et al. 2016) when z carries nothing about x: no active unit,
or a total KL below `COLLAPSE_KL` nats. The trainer checks this at every periodic evaluation.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from einops import rearrange

from .errors import InputError
from .latent import gaussian_kl, gaussian_log_prob, reparameterize
from .model import Batch, ConditionalVAE

ACTIVE_VARIANCE = 0.01  # Burda et al.'s threshold on Var_x(E_q[z_u])
COLLAPSE_KL = 0.1  # nats, summed over the latent dimensions
PAIRS_PER_CHUNK = 2**22  # (z_i, x_j) pairs times dimensions at a time: ~16 MB of float32


@torch.no_grad()
def latent_parameters(model: ConditionalVAE, batches: Iterable[Batch]) -> dict[str, torch.Tensor]:
    """Posterior and prior parameters over the batches: `mu_q`, `logvar_q`, `mu_p`, `logvar_p`,
    each (N, latent_dim), on the CPU."""
    parts: dict[str, list[torch.Tensor]] = {"mu_q": [], "logvar_q": [], "mu_p": [], "logvar_p": []}
    for batch in batches:
        values = (*model.encode(batch), *model.prior_params(batch))
        for key, value in zip(parts, values):
            parts[key].append(value.float().cpu())
    if not parts["mu_q"]:
        raise InputError("latent diagnostics: no batches were given")
    return {key: torch.cat(values) for key, values in parts.items()}


def kl_per_dimension(
    mu_q: torch.Tensor, logvar_q: torch.Tensor, mu_p: torch.Tensor, logvar_p: torch.Tensor
) -> torch.Tensor:
    """(latent_dim,) KL(q || p) of each dimension, averaged over the examples."""
    return gaussian_kl(mu_q, logvar_q, mu_p, logvar_p).mean(0)


def active_units(mu_q: torch.Tensor, threshold: float = ACTIVE_VARIANCE) -> int:
    """Dimensions whose posterior mean varies across the examples by more than `threshold`."""
    if mu_q.shape[0] < 2:
        raise InputError(
            f"active units: the variance over examples needs at least 2 examples, got {mu_q.shape[0]}"
        )
    return int((mu_q.var(0) > threshold).sum())


def mutual_information(
    mu_q: torch.Tensor, logvar_q: torch.Tensor, generator: torch.Generator | None = None
) -> float:
    """Monte Carlo estimate of I(x; z) in nats, as in the module docstring."""
    n, dims = mu_q.shape
    z = reparameterize(mu_q, logvar_q, generator=generator)
    log_q_own = gaussian_log_prob(z, mu_q, logvar_q)
    # log q(z_i) = logsumexp_j log q(z_i | x_j) - log N, a chunk of draws i against all examples j.
    chunk = max(1, PAIRS_PER_CHUNK // (n * dims))
    mu, logvar = rearrange(mu_q, "j l -> 1 j l"), rearrange(logvar_q, "j l -> 1 j l")
    log_q_aggregate = torch.cat(
        [
            torch.logsumexp(gaussian_log_prob(rearrange(part, "i l -> i 1 l"), mu, logvar), dim=1)
            - math.log(n)
            for part in z.split(chunk)
        ]
    )
    return float((log_q_own - log_q_aggregate).mean())


def latent_diagnostics(model: ConditionalVAE, batches: Iterable[Batch], seed: int = 0) -> dict[str, Any]:
    """Every diagnostic of the module docstring over the examples of `batches`. A deterministic
    autoencoder has no KL and no finite mutual information: only its active units are counted."""
    latent = latent_parameters(model, batches)
    n = latent["mu_q"].shape[0]
    result: dict[str, Any] = {
        "latent_dim": model.config.latent_dim,
        "active_units": active_units(latent["mu_q"]),
        "diagnostic_examples": n,
    }
    if model.config.deterministic:
        return result
    kl = kl_per_dimension(**latent)
    result.update(
        kl_per_dim=[round(v, 4) for v in kl.tolist()],
        kl_total=float(kl.sum()),
        mutual_info=mutual_information(
            latent["mu_q"], latent["logvar_q"], torch.Generator().manual_seed(seed)
        ),
        mutual_info_max=math.log(n),
        posterior_collapse=result["active_units"] == 0 or float(kl.sum()) < COLLAPSE_KL,
    )
    return result


def training_diagnostics(model: ConditionalVAE, batches: list[Batch]) -> tuple[dict[str, float], str | None]:
    """Figures for the `val` line of the training log (active units, mutual information), and a
    warning when the posterior has collapsed on these batches (None otherwise). Draws its noise
    from its own generator: the global random stream is left as it was."""
    figures = latent_diagnostics(model, batches)
    if model.config.deterministic:
        return {"active_units": figures["active_units"]}, None
    warning = None
    if figures["posterior_collapse"]:
        warning = (
            f"posterior collapse: {figures['active_units']} of {figures['latent_dim']} latent units active "
            f"(Var_x E[z_u] > {ACTIVE_VARIANCE}), KL {figures['kl_total']:.3g} nats: z carries almost nothing about the input. "
            f"Try KL warm-up (model.kl.warmup_steps), free bits (model.kl.free_bits) or a smaller model.kl.beta"
        )
    return {"active_units": figures["active_units"], "mutual_info": figures["mutual_info"]}, warning
