"""Every likelihood head's log_prob against torch.distributions or a float64 reference."""

import math

import pytest
import torch
import torch.nn.functional as F

from cvae_bridge.config import LikelihoodConfig, component
from cvae_bridge.registry import LIKELIHOODS, list_likelihoods

B, S, C = 3, 5, 2


def make(name, channels=C, sites=S, **fields):
    cfg = component(LikelihoodConfig, name, **fields)
    return LIKELIHOODS.get(name)(cfg, in_features=8, sites=sites, channels=channels)


def unit_data(channels=C):
    torch.manual_seed(0)
    return torch.randint(0, 256, (B, S, channels)).float() / 255


@pytest.mark.parametrize("name", list_likelihoods())
def test_every_head_shapes_and_mask(name):
    """log_prob is per example; masked sites do not count; mean and sample keep (B, S, C)."""
    head = make(name)
    params = head(torch.randn(B, S, 8))
    x = unit_data()
    full = head.log_prob(params, x)
    assert full.shape == (B,) and torch.isfinite(full).all()
    mask = torch.ones(B, S, dtype=torch.bool)
    mask[:, -2:] = False
    masked = head.log_prob(params, x, mask)
    per_site = head.site_log_prob(params, x)
    torch.testing.assert_close(masked, per_site[:, :-2].sum(1))
    assert not torch.allclose(masked, full)
    assert head.mean(params).shape == (B, S, C)
    assert head.sample(params).shape == (B, S, C)


def test_bernoulli_matches_torch():
    head = make("bernoulli")
    params = torch.randn(B, S, C)
    x = torch.bernoulli(torch.full((B, S, C), 0.5))
    expected = torch.distributions.Bernoulli(logits=params).log_prob(x).sum((1, 2))
    torch.testing.assert_close(head.log_prob(params, x), expected)
    torch.testing.assert_close(head.mean(params), torch.sigmoid(params))


@pytest.mark.parametrize("scale", ["fixed", "global", "per_dim", "predicted"])
@pytest.mark.parametrize(
    "name,dist", [("gaussian", torch.distributions.Normal), ("laplace", torch.distributions.Laplace)]
)
def test_location_scale_matches_torch(name, dist, scale):
    head = make(name, scale=scale, init_scale=0.7)
    if scale in ("global", "per_dim"):
        with torch.no_grad():
            head.raw_scale.normal_()  # learned values, not just the initial one
    params = torch.randn(B, S, head.num_params(C))
    x = torch.randn(B, S, C)
    loc, sigma = head.loc_scale(params)
    if scale == "fixed":
        torch.testing.assert_close(sigma, torch.full_like(sigma, 0.7))
    expected = dist(loc, sigma).log_prob(x).sum((1, 2))
    torch.testing.assert_close(head.log_prob(params, x), expected)
    torch.testing.assert_close(head.mean(params), loc)


def test_laplace_fixed_unit_scale_is_l1():
    """ACT's L1 loss: -log p = |x - mu| + log 2 per element."""
    head = make("laplace", scale="fixed", init_scale=1.0)
    params, x = torch.randn(B, S, C), torch.randn(B, S, C)
    expected = -((x - params).abs() + math.log(2)).sum((1, 2))
    torch.testing.assert_close(head.log_prob(params, x), expected)


def test_learned_scale_gets_gradient():
    head = make("gaussian", scale="per_dim")
    params = torch.randn(B, S, C)
    head.log_prob(params, torch.randn(B, S, C)).sum().backward()
    assert head.raw_scale.grad is not None and head.raw_scale.grad.abs().sum() > 0


def test_categorical_matches_torch():
    head = make("categorical")
    params = torch.randn(B, S, C * 256)
    x = unit_data()
    logits = params.view(B, S, C, 256)
    expected = torch.distributions.Categorical(logits=logits).log_prob((x * 255).round().long()).sum((1, 2))
    torch.testing.assert_close(head.log_prob(params, x), expected)
    mean = (logits.softmax(-1) * torch.arange(256) / 255).sum(-1)
    torch.testing.assert_close(head.mean(params), mean)
    assert set((head.sample(params) * 255).round().unique().tolist()) <= set(range(256))


def logistic_mixture_reference(params, x, components):
    """A float64, loop-based implementation of PixelCNN++'s likelihood for a single channel."""
    params, x = params.double(), x.double()
    out = torch.zeros(x.shape[:2], dtype=torch.float64)
    for b in range(x.shape[0]):
        for s in range(x.shape[1]):
            p = params[b, s].view(components, 3)
            value = 2 * x[b, s, 0] - 1
            terms = []
            for m in range(components):
                mean, log_scale = p[m, 1], p[m, 2].clamp(min=-7)
                upper = torch.sigmoid((value + 1 / 255 - mean) * torch.exp(-log_scale))
                lower = torch.sigmoid((value - 1 / 255 - mean) * torch.exp(-log_scale))
                if value < -0.999:
                    mass = upper
                elif value > 0.999:
                    mass = 1 - lower
                else:
                    mass = upper - lower
                terms.append(torch.log(mass) + F.log_softmax(p[:, 0], 0)[m])
            out[b, s] = torch.logsumexp(torch.stack(terms), 0)
    return out.sum(1)


def test_logistic_mixture_matches_reference():
    head = make("logistic_mixture", channels=1, components=3)
    params = torch.randn(B, S, head.num_params(1)) * 0.5
    x = unit_data(channels=1)
    x[0, 0, 0], x[0, 1, 0] = 0.0, 1.0  # both edge bins
    torch.testing.assert_close(
        head.log_prob(params, x).double(), logistic_mixture_reference(params, x, 3), rtol=1e-4, atol=1e-3
    )


def test_logistic_mixture_is_a_distribution_over_levels():
    """Probabilities of all 256 levels sum to one (RGB: per channel given the others' levels)."""
    head = make("logistic_mixture", channels=1, sites=1, components=4)
    params = torch.randn(1, 1, head.num_params(1)).expand(256, 1, -1)
    levels = (torch.arange(256).float() / 255).view(256, 1, 1)
    total = head.log_prob(params, levels).exp().sum()
    torch.testing.assert_close(total, torch.tensor(1.0), atol=1e-4, rtol=0)


def test_logistic_mixture_rgb_params_and_sampling():
    head = make("logistic_mixture", channels=3, components=5)
    assert head.num_params(3) == 5 * 10  # PixelCNN++: 10 numbers per component for RGB
    params = torch.randn(B, S, 50)
    sample = head.sample(params)
    assert sample.min() >= 0 and sample.max() <= 1
    assert torch.isfinite(head.log_prob(params, sample)).all()


def test_unit_interval_heads_refuse_out_of_range():
    from cvae_bridge.errors import InputError

    with pytest.raises(InputError, match="'image'.*\\[0, 1\\]"):
        make("bernoulli").check(torch.tensor([1.5]), "image")
