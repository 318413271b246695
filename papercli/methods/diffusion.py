"""Gaussian diffusion of DDPM (Ho, Jain & Abbeel, 2020, arXiv:2006.11239): the forward process,
the two training objectives of Table 2 and ancestral sampling — for any ε-predicting network
`model(x_t, t)` (pixels or an autoencoder's latents alike).

Forward process (Eq. 2, Eq. 4), with α_t = 1 − β_t and ᾱ_t = Π_{s≤t} α_s:
    q(x_t | x_0) = N(x_t; √ᾱ_t x_0, (1 − ᾱ_t) I),  so  x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε
β_t rises linearly from β_1 = 1e-4 to β_T = 0.02 over T = 1000 steps (Section 4).

Posterior (Eq. 6, 7):  q(x_{t−1} | x_t, x_0) = N(μ̃_t, β̃_t I) with
    μ̃_t = √ᾱ_{t−1} β_t / (1 − ᾱ_t) · x_0 + √α_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t) · x_t,
    β̃_t = (1 − ᾱ_{t−1}) / (1 − ᾱ_t) · β_t

Reverse process: p_θ(x_{t−1} | x_t) = N(μ_θ(x_t, t), σ_t² I), fixed isotropic σ_t² = β_t (the
released CIFAR-10 setting, "fixedlarge") or β̃_t ("fixedsmall"); both "had similar results"
(Section 3.2). The ε-parameterisation (Eq. 11):
    μ_θ(x_t, t) = 1/√α_t · (x_t − β_t / √(1 − ᾱ_t) · ε_θ(x_t, t))

Objectives:
- L_simple (Eq. 14) = E_{t, x_0, ε} ‖ε − ε_θ(√ᾱ_t x_0 + √(1 − ᾱ_t) ε, t)‖², t uniform.
- L_vlb, the true variational bound (Eq. 5): L_T + Σ_{t>1} L_{t−1} + L_0, where
  L_{t−1} = KL(q(x_{t−1} | x_t, x_0) ‖ p_θ(x_{t−1} | x_t)) (Eq. 12 up to its constant) and
  L_0 = −log p_θ(x_0 | x_1) under the discrete decoder of Eq. 13 (256 bins of width 2/255 on
  [−1, 1], the edge bins open). L_T has no parameters. Trained like L_simple: one uniformly drawn
  term per image, each term in nats per dimension (the released code's "kl" loss, there in bits).

Indices here are 0-based as in the released code: index i is the paper's t = i + 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch

Model = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
VarType = Literal["fixedlarge", "fixedsmall"]


def linear_betas(T: int = 1000, beta_1: float = 1e-4, beta_T: float = 0.02) -> torch.Tensor:
    """Section 4: constants increasing linearly from β_1 to β_T (float64)."""
    return torch.linspace(beta_1, beta_T, T, dtype=torch.float64)


def sqrt_linear_betas(
    T: int = 1000, beta_1: float = 0.0015, beta_T: float = 0.0195
) -> torch.Tensor:
    """Latent diffusion's "linear" schedule (Rombach et al. 2022, released configs): √β linear
    from √β_1 to √β_T, squared (float64)."""
    return torch.linspace(beta_1**0.5, beta_T**0.5, T, dtype=torch.float64) ** 2


def normal_kl(mean1, logvar1, mean2, logvar2) -> torch.Tensor:
    """KL(N(mean1, e^logvar1) ‖ N(mean2, e^logvar2)) elementwise."""
    return 0.5 * (
        logvar2
        - logvar1
        + torch.exp(logvar1 - logvar2)
        + (mean1 - mean2) ** 2 * torch.exp(-logvar2)
        - 1.0
    )


def discretized_gaussian_log_likelihood(
    x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor
) -> torch.Tensor:
    """Eq. 13: log ∫ N(x; mean, e^{2 log_scale}) over the 8-bit bin of each x ∈ [−1, 1]; the
    first and last bins extend to ∓∞. Exact normal CDFs (the released code uses a tanh fit)."""
    inv = torch.exp(-log_scale)
    upper, lower = inv * (x - mean + 1 / 255), inv * (x - mean - 1 / 255)
    log_cdf_upper = torch.special.log_ndtr(upper)  # log Φ(upper): the bin open to −∞
    log_sf_lower = torch.special.log_ndtr(-lower)  # log(1 − Φ(lower)): the bin open to +∞
    mid = torch.log((torch.special.ndtr(upper) - torch.special.ndtr(lower)).clamp_min(1e-12))
    return torch.where(x < -0.999, log_cdf_upper, torch.where(x > 0.999, log_sf_lower, mid))


def _take(a: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """a[t] as x's dtype, shaped to broadcast over an image batch."""
    return a.to(x.device)[t].to(x.dtype).view(-1, *([1] * (x.dim() - 1)))


