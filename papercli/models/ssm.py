"""State-space sequence models: S4 (Gu, Goel & Ré 2021) and Mamba's selective SSM (Gu & Dao 2023).

Both discretise the continuous system x'(t) = A x(t) + B u(t), y(t) = C x(t) + D u(t) (S4 Eq. 1)
and differ in what they may compute with:

S4 — linear time-invariant. A is the HiPPO-LegS matrix (S4 Eq. 2) written normal plus low-rank,
    A = V (Λ − P P*) V* (Sec. 3.2, Thm. 1), so in the basis V it is diagonal plus rank 1. The bilinear
    discretisation (Sec. 2.3, Eq. 3) gives a recurrence; its length-L convolution kernel K̄ (Eq. 5)
    is computed by Algorithm 1: the truncated generating function at the L roots of unity, a
    Cauchy kernel made diagonal-plus-low-rank by the Woodbury identity, then an inverse FFT. The
    layer trains by FFT convolution and generates by the recurrence; both give the same outputs.
    We keep one state of each complex-conjugate pair of Λ (N/2 states, output 2·Re), as the
    paper's code does.

S6 (Mamba, Sec. 3.2, Algorithm 2) — Δ, B and C are functions of the input, so there is no
    convolution kernel: A is diagonal, negative and real (S4D-real init, A_n = −(n + 1)), the
    zero-order hold (Eq. 4) gives Ā_t = exp(Δ_t A), B̄_t = (Δ_t A)^{-1}(exp(Δ_t A) − I) Δ_t B_t,
    and h_t = Ā_t h_{t−1} + B̄_t x_t is computed by a parallel (log-depth) associative scan.
    `selective=False` makes Δ, B, C plain parameters: the same layer, time-invariant (the LTI
    baseline of Table 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from papercli.models import register_model

# --- S4: HiPPO, DPLR, Algorithm 1 -------------------------------------------------------------


def hippo_legs(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The HiPPO-LegS matrix A (S4 Eq. 2) and its input vector B, in float64 on the CPU."""
    q = torch.sqrt(1 + 2 * torch.arange(n, dtype=torch.float64, device="cpu"))
    a = torch.tril(q[:, None] * q[None, :]) - torch.diag(
        torch.arange(n, dtype=torch.float64, device="cpu")
    )
    return -a, q.clone()


