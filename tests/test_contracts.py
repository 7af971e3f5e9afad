"""Every registered component meets the contract the model relies on.

Parametrised over the registries (`list_encoders()`, `list_decoders()`, `list_likelihoods()`,
`list_posteriors()`, `list_priors()`) and the plugin template's parts. Each component has a tester
below: a tiny config and a dummy input. A newly registered component fails here until it has one.
Shared checks: output shapes and masks, gradients reach every trainable weight, a save/load round
trip through safetensors rebuilds the same function, and the same seed builds the same component.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from cvae_bridge import Tokens, component, registry
from cvae_bridge.config import DecoderConfig, EncoderConfig, LikelihoodConfig, PosteriorConfig, PriorConfig
from cvae_bridge.modalities.base import KINDS

D, LATENT, B = 8, 3, 2
ROOT = Path(__file__).resolve().parents[1]


def plugin_components() -> dict[str, dict[str, type]]:
    """The plugin template's registered classes, kind -> name -> class, without leaving them in the
    registries (other tests list what is registered)."""
    registries = [registry.ENCODERS, registry.DECODERS, registry.DATASETS]
    before = [dict(r._items) for r in registries]
    sys.path.insert(0, str(ROOT / "examples" / "plugin_template"))
    try:
        import cvae_bridge_waveform  # noqa: F401  (registers on import)
    finally:
        sys.path.pop(0)
    found = {
        r.kind: {n: c for n, c in r._items.items() if n not in old} for r, old in zip(registries, before)
    }
    for r, old in zip(registries, before):
        r._items = old
    return found


PLUGINS = plugin_components()


@dataclass
class EncoderSpec:
    config: dict[str, Any] = field(default_factory=dict)
    # generator -> (input, mask or None): a batch of B examples
    inputs: Callable[[torch.Generator], tuple[Any, torch.Tensor | None]] | None = None


def _images(channels: int, size: int) -> Callable:
    return lambda g: (torch.rand(B, channels, size, size, generator=g), None)


def _chunk(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    mask = torch.ones(B, 4, dtype=torch.bool)
    mask[1, 2:] = False
    return torch.randn(B, 4, 2, generator=g), mask


ENCODER_TESTERS = {
    "action": EncoderSpec({"dim": 2, "chunk_size": 4}, _chunk),
    "image": EncoderSpec({"channels": 1, "widths": [4, 8]}, _images(1, 8)),
    "image_backbone": EncoderSpec({"stride": 32, "size": [32, 32]}, _images(3, 32)),
    "text": EncoderSpec({"output": "tokens", "max_length": 6}, lambda g: (["a red cube", "two"], None)),
    "vector": EncoderSpec(
        {"shape": [2, 3], "hidden": [4], "activation": "relu"},
        lambda g: (torch.randn(B, 2, 3, generator=g), None),
    ),
    "waveform": EncoderSpec({"length": 16, "width": 4}, lambda g: (torch.randn(B, 1, 16, generator=g), None)),
}
DECODER_TESTERS = {
    "action": {"dim": 2, "chunk_size": 4, "encoder_layers": 1, "decoder_layers": 1, "heads": 2, "ff_dim": 16},
    "image": {"channels": 1, "size": [8, 8], "widths": [4, 8]},
    "vector": {"shape": [2, 3], "hidden": [4]},
    "waveform": {"length": 16, "hidden": 8},
}
LIKELIHOOD_TESTERS = {
    "bernoulli": {},
    "categorical": {},
    "gaussian": {"scale": "predicted"},
    "laplace": {},
    "logistic_mixture": {"components": 2},
}
POSTERIOR_TESTERS = {"mlp": {"hidden": [4]}, "transformer": {"layers": 1, "heads": 2, "ff_dim": 16}}
PRIOR_TESTERS = {"conditional": {"network": {"type": "mlp", "hidden": [4]}}, "standard": {}}


def components(kind: str) -> list[str]:
    return sorted([*registry.REGISTRIES[kind].names(), *PLUGINS.get(kind, {})])


def component_class(kind: str, name: str) -> type:
    return PLUGINS.get(kind, {}).get(name) or registry.REGISTRIES[kind].get(name)


def spec_for(testers: dict, kind: str, name: str) -> Any:
    if name not in testers:
        pytest.fail(
            f"{kind} {name!r} has no tester: add a tiny config and dummy input for it in {Path(__file__).name}"
        )
    return testers[name]


def config_of(kind: str, name: str, base: type, fields: dict) -> Any:
    cls = component_class(kind, name)
    return (
        cls.Config(**{"type": name, **fields})
        if name in PLUGINS.get(kind, {})
        else component(base, name, **fields)
    )


def trainable_without_grad(module: torch.nn.Module) -> list[str]:
    return [
        n
        for n, p in module.named_parameters()
        if p.requires_grad and (p.grad is None or not p.grad.isfinite().all())
    ]


def tokens(g: torch.Generator, lengths: tuple[int, ...] = (3, 2)) -> list[Tokens]:
    """Two modalities' token sequences; the second example's last token of each is padding."""
    parts = []
    for n in lengths:
        mask = torch.ones(B, n, dtype=torch.bool)
        mask[1, -1] = False
        parts.append(Tokens(torch.randn(B, n, D, generator=g), mask))
    return parts


def with_padding_changed(parts: list[Tokens]) -> list[Tokens]:
    return [Tokens(torch.where(p.mask[..., None], p.x, p.x + 100.0), p.mask) for p in parts]


def round_trip(
    module: torch.nn.Module, build: Callable[[], torch.nn.Module], tmp_path: Path
) -> torch.nn.Module:
    """Save `module`'s own weights (not the external ones) with safetensors, load them into a
    fresh build made from another seed."""
    external = tuple(f"{n}." for n in getattr(module, "external_modules", list)())
    state = {k: v.contiguous() for k, v in module.state_dict().items() if not k.startswith(external)}
    save_file(state, str(tmp_path / "weights.safetensors"))
    torch.manual_seed(123)
    fresh = build()
    missing, unexpected = fresh.load_state_dict(
        load_file(str(tmp_path / "weights.safetensors")), strict=False
    )
    assert not unexpected and all(k.startswith(external) for k in missing), (missing, unexpected)
    return fresh.eval()


def built_twice(build: Callable[[], torch.nn.Module]) -> tuple[torch.nn.Module, torch.nn.Module]:
    modules = []
    for _ in range(2):
        torch.manual_seed(0)
        modules.append(build().eval())
    return modules[0], modules[1]


# --- encoders ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", components("encoder"))
def test_encoder_contract(name, tmp_path):
    spec = spec_for(ENCODER_TESTERS, "encoder", name)
    config = config_of("encoder", name, EncoderConfig, spec.config)
    build = lambda: component_class("encoder", name)(config, D)  # noqa: E731
    encoder, twin = built_twice(build)
    value, mask = spec.inputs(torch.Generator().manual_seed(0))
    encoder.check(value, name)
    assert encoder.input_kind in KINDS

    out = encoder(value, mask)
    assert isinstance(out, Tokens) and out.x.ndim == 3 and out.x.shape[0] == B and out.x.shape[2] == D
    assert out.mask.dtype == torch.bool and out.mask.shape == out.x.shape[:2]
    assert out.mask.any(dim=1).all(), "every example needs at least one real token"
    if mask is not None:
        assert not out.mask[~mask.bool().all(dim=1)].all(dim=1).any(), (
            "input padding must show in the token mask"
        )
    assert encoder.batch_size(value) == B
    torch.testing.assert_close(twin(value, mask).x, out.x, msg="the same seed must build the same encoder")

    encoder.train()
    encoder(value, mask).x[out.mask].square().sum().backward()
    assert not trainable_without_grad(encoder)
    encoder.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            round_trip(encoder, build, tmp_path)(value, mask).x, encoder(value, mask).x
        )


# --- decoders ----------------------------------------------------------------------------------


@pytest.mark.parametrize("conditioned", [True, False], ids=["conditioned", "unconditioned"])
@pytest.mark.parametrize("name", components("decoder"))
def test_decoder_contract(name, conditioned, tmp_path):
    config = config_of("decoder", name, DecoderConfig, spec_for(DECODER_TESTERS, "decoder", name))
    build = lambda: component_class("decoder", name)(config, D, LATENT, conditioned)  # noqa: E731
    decoder, twin = built_twice(build)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(B, LATENT, generator=g, requires_grad=True)
    parts = tokens(g, (3,)) if conditioned else []
    conditions = Tokens.cat(parts, B, D, torch.device("cpu"))

    assert decoder.output_kind in KINDS
    features = decoder(z, conditions)
    assert features.shape == (B, decoder.sites, decoder.out_features)
    torch.testing.assert_close(twin(z, conditions), features)
    if conditioned:
        padded = Tokens.cat(with_padding_changed(parts), B, D, torch.device("cpu"))
        torch.testing.assert_close(
            decoder(z, padded), features, msg="padding tokens must not change the output"
        )

    target = torch.rand(B, *decoder.event_shape, generator=g)
    sites = decoder.to_sites(target)
    assert sites.shape == (B, decoder.sites, decoder.channels)
    torch.testing.assert_close(decoder.from_sites(sites), target)

    decoder.train()
    decoder(z, conditions).square().sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0, "the output must depend on z"
    assert not trainable_without_grad(decoder)
    decoder.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            round_trip(decoder, build, tmp_path)(z, conditions), decoder(z, conditions)
        )


# --- likelihood heads --------------------------------------------------------------------------


@pytest.mark.parametrize("name", components("likelihood"))
def test_likelihood_contract(name, tmp_path):
    config = config_of("likelihood", name, LikelihoodConfig, spec_for(LIKELIHOOD_TESTERS, "likelihood", name))
    sites, channels, in_features = 5, 3, 6
    build = lambda: component_class("likelihood", name)(config, in_features, sites, channels)  # noqa: E731
    head, twin = built_twice(build)
    g = torch.Generator().manual_seed(0)
    features = torch.randn(B, sites, in_features, generator=g)
    x = torch.randint(0, 256, (B, sites, channels), generator=g) / 255  # valid for every head
    mask = torch.ones(B, sites, dtype=torch.bool)
    mask[1, 3:] = False
    head.check(x, name)

    params = head(features)
    assert params.shape == (B, sites, head.num_params(channels))
    torch.testing.assert_close(twin(features), params)
    log_p = head.log_prob(params, x, mask)
    assert log_p.shape == (B,) and log_p.isfinite().all()
    changed = torch.where(mask[..., None], x, 1 - x)
    torch.testing.assert_close(head.log_prob(params, changed, mask), log_p, msg="masked sites must not count")
    assert head.mean(params).shape == x.shape
    draw = head.sample(params, torch.Generator().manual_seed(1))
    assert draw.shape == x.shape
    torch.testing.assert_close(head.sample(params, torch.Generator().manual_seed(1)), draw)

    head.train()
    (-head.log_prob(head(features), x, mask).sum()).backward()
    assert not trainable_without_grad(head)
    head.eval()
    with torch.no_grad():
        torch.testing.assert_close(round_trip(head, build, tmp_path)(features), head(features))


# --- posteriors and priors ---------------------------------------------------------------------


@pytest.mark.parametrize("name", components("posterior"))
def test_posterior_contract(name, tmp_path):
    config = config_of("posterior", name, PosteriorConfig, spec_for(POSTERIOR_TESTERS, "posterior", name))
    build = lambda: component_class("posterior", name)(config, D, LATENT, 2)  # noqa: E731
    posterior, twin = built_twice(build)
    parts = tokens(torch.Generator().manual_seed(0))

    mu, logvar = posterior(parts)
    assert mu.shape == logvar.shape == (B, LATENT) and mu.isfinite().all() and logvar.isfinite().all()
    torch.testing.assert_close(twin(parts)[0], mu)
    torch.testing.assert_close(posterior(with_padding_changed(parts))[0], mu, msg="padding must not count")

    posterior.train()
    sum(t.square().sum() for t in posterior(parts)).backward()
    assert not trainable_without_grad(posterior)
    posterior.eval()
    with torch.no_grad():
        torch.testing.assert_close(round_trip(posterior, build, tmp_path)(parts)[1], posterior(parts)[1])


@pytest.mark.parametrize("name", components("prior"))
def test_prior_contract(name, tmp_path):
    config = config_of("prior", name, PriorConfig, spec_for(PRIOR_TESTERS, "prior", name))
    build = lambda: component_class("prior", name)(config, D, LATENT, 2)  # noqa: E731
    prior, twin = built_twice(build)
    g = torch.Generator().manual_seed(0)
    parts = tokens(g)
    mu_q, logvar_q = torch.randn(B, LATENT, generator=g), torch.randn(B, LATENT, generator=g)

    mu, logvar = prior(parts, B)
    assert mu.shape == logvar.shape == (B, LATENT)
    torch.testing.assert_close(twin(parts, B)[0], mu)
    kl = prior.kl(mu_q, logvar_q, parts)
    assert kl.shape == (B, LATENT) and (kl >= -1e-6).all()
    assert torch.allclose(prior.kl(mu, logvar, parts), torch.zeros(B, LATENT), atol=1e-5), "KL(p || p) = 0"
    if prior.conditional:
        torch.testing.assert_close(prior(with_padding_changed(parts), B)[0], mu, msg="padding must not count")
        prior.train()
        prior.kl(mu_q, logvar_q, parts).sum().backward()
        assert not trainable_without_grad(prior)
        prior.eval()
    with torch.no_grad():
        torch.testing.assert_close(round_trip(prior, build, tmp_path)(parts, B)[0], mu)