class GaussianDiffusion:
    """The fixed forward process and the fixed-variance reverse process over `len(betas)` steps.
    `timesteps` maps its indices to the network's t (a respaced sampler calls the network with
    the original step numbers)."""

    def __init__(
        self,
        betas: torch.Tensor,
        var_type: VarType = "fixedlarge",
        timesteps: torch.Tensor | None = None,
    ):
        b = betas.double()
        self.betas, self.var_type = b, var_type
        self.T = len(b)
        self.timesteps = torch.arange(self.T) if timesteps is None else timesteps
        self.alphas = 1.0 - b
        self.alphas_cumprod = torch.cumprod(self.alphas, 0)
        self.alphas_cumprod_prev = torch.cat(
            [torch.ones(1, dtype=b.dtype), self.alphas_cumprod[:-1]]
        )
        ab, ab_prev = self.alphas_cumprod, self.alphas_cumprod_prev
        self.posterior_variance = b * (1 - ab_prev) / (1 - ab)  # β̃_t (Eq. 7)
        self.posterior_mean_coef1 = b * ab_prev.sqrt() / (1 - ab)
        self.posterior_mean_coef2 = (1 - ab_prev) * self.alphas.sqrt() / (1 - ab)
        # β̃_1 = 0: its log is taken from β̃_2, as the released code does
        self.posterior_log_variance = torch.log(
            torch.cat([self.posterior_variance[1:2], self.posterior_variance[1:]])
        )
        if var_type == "fixedlarge":  # σ_t² = β_t, with σ_1² = β̃_2 for a finite L_0
            self.model_log_variance = torch.log(torch.cat([self.posterior_variance[1:2], b[1:]]))
        else:
            self.model_log_variance = self.posterior_log_variance

    # --- the forward process ---------------------------------------------------------------------
    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε (Eq. 4)."""
        ab = self.alphas_cumprod
        return _take(ab.sqrt(), t, x0) * x0 + _take((1 - ab).sqrt(), t, x0) * noise

    def q_posterior(self, x0, xt, t) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean μ̃_t and log-variance of q(x_{t−1} | x_t, x_0) (Eq. 6, 7)."""
        mean = (
            _take(self.posterior_mean_coef1, t, xt) * x0
            + _take(self.posterior_mean_coef2, t, xt) * xt
        )
        return mean, _take(self.posterior_log_variance, t, xt)

    def predict_x0(self, xt: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """Invert Eq. 4 for x_0 given the noise."""
        ab = self.alphas_cumprod
        return _take((1 / ab).sqrt(), t, xt) * xt - _take((1 / ab - 1).sqrt(), t, xt) * eps

    def p_mean(self, xt, t, eps, clip: bool = False) -> torch.Tensor:
        """μ_θ (Eq. 11), written as μ̃_t(x_t, x̂_0) with x̂_0 from ε_θ — the same number, and
        x̂_0 can be clipped to the data range (the released sampler does)."""
        x0 = self.predict_x0(xt, t, eps)
        if clip:
            x0 = x0.clamp(-1, 1)
        return self.q_posterior(x0, xt, t)[0]

    # --- training objectives ---------------------------------------------------------------------
    def _noised(self, model: Model, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor):
        xt = self.q_sample(x0, t, noise)
        return xt, model(xt, self.timesteps.to(x0.device)[t])

    def loss_simple(self, model: Model, x0, t, noise) -> torch.Tensor:
        """Eq. 14 per image (mean over dimensions)."""
        _, eps = self._noised(model, x0, t, noise)
        return (noise - eps).pow(2).flatten(1).mean(1)

    def vlb_terms(self, x0, xt, t, eps) -> torch.Tensor:
        """L_{t−1} (KL, t > 1) or L_0 (decoder NLL, t = 1) per image, nats per dimension."""
        true_mean, true_logvar = self.q_posterior(x0, xt, t)
        mean = self.p_mean(xt, t, eps)
        logvar = _take(self.model_log_variance, t, xt)
        kl = normal_kl(true_mean, true_logvar, mean, logvar).flatten(1).mean(1)
        nll = -discretized_gaussian_log_likelihood(x0, mean, 0.5 * logvar).flatten(1).mean(1)
        return torch.where(t == 0, nll, kl)

    def loss_vlb(self, model: Model, x0, t, noise) -> torch.Tensor:
        xt, eps = self._noised(model, x0, t, noise)
        return self.vlb_terms(x0, xt, t, eps)

    def prior_kl(self, x0: torch.Tensor) -> torch.Tensor:
        """L_T = KL(q(x_T | x_0) ‖ N(0, I)) per image, nats per dimension (no parameters)."""
        t = torch.full((len(x0),), self.T - 1, device=x0.device)
        mean = _take(self.alphas_cumprod.sqrt(), t, x0) * x0
        logvar = _take(torch.log(1 - self.alphas_cumprod), t, x0)
        return (
            normal_kl(mean, logvar, torch.zeros_like(x0), torch.zeros_like(x0)).flatten(1).mean(1)
        )

    # --- sampling --------------------------------------------------------------------------------
    def respaced(self, steps: int) -> GaussianDiffusion:
        """The same process seen at `steps` evenly spaced timesteps S (Nichol & Dhariwal, 2021):
        ᾱ'_i = ᾱ_{S_i}, β'_i = 1 − ᾱ_{S_i} / ᾱ_{S_{i−1}}; the network still sees t = S_i."""
        if steps >= self.T:
            return self
        keep = torch.linspace(0, self.T - 1, steps).round().long().unique()
        ab = self.alphas_cumprod[keep]
        prev = torch.cat([torch.ones(1, dtype=ab.dtype), ab[:-1]])
        return GaussianDiffusion(1 - ab / prev, self.var_type, self.timesteps[keep])

    @torch.no_grad()
    def sample(
        self,
        model: Model,
        shape: tuple[int, ...],
        generator: torch.Generator,
        device: torch.device | str = "cpu",
        clip: bool = True,
        snapshots: int = 0,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Algorithm 2: x_T ~ N(0, I); x_{t−1} = μ_θ(x_t, t) + σ_t z, z ~ N(0, I) for t > 1, z = 0
        at t = 1. Returns x_0 and `snapshots` evenly spaced states x_T … x_0 (the reverse
        process strip; empty when 0)."""
        x = torch.randn(shape, generator=generator).to(device)
        keep = (
            set(torch.linspace(self.T, 0, snapshots).round().long().tolist()) if snapshots else ()
        )
        strip = [x] if self.T in keep else []
        for i in reversed(range(self.T)):
            t = torch.full((shape[0],), i, device=device, dtype=torch.long)
            mean = self.p_mean(x, t, model(x, self.timesteps.to(device)[t]), clip=clip)
            if i > 0:
                z = torch.randn(shape, generator=generator).to(device)
                x = mean + math.exp(0.5 * float(self.model_log_variance[i])) * z
            else:
                x = mean
            if i in keep:
                strip.append(x)
        return x, strip
