"""KL divergences against Monte Carlo, and gradients through the reparameterisation."""

import torch

from cvae_bridge.latent import gaussian_kl, gaussian_log_prob, reparameterize


def monte_carlo_kl(mu_q, logvar_q, mu_p, logvar_p, n=400_000):
    torch.manual_seed(0)
    z = reparameterize(mu_q.expand(n, -1), logvar_q.expand(n, -1))
    return (gaussian_log_prob(z, mu_q, logvar_q) - gaussian_log_prob(z, mu_p, logvar_p)).mean()


def test_kl_to_standard_normal_matches_monte_carlo():
    mu_q, logvar_q = torch.tensor([[0.5, -1.0, 0.2]]), torch.tensor([[-0.5, 0.3, 0.0]])
    zeros = torch.zeros_like(mu_q)
    analytic = gaussian_kl(mu_q, logvar_q, zeros, zeros).sum()
    torch.testing.assert_close(analytic, monte_carlo_kl(mu_q, logvar_q, zeros, zeros), atol=0.01, rtol=0.01)


def test_kl_to_conditional_prior_matches_monte_carlo():
    mu_q, logvar_q = torch.tensor([[0.5, -1.0, 0.2]]), torch.tensor([[-0.5, 0.3, 0.0]])
    mu_p, logvar_p = torch.tensor([[0.1, 0.4, -0.3]]), torch.tensor([[0.2, -0.6, 0.5]])
    analytic = gaussian_kl(mu_q, logvar_q, mu_p, logvar_p).sum()
    torch.testing.assert_close(analytic, monte_carlo_kl(mu_q, logvar_q, mu_p, logvar_p), atol=0.01, rtol=0.01)


def test_kl_matches_torch_distributions():
    mu_q, logvar_q, mu_p, logvar_p = torch.randn(4, 4, 6).unbind(0)
    q = torch.distributions.Normal(mu_q, torch.exp(0.5 * logvar_q))
    p = torch.distributions.Normal(mu_p, torch.exp(0.5 * logvar_p))
    torch.testing.assert_close(
        gaussian_kl(mu_q, logvar_q, mu_p, logvar_p), torch.distributions.kl_divergence(q, p)
    )


def test_gradients_flow_through_reparameterisation():
    mu = torch.zeros(8, 3, requires_grad=True)
    logvar = torch.zeros(8, 3, requires_grad=True)
    z = reparameterize(mu, logvar)
    (z**2).sum().backward()
    assert mu.grad.abs().sum() > 0 and logvar.grad.abs().sum() > 0


def test_temperature_scales_the_spread():
    mu, logvar = torch.zeros(20_000, 2), torch.zeros(20_000, 2)
    assert abs(reparameterize(mu, logvar, temperature=0.5).std().item() - 0.5) < 0.02
    assert torch.equal(reparameterize(mu, logvar, temperature=0.0), mu)


def test_standard_prior_closed_form_matches_the_general_kl():
    from cvae_bridge.config import PriorConfig, component
    from cvae_bridge.latent import StandardNormalPrior

    prior = StandardNormalPrior(component(PriorConfig, "standard"), d_model=8, latent_dim=3, num_conditions=0)
    mu, logvar = torch.randn(5, 3), torch.randn(5, 3)
    torch.testing.assert_close(
        prior.kl(mu, logvar, []), gaussian_kl(mu, logvar, torch.zeros(5, 3), torch.zeros(5, 3))
    )
