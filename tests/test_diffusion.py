"""Gaussian diffusion (DDPM): the schedule, q(x_t|x_0), the posterior, both objectives and
ancestral sampling against closed forms and direct computations."""

from __future__ import annotations

import math

import torch

from papercli.methods.diffusion import (
    GaussianDiffusion,
    discretized_gaussian_log_likelihood,
    linear_betas,
)

D = GaussianDiffusion(linear_betas())


def test_linear_schedule_and_alpha_bar():
    b = linear_betas()
    assert len(b) == 1000 and b[0] == 1e-4 and math.isclose(float(b[-1]), 0.02)
    assert math.isclose(float(b[1] - b[0]), (0.02 - 1e-4) / 999)
    # ᾱ_t = Π (1 − β_s): direct products at a few t
    for t in (0, 1, 499, 999):
        direct = math.prod(1 - float(x) for x in b[: t + 1])
        assert math.isclose(float(D.alphas_cumprod[t]), direct, rel_tol=1e-10)
    assert float(D.alphas_cumprod[-1]) < 1e-4  # x_T is (almost) pure noise: √ᾱ_T ≈ 0.0064


def test_q_sample_has_the_closed_form_moments():
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((200_000, 1), 0.6)
    t = torch.full((len(x0),), 300)
    xt = D.q_sample(x0, t, torch.randn(x0.shape, generator=g))
    ab = float(D.alphas_cumprod[300])
    assert abs(float(xt.mean()) - math.sqrt(ab) * 0.6) < 0.01
    assert abs(float(xt.var()) - (1 - ab)) < 0.01


def test_posterior_matches_a_direct_gaussian_computation():
    # q(x_{t-1} | x_t, x_0) ∝ q(x_t | x_{t-1}) q(x_{t-1} | x_0): multiply the two Gaussians
    x0, xt = torch.tensor([[0.3]]), torch.tensor([[-0.5]])
    for i in (1, 10, 700):
        a, ab_prev = 1 - float(D.betas[i]), float(D.alphas_cumprod[i - 1])
        prec = a / (1 - a) + 1 / (1 - ab_prev)  # precisions of the two factors in x_{t-1}
        mean = (math.sqrt(a) * -0.5 / (1 - a) + math.sqrt(ab_prev) * 0.3 / (1 - ab_prev)) / prec
        got_mean, got_logvar = D.q_posterior(x0, xt, torch.tensor([i]))
        assert math.isclose(float(got_mean), mean, rel_tol=1e-5)
        assert math.isclose(math.exp(float(got_logvar)), 1 / prec, rel_tol=1e-5)


def test_eps_parameterised_mean_is_eq_11():
    x0, noise = torch.randn(4, 3), torch.randn(4, 3)
    t = torch.tensor([5, 50, 500, 999])
    xt = D.q_sample(x0, t, noise)
    eps = torch.randn(4, 3)  # any prediction
    a, ab, b = (v[t].float()[:, None] for v in (D.alphas, D.alphas_cumprod, D.betas))
    eq11 = (xt - b / (1 - ab).sqrt() * eps) / a.sqrt()
    assert torch.allclose(D.p_mean(xt, t, eps), eq11, atol=1e-4)
    # with the true noise the model's mean is the posterior mean
    assert torch.allclose(D.p_mean(xt, t, noise), D.q_posterior(x0, xt, t)[0], atol=1e-4)


def test_vlb_of_the_true_noise_equals_its_analytic_value():
    x0 = torch.rand(3, 1, 4, 4, dtype=torch.float64) * 2 - 1  # float64: the KL is ~1e-4
    noise = torch.randn_like(x0)
    oracle = lambda xt, t: noise  # noqa: E731 — ε_θ = the true ε
    t = torch.tensor([1, 100, 999])
    got = D.loss_vlb(oracle, x0, t, noise)
    # equal means: KL(N(μ, β̃) ‖ N(μ, σ²)) = ½ (log σ²/β̃ + β̃/σ² − 1) per dimension, σ² = β_t
    for k, i in enumerate(t.tolist()):
        r = float(D.posterior_variance[i] / D.betas[i])
        assert math.isclose(float(got[k]), 0.5 * (-math.log(r) + r - 1), rel_tol=1e-6)
    # fixedsmall (σ² = β̃): the true noise makes every KL term vanish
    small = GaussianDiffusion(linear_betas(), "fixedsmall")
    assert torch.allclose(small.loss_vlb(oracle, x0, t, noise), torch.zeros(3).double(), atol=1e-9)
    assert not small.loss_simple(oracle, x0, t, noise).any()


def test_discrete_decoder_is_a_distribution_over_256_levels():
    levels = torch.linspace(-1, 1, 256)
    for mean, log_scale in ((0.1, -3.0), (-0.95, -1.0), (0.99, -5.0)):
        logp = discretized_gaussian_log_likelihood(
            levels, torch.full_like(levels, mean), torch.full_like(levels, log_scale)
        )
        assert math.isclose(float(logp.exp().sum()), 1.0, rel_tol=1e-4)
    # L_0 of the true noise (t = 1): the mean is x_0 itself, so each pixel's NLL is that of the
    # bin ±1/255 around the mean under σ_1 (= √β̃_2 for fixedlarge); the two edge bins are open
    x0 = torch.linspace(-1, 1, 256, dtype=torch.float64).view(1, 1, 16, 16)
    noise = torch.randn_like(x0)
    l0 = float(D.loss_vlb(lambda xt, t: noise, x0, torch.tensor([0]), noise))
    h = (1 / 255) / math.sqrt(float(D.posterior_variance[1]))
    phi = 0.5 * (1 + math.erf(h / math.sqrt(2)))  # Φ(h)
    expected = (254 * -math.log(2 * phi - 1) + 2 * -math.log(phi)) / 256
    assert math.isclose(l0, expected, rel_tol=1e-6)


def test_prior_term_is_small_and_parameter_free():
    x0 = torch.rand(2, 8) * 2 - 1
    assert 0 < float(D.prior_kl(x0).max()) < 1e-4


def test_respaced_sampler_keeps_alpha_bar_and_ancestral_sampling_runs():
    r = D.respaced(50)
    assert r.T == 50 and r.timesteps[0] == 0 and r.timesteps[-1] == 999
    assert torch.allclose(r.alphas_cumprod, D.alphas_cumprod[r.timesteps])
    assert D.respaced(1000) is D
    # an oracle that knows the data is 0.5 everywhere: the sampler must end at 0.5
    target = 0.5

    def oracle(xt, t):
        ab = D.alphas_cumprod[t].float().view(-1, 1, 1, 1)
        return (xt - ab.sqrt() * target) / (1 - ab).sqrt()

    g = torch.Generator().manual_seed(0)
    x, strip = r.sample(oracle, (4, 1, 3, 3), g, snapshots=5)
    assert torch.allclose(x, torch.full_like(x, target), atol=1e-4)
    assert len(strip) == 5 and strip[0].std() > 0.5 and torch.equal(strip[-1], x)
