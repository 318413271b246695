"""FlashAttention (Dao et al., 2022) and FlashAttention-2 (Dao, 2023) as tiled algorithms in plain
PyTorch, each a `torch.autograd.Function` with its own backward (nothing is differentiated through
the tiles), next to `standard_attention`, which materialises S = τQKᵀ and P = softmax(S).

Shapes: q (..., N_q, d), k and v (..., N_k, d); leading dims (batch, heads) broadcast through every
block. τ = 1/√d unless `scale` is given. `causal` masks key c for query r when c > r (top-left
aligned) and skips blocks that are masked entirely. Block sizes are arguments: any N (the last
block is ragged) and any head dim.

The two differ in loop order and in what they keep (line numbers are the papers' algorithms):
- FA1, Algorithm 1: outer loop over K/V blocks j, inner over Q blocks i; O, ℓ and m live in "HBM"
  and O_i is rescaled by diag(ℓ_new)⁻¹ after every block (l. 12). Saves ℓ and m for the backward
  pass, Algorithm 4 (l. 13: P = diag(ℓ)⁻¹ exp(S − m)).
- FA2, Algorithm 1: outer loop over Q blocks i (the loop parallelised over sequence blocks on a
  GPU), inner over K/V; O is kept un-normalised and rescaled once at the end (l. 12), and only the
  logsumexp L = m + log ℓ is saved (l. 13). Backward: Algorithm 2, with D = rowsum(dO ∘ O)
  computed once before the loops (l. 4).
Neither stores an N×N matrix: memory is O(N·d) plus one Br×Bc block.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

NEG_INF = float("-inf")


# ----------------------------------------------------------------------------- reference
def standard_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool = False,
    scale: float | None = None,
) -> torch.Tensor:
    """Standard attention (FA1 paper, Algorithm 0): S = τQKᵀ and P = softmax(S) are materialised
    (N×N each) and autograd keeps them for the backward pass."""
    tau = _scale(q, scale)
    s = tau * q @ k.transpose(-2, -1)
    if causal:
        s = s.masked_fill(_causal_mask(0, q.shape[-2], 0, k.shape[-2], q.device), NEG_INF)
    return torch.softmax(s, dim=-1) @ v


# ----------------------------------------------------------------------------- shared pieces
def _scale(q: torch.Tensor, scale: float | None) -> float:
    return 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale


def _causal_mask(i0: int, i1: int, j0: int, j1: int, device) -> torch.Tensor:
    """True where key c (j0 ≤ c < j1) is in the future of query r (i0 ≤ r < i1)."""
    rows = torch.arange(i0, i1, device=device)[:, None]
    cols = torch.arange(j0, j1, device=device)[None, :]
    return cols > rows


def _blocks(n: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, size):
        yield start, min(start + size, n)


def _visible(i0: int, i1: int, j0: int, causal: bool) -> bool:
    """False when causal masking hides the whole block (its first key is after its last query)."""
    return not causal or j0 <= i1 - 1


def _scores(q_i, k_j, tau: float, causal: bool, i0: int, i1: int, j0: int, j1: int):
    """S_ij = τ Q_i K_jᵀ with the causal mask applied (only blocks that cross the diagonal need
    it)."""
    s = tau * q_i @ k_j.transpose(-2, -1)
    if causal and j1 - 1 > i0:
        s = s.masked_fill(_causal_mask(i0, i1, j0, j1, s.device), NEG_INF)
    return s


def _finite(m: torch.Tensor) -> torch.Tensor:
    """A running max with −∞ (a row masked so far) replaced by 0, so exp(−∞ − m) is 0, not NaN."""
    return torch.where(torch.isinf(m), torch.zeros_like(m), m)


def _check(q, k, v, block_q: int, block_k: int) -> None:
    if block_q < 1 or block_k < 1:
        raise ValueError(f"block sizes must be positive, got {block_q}×{block_k}")
    if k.shape[-2] != v.shape[-2] or q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"shapes do not fit: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
        )


# ----------------------------------------------------------------------------- FlashAttention
def fa1_forward(q, k, v, causal: bool, tau: float, block_q: int, block_k: int):
    """FA1 Algorithm 1: returns O and the softmax statistics (ℓ, m)."""
    n_q, n_k = q.shape[-2], k.shape[-2]
    o = torch.zeros(*q.shape[:-1], v.shape[-1], dtype=q.dtype, device=q.device)  # l. 2
    l = torch.zeros(q.shape[:-1], dtype=q.dtype, device=q.device)  # noqa: E741
    m = torch.full(q.shape[:-1], NEG_INF, dtype=q.dtype, device=q.device)
    for j0, j1 in _blocks(n_k, block_k):  # l. 5: outer loop over K_j, V_j
        k_j, v_j = k[..., j0:j1, :], v[..., j0:j1, :]
        for i0, i1 in _blocks(n_q, block_q):  # l. 7: inner loop over Q_i
            if not _visible(i0, i1, j0, causal):
                continue
            s = _scores(q[..., i0:i1, :], k_j, tau, causal, i0, i1, j0, j1)  # l. 9
            m_blk = s.amax(dim=-1)  # l. 10: m̃_ij, P̃_ij, ℓ̃_ij
            p = torch.exp(s - _finite(m_blk)[..., None])
            l_blk = p.sum(dim=-1)
            m_i, l_i = m[..., i0:i1], l[..., i0:i1]
            m_new = torch.maximum(m_i, m_blk)  # l. 11
            m_safe = _finite(m_new)
            alpha, beta = torch.exp(m_i - m_safe), torch.exp(m_blk - m_safe)
            l_new = alpha * l_i + beta * l_blk
            # l. 12: O_i ← diag(ℓ_new)⁻¹ (diag(ℓ_i) e^{m_i − m_new} O_i + e^{m̃_ij − m_new} P̃_ij V_j)
            scale_o = (l_i * alpha)[..., None]
            o[..., i0:i1, :] = (scale_o * o[..., i0:i1, :] + beta[..., None] * (p @ v_j)) / (
                l_new.clamp_min(torch.finfo(q.dtype).tiny)[..., None]
            )
            l[..., i0:i1], m[..., i0:i1] = l_new, m_new  # l. 13
    return o, l, m


def tiled_backward(q, k, v, do, probs, delta, causal: bool, tau: float, block_q, block_k):
    """The backward pass both papers share in structure — FA1 Algorithm 4 (without dropout) and
    FA2 Algorithm 2: outer loop over K/V blocks, inner over Q blocks, S and P recomputed per block
    (never an N×N matrix). They differ in how P is recomputed (`probs(s, i0, i1)`: FA1 l. 13
    diag(ℓ)⁻¹ exp(S − m), FA2 l. 11 exp(S − L)) and in D (`delta(i0, i1)`: FA1 l. 19 per block,
    FA2 l. 4 once up front). Line numbers below: FA1 Alg. 4 / FA2 Alg. 2."""
    dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)  # l. 5 / 3
    n_q, n_k = q.shape[-2], k.shape[-2]
    for j0, j1 in _blocks(n_k, block_k):  # l. 6 / 5
        k_j, v_j = k[..., j0:j1, :], v[..., j0:j1, :]
        dk_j, dv_j = torch.zeros_like(k_j), torch.zeros_like(v_j)  # l. 8 / 7
        for i0, i1 in _blocks(n_q, block_q):  # l. 9 / 8
            if not _visible(i0, i1, j0, causal):
                continue
            q_i, do_i = q[..., i0:i1, :], do[..., i0:i1, :]
            p = probs(_scores(q_i, k_j, tau, causal, i0, i1, j0, j1), i0, i1)  # l. 11-13 / 10-11
            dv_j += p.transpose(-2, -1) @ do_i  # l. 16 / 12
            dp = do_i @ v_j.transpose(-2, -1)  # l. 17 / 13
            ds = p * (dp - delta(i0, i1))  # l. 20 / 14
            dq[..., i0:i1, :] += tau * ds @ k_j  # l. 21 / 15 (an atomic add on a GPU in FA2)
            dk_j += tau * ds.transpose(-2, -1) @ q_i  # l. 22 / 16
        dk[..., j0:j1, :], dv[..., j0:j1, :] = dk_j, dv_j  # l. 24 / 18
    return dq, dk, dv


def fa1_backward(q, k, v, o, do, l, m, causal: bool, tau: float, block_q: int, block_k: int):  # noqa: E741
    """FA1 Algorithm 4: P = diag(ℓ)⁻¹ exp(S − m) (l. 13), D_i = rowsum(dO_i ∘ O_i) per block (l. 19)."""
    return tiled_backward(
        q, k, v, do,
        lambda s, i0, i1: torch.exp(s - m[..., i0:i1, None]) / l[..., i0:i1, None],
        lambda i0, i1: (do[..., i0:i1, :] * o[..., i0:i1, :]).sum(dim=-1, keepdim=True),
        causal, tau, block_q, block_k,
    )  # fmt: skip


# ----------------------------------------------------------------------------- FlashAttention-2
def fa2_forward(q, k, v, causal: bool, tau: float, block_q: int, block_k: int):
    """FA2 Algorithm 1: returns O and the logsumexp L (the only statistic saved)."""
    n_q, n_k = q.shape[-2], k.shape[-2]
    o = torch.empty(*q.shape[:-1], v.shape[-1], dtype=q.dtype, device=q.device)
    lse = torch.empty(q.shape[:-1], dtype=q.dtype, device=q.device)
    for i0, i1 in _blocks(n_q, block_q):  # l. 3: outer loop over Q_i (parallel on a GPU)
        q_i = q[..., i0:i1, :]
        acc = torch.zeros(*q_i.shape[:-1], v.shape[-1], dtype=q.dtype, device=q.device)  # l. 5
        l_i = torch.zeros(q_i.shape[:-1], dtype=q.dtype, device=q.device)
        m_i = torch.full(q_i.shape[:-1], NEG_INF, dtype=q.dtype, device=q.device)
        for j0, j1 in _blocks(n_k, block_k):  # l. 6
            if not _visible(i0, i1, j0, causal):
                break  # every later key block is masked too
            s = _scores(q_i, k[..., j0:j1, :], tau, causal, i0, i1, j0, j1)  # l. 8
            m_new = torch.maximum(m_i, s.amax(dim=-1))  # l. 9
            m_safe = _finite(m_new)
            p = torch.exp(s - m_safe[..., None])
            alpha = torch.exp(m_i - m_safe)
            l_i = alpha * l_i + p.sum(dim=-1)
            acc = alpha[..., None] * acc + p @ v[..., j0:j1, :]  # l. 10: no division in the loop
            m_i = m_new
        o[..., i0:i1, :] = acc / l_i[..., None]  # l. 12: the one rescale
        lse[..., i0:i1] = m_i + torch.log(l_i)  # l. 13
    return o, lse


def fa2_backward(q, k, v, o, do, lse, causal: bool, tau: float, block_q: int, block_k: int):
    """FA2 Algorithm 2: P = exp(S − L) (l. 11); D = rowsum(dO ∘ O) once, before the loops (l. 4)."""
    d = (do * o).sum(dim=-1, keepdim=True)
    return tiled_backward(
        q, k, v, do,
        lambda s, i0, i1: torch.exp(s - lse[..., i0:i1, None]),
        lambda i0, i1: d[..., i0:i1, :],
        causal, tau, block_q, block_k,
    )  # fmt: skip


# ----------------------------------------------------------------------------- autograd
class FlashAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, causal, scale, block_q, block_k):
        _check(q, k, v, block_q, block_k)
        tau = _scale(q, scale)
        o, l, m = fa1_forward(q, k, v, causal, tau, block_q, block_k)  # noqa: E741
        ctx.save_for_backward(q, k, v, o, l, m)
        ctx.args = (causal, tau, block_q, block_k)
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, l, m = ctx.saved_tensors  # noqa: E741
        dq, dk, dv = fa1_backward(q, k, v, o, do.contiguous(), l, m, *ctx.args)
        return dq, dk, dv, None, None, None, None


class FlashAttention2(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, causal, scale, block_q, block_k):
        _check(q, k, v, block_q, block_k)
        tau = _scale(q, scale)
        o, lse = fa2_forward(q, k, v, causal, tau, block_q, block_k)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.args = (causal, tau, block_q, block_k)
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse = ctx.saved_tensors
        dq, dk, dv = fa2_backward(q, k, v, o, do.contiguous(), lse, *ctx.args)
        return dq, dk, dv, None, None, None, None


def flash_attention(q, k, v, causal=False, scale=None, block_q=64, block_k=64) -> torch.Tensor:
    """FlashAttention (FA1): exact attention, tiled; differentiable through its own backward."""
    return FlashAttention.apply(q, k, v, causal, scale, block_q, block_k)


def flash_attention_2(q, k, v, causal=False, scale=None, block_q=64, block_k=64) -> torch.Tensor:
    """FlashAttention-2: exact attention, tiled; differentiable through its own backward."""
    return FlashAttention2.apply(q, k, v, causal, scale, block_q, block_k)