def dplr_hippo(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """HiPPO-LegS as normal plus low-rank (Sec. 3.2): A + P Pᵀ is normal (skew-symmetric − ½I), so
    A = V (Λ − (V*P)(V*P)*) V*. Returns (Λ, V*P, V*B), one of each conjugate pair (n/2 entries)."""
    a, b = hippo_legs(n)
    p = torch.sqrt(torch.arange(n, dtype=torch.float64, device="cpu") + 0.5)
    s = a + p[:, None] * p[None, :]
    # S = −½I + skew-symmetric: its eigenvectors are those of the Hermitian matrix −iS
    lam_im, v = torch.linalg.eigh(-1j * s.to(torch.complex128))
    lam = torch.diagonal(s).mean() + 1j * lam_im
    vh = v.conj().T
    keep = lam.imag > 0  # eigenvalues come in conjugate pairs: keep the upper half
    return lam[keep], (vh @ p.to(v.dtype))[keep], (vh @ b.to(v.dtype))[keep]


def cauchy(v: torch.Tensor, z: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """Cauchy kernels Σ_n v_kn / (z_l − λ_n) for several vectors v_k at once: v (…, K, N),
    z (…, L), λ (…, N) → (…, K, L). The K kernels share their denominators: one reciprocal,
    then a matrix product."""
    return v @ (1.0 / (z.unsqueeze(-2) - lam.unsqueeze(-1)))


class S4Kernel(nn.Module):
    """H independent DPLR state-space models of state size N (trainable Λ, P, B, C̃, Δ)."""

    def __init__(self, channels: int, state: int = 64, dt_min: float = 1e-3, dt_max: float = 1e-1):
        super().__init__()
        if state % 2:
            raise ValueError(f"S4 state size must be even (conjugate pairs), got {state}")
        # computed on the CPU (an eigendecomposition), then moved where the model is being built
        lam, p, b = (t.to(torch.get_default_device()) for t in dplr_hippo(state))
        h = channels
        # Re Λ stays negative (a stable system) through its log; Im Λ, P, B train freely
        self.log_neg_lam_re = nn.Parameter(torch.log(-lam.real).float().repeat(h, 1))
        self.lam_im = nn.Parameter(lam.imag.float().repeat(h, 1))
        self.p = nn.Parameter(torch.view_as_real(p.to(torch.complex64)).repeat(h, 1, 1))
        self.b = nn.Parameter(torch.view_as_real(b.to(torch.complex64)).repeat(h, 1, 1))
        # C̃ = C (I − Ā^L) is what the convolution needs (Sec. 3.3); it is trained directly
        self.c = nn.Parameter(torch.randn(h, state // 2, 2) * 0.5**0.5)
        log_dt = torch.rand(h) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        self.log_dt = nn.Parameter(log_dt)

    def _params(self):
        lam = torch.complex(-torch.exp(self.log_neg_lam_re), self.lam_im)
        p, b, c = (torch.view_as_complex(t) for t in (self.p, self.b, self.c))
        return lam, p, b, c, torch.exp(self.log_dt)

    def kernel(self, length: int) -> torch.Tensor:
        """K̄ (H, L) by Algorithm 1: K̂(z) = c(z)·C̃ (g(z) − Λ + P P*)^{-1} B at z = ω^k (Lemma C.3),
        with g(z) = 2/Δ·(1−z)/(1+z), c(z) = 2/(1+z), the inverse by Woodbury (four Cauchy kernels)."""
        lam, p, b, c, dt = self._params()
        omega = torch.exp(-2j * math.pi * torch.arange(length, device=lam.device) / length)
        g = (2.0 / dt)[:, None] * ((1 - omega) / (1 + omega))[None, :]  # (H, L)
        pc = p.conj()
        k00, k01, k10, k11 = cauchy(torch.stack([c * b, c * p, pc * b, pc * p], -2), g, lam).unbind(
            -2
        )
        at_roots = (2.0 / (1 + omega)) * (k00 - k01 * k10 / (1 + k11))
        return 2 * torch.fft.ifft(at_roots, n=length).real  # both halves of each conjugate pair

    def discrete(self, length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The recurrence (Eq. 3) of the same model: Ā (H, N/2, N/2), B̄ (H, N/2) by the bilinear
        method, and C = C̃ (I − Ā^L)^{-1}, so that C Ā^k B̄ is the kernel above for k < L."""
        lam, p, b, c, dt = self._params()
        n = lam.shape[-1]
        eye = torch.eye(n, dtype=lam.dtype, device=lam.device)
        a = torch.diag_embed(lam) - p[..., :, None] * p.conj()[..., None, :]
        half = (dt / 2)[:, None, None].to(lam.dtype) * a
        back = torch.linalg.inv(eye - half)  # (I − Δ/2·A)^{-1}
        a_bar = back @ (eye + half)
        b_bar = (back @ (dt[:, None].to(lam.dtype) * b)[..., None])[..., 0]
        c_rec = torch.linalg.solve(
            (eye - torch.linalg.matrix_power(a_bar, length)).transpose(-1, -2), c[..., None]
        )[..., 0]
        return a_bar, b_bar, c_rec


class S4Layer(nn.Module):
    """One S4 sequence map per channel plus the skip D: (B, L, H) → (B, L, H)."""

    def __init__(self, channels: int, state: int = 64):
        super().__init__()
        self.kernel = S4Kernel(channels, state)
        self.d = nn.Parameter(torch.randn(channels))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """Training view: causal convolution with K̄ by FFT (zero-padded to 2L, so not circular)."""
        length = u.shape[1]
        k = self.kernel.kernel(length)  # (H, L)
        uf = torch.fft.rfft(u.transpose(1, 2).float(), n=2 * length)
        y = torch.fft.irfft(uf * torch.fft.rfft(k, n=2 * length), n=2 * length)[..., :length]
        return (y.transpose(1, 2) + u * self.d).to(u.dtype)

    def recurrent(self, u: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """Generation view: x_k = Ā x_{k−1} + B̄ u_k, y_k = 2·Re(C x_k) + D u_k, one step at a time.
        `length` is the L the kernel was trained for (C̃ depends on it)."""
        a_bar, b_bar, c = self.kernel.discrete(length or u.shape[1])
        x = torch.zeros(u.shape[0], *b_bar.shape, dtype=b_bar.dtype, device=u.device)
        out = []
        for k in range(u.shape[1]):
            x = (a_bar @ x[..., None])[..., 0] + b_bar * u[:, k, :, None]
            out.append(2 * (c * x).sum(-1).real + self.d * u[:, k])
        return torch.stack(out, 1)


@dataclass(frozen=True)
class S4Config:
    d_input: int = 1  # features per step (1 for grey pixels, 3 for RGB)
    d_model: int = 64  # H
    layers: int = 4
    state: int = 64  # N
    num_classes: int = 10
    dropout: float = 0.0


class S4Classifier(nn.Module):
    """The deep S4 network of Sec. 3.4: a linear encoder, blocks of S4 → GELU → position-wise linear
    with a residual and post-LayerNorm (Table 9's image setting), mean pooling, a linear decoder.
    Images (B, C, H, W) are read as sequences of H·W pixels with C features each."""

    def __init__(self, cfg: S4Config):
        super().__init__()
        self.cfg = cfg
        h = cfg.d_model
        self.encoder = nn.Linear(cfg.d_input, h)
        self.ssm = nn.ModuleList(S4Layer(h, cfg.state) for _ in range(cfg.layers))
        self.mix = nn.ModuleList(nn.Linear(h, h) for _ in range(cfg.layers))
        self.norms = nn.ModuleList(nn.LayerNorm(h) for _ in range(cfg.layers))
        self.drop = nn.Dropout(cfg.dropout)
        self.decoder = nn.Linear(h, cfg.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            x = x.flatten(2).transpose(1, 2)  # (B, H·W, C): one pixel per step
        z = self.encoder(x)
        for ssm, mix, norm in zip(self.ssm, self.mix, self.norms, strict=True):
            z = norm(z + self.drop(mix(self.drop(F.gelu(ssm(z))))))
        return self.decoder(z.mean(1))


class LSTMClassifier(nn.Module):
    """The recurrent baseline: an LSTM over the same pixel sequence, its last state → classes."""

    def __init__(self, d_input: int = 1, hidden: int = 64, layers: int = 1, num_classes: int = 10):
        super().__init__()
        self.lstm = nn.LSTM(d_input, hidden, layers, batch_first=True)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            x = x.flatten(2).transpose(1, 2)
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


# --- Mamba: the selective scan (Algorithm 2) and the block (Fig. 3) ------------------------------


def scan_sequential(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """h_t = a_t · h_{t−1} + b_t along dim 1 (h_{−1} = 0), one step at a time: the reference."""
    h, out = torch.zeros_like(b[:, 0]), []
    for t in range(b.shape[1]):
        h = a[:, t] * h + b[:, t]
        out.append(h)
    return torch.stack(out, 1)


def scan_parallel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The same recurrence by a log-depth associative scan (Hillis & Steele): (a, b) pairs compose
    as (a₂a₁, a₂b₁ + b₂), and after round r each position holds the composition of its last 2^r
    steps — ⌈log₂ L⌉ rounds of whole-tensor operations instead of L sequential steps."""
    length, shift = b.shape[1], 1
    pad = [0, 0] * (b.dim() - 2)
    while shift < length:  # shifted copies by padding: cheaper to differentiate than slices
        b = b + a * F.pad(b, [*pad, shift, 0])[:, :length]
        if 2 * shift < length:
            a = a * F.pad(a, [*pad, shift, 0], value=1.0)[:, :length]
        shift *= 2
    return b


class SelectiveSSM(nn.Module):
    """S6 (Algorithm 2): x (B, L, D) → y (B, L, D) with state size N per channel. With
    `selective=False` Δ, B and C are parameters (time-invariant: S4D-real, the LTI baseline)."""

    def __init__(self, d_inner: int, state: int = 16, dt_rank: int = 0, selective: bool = True):
        super().__init__()
        self.selective, self.state = selective, state
        self.dt_rank = dt_rank or math.ceil(d_inner / 32)
        # S4D-real initialisation: A_n = −(n + 1), kept negative through its log
        a = torch.arange(1, state + 1, dtype=torch.float32).repeat(d_inner, 1)
        self.a_log = nn.Parameter(torch.log(a))
        self.d = nn.Parameter(torch.ones(d_inner))
        # Δ's bias: softplus⁻¹ of Δ drawn log-uniformly in [1e-3, 1e-1] (Sec. 3.6 / the code)
        dt = torch.exp(torch.rand(d_inner) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
        dt_bias = dt + torch.log(-torch.expm1(-dt))
        if selective:  # s_B(x), s_C(x) = Linear_N(x); s_Δ(x) = Broadcast_D(Linear_R(x))
            self.x_proj = nn.Linear(d_inner, self.dt_rank + 2 * state, bias=False)
            self.dt_proj = nn.Linear(self.dt_rank, d_inner)
            with torch.no_grad():
                self.dt_proj.bias.copy_(dt_bias)
        else:
            self.dt_bias = nn.Parameter(dt_bias)
            self.b = nn.Parameter(torch.randn(d_inner, state) / math.sqrt(state))
            self.c = nn.Parameter(torch.randn(d_inner, state) / math.sqrt(state))

    def forward(self, x: torch.Tensor, scan=scan_parallel) -> torch.Tensor:
        a = -torch.exp(self.a_log)  # (D, N)
        if self.selective:
            dt, b, c = self.x_proj(x).split([self.dt_rank, self.state, self.state], -1)
            dt = F.softplus(self.dt_proj(dt))  # (B, L, D)
            b, c = b[:, :, None, :], c[:, :, None, :]  # (B, L, 1, N): shared by the channels
        else:
            dt = F.softplus(self.dt_bias).expand(*x.shape)
            b, c = self.b, self.c
        da = dt[..., None] * a  # Δ A: (B, L, D, N)
        a_bar = torch.exp(da)
        # zero-order hold for B (Eq. 4), elementwise because A is diagonal: (ΔA)^{-1}(e^{ΔA} − 1)ΔB
        b_bar = torch.expm1(da) / a * b
        h = scan(a_bar, b_bar * x[..., None])
        return (h * c).sum(-1) + self.d * x


class MambaBlock(nn.Module):
    """Fig. 3: in-projection to two branches of width E·D; one goes through a causal depthwise
    convolution, SiLU and the SSM, the other is a SiLU gate; their product is projected back."""

    def __init__(
        self, d_model: int, state: int = 16, expand: int = 2, d_conv: int = 4, selective=True
    ):
        super().__init__()
        d_inner = expand * d_model
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False)
        self.conv = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, padding=d_conv - 1)
        # Δ's rank is ⌈D/16⌉ of the model width (the paper's code), not of the inner width
        self.ssm = SelectiveSSM(d_inner, state, math.ceil(d_model / 16), selective=selective)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u, gate = self.in_proj(x).chunk(2, -1)
        u = self.conv(u.transpose(1, 2))[..., : x.shape[1]].transpose(1, 2)  # causal: drop the tail
        return self.out_proj(self.ssm(F.silu(u)) * F.silu(gate))


@dataclass(frozen=True)
class MambaConfig:
    vocab_size: int = 50_280  # GPT-NeoX's 50,277 tokens padded to a multiple of 8
    d_model: int = 768
    layers: int = 24
    state: int = 16
    expand: int = 2
    d_conv: int = 4
    selective: bool = True  # False: the same network with an LTI SSM


class MambaLM(nn.Module):
    """A stack of pre-RMSNorm residual Mamba blocks, a final RMSNorm and a tied output layer."""

    def __init__(self, cfg: MambaConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.norms = nn.ModuleList(nn.RMSNorm(cfg.d_model) for _ in range(cfg.layers))
        self.blocks = nn.ModuleList(
            MambaBlock(cfg.d_model, cfg.state, cfg.expand, cfg.d_conv, cfg.selective)
            for _ in range(cfg.layers)
        )
        self.norm_f = nn.RMSNorm(cfg.d_model)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)
        for norm, block in zip(self.norms, self.blocks, strict=True):
            x = x + block(norm(x))
        return self.norm_f(x) @ self.embed.weight.T  # tied embeddings


# Mamba's language models (Table 12: layers and d_model; N = 16, E = 2, 50,277-token vocabulary)
MAMBA_SIZES = {
    "mamba-130m": MambaConfig(d_model=768, layers=24),
    "mamba-370m": MambaConfig(d_model=1024, layers=48),
    "mamba-790m": MambaConfig(d_model=1536, layers=48),
    "mamba-1.4b": MambaConfig(d_model=2048, layers=48),
    "mamba-2.8b": MambaConfig(d_model=2560, layers=64),
}
# S4's classification networks (Table 9 as we read it: depth 6, N = 64, LayerNorm for images)
S4_SIZES = {
    "s4-scifar": S4Config(d_input=3, d_model=1024, layers=6, dropout=0.25),
    "s4-lra-image": S4Config(d_input=1, d_model=512, layers=6, dropout=0.2),
}


def _mamba(name: str):
    return lambda **kw: MambaLM(replace(MAMBA_SIZES[name], **kw))


def _s4(name: str):
    return lambda **kw: S4Classifier(replace(S4_SIZES[name], **kw))


for _name in MAMBA_SIZES:
    register_model(_name, _mamba(_name), paper="mamba")
for _name in S4_SIZES:
    register_model(_name, _s4(_name), paper="s4")
