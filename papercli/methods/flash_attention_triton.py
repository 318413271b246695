"""FlashAttention and FlashAttention-2 as Triton kernels, forward and backward (imported only for
`--gpu` runs of the FlashAttention recipes; Triton is not a dependency of papercli).

The kernels follow the same algorithms as `flash_attention.py` (see there for the line-by-line
notes), with the work partitioning that distinguishes the two papers:
- FA1: one program per (batch, head) — FA1's parallelism — running Algorithm 1's loops: outer over
  K/V blocks, inner over Q blocks, with O_i, ℓ_i and m_i read from and written back to HBM for every
  block (l. 8, 12-13). Backward (Algorithm 4): the same grid and loop order, dQ_i read-modified-
  written in HBM (l. 21).
- FA2: one program per (Q block, batch × head) — parallel over the sequence too (FA2 Sec. 3.2) —
  with O accumulated un-normalised on chip and rescaled once (Algorithm 1 l. 12), and only the
  logsumexp L written. Backward (Algorithm 2): one program per (K/V block, batch × head), dQ
  accumulated with atomic adds (l. 15), D = rowsum(dO ∘ O) computed first (l. 4).
Any N (blocks are masked at the end) and any head dim (padded to a power of two ≥ 16 in registers).
fp32 inputs use IEEE fp32 dots (exact to ~1e-6); fp16/bf16 inputs use tensor cores.
`TRITON_INTERPRET=1` runs them on the CPU (slowly), which is how the tests check them without a GPU.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl


@triton.jit
def _load_rows(ptr, offs_n, offs_d, n, D: tl.constexpr):
    mask = (offs_n[:, None] < n) & (offs_d[None, :] < D)
    return tl.load(ptr + offs_n[:, None] * D + offs_d[None, :], mask=mask, other=0.0)


@triton.jit
def _store_rows(ptr, value, offs_n, offs_d, n, D: tl.constexpr):
    mask = (offs_n[:, None] < n) & (offs_d[None, :] < D)
    tl.store(ptr + offs_n[:, None] * D + offs_d[None, :], value, mask=mask)


@triton.jit
def _masked_scores(q, k, offs_m, offs_n, n, scale, CAUSAL: tl.constexpr, PREC: tl.constexpr):
    """S = τ Q_i K_jᵀ with keys past the end (and, causal, in the future) set to −∞."""
    s = tl.dot(q, tl.trans(k), input_precision=PREC) * scale
    valid = offs_n[None, :] < n
    if CAUSAL:
        valid = valid & (offs_n[None, :] <= offs_m[:, None])
    return tl.where(valid, s, float("-inf"))


@triton.jit
def _block_grads(q, k, v, do, p, delta, scale, PREC: tl.constexpr):
    """One block's dV_j, dQ_i and dK_j terms, the same in FA1 Alg. 4 (l. 16-22) and FA2 Alg. 2
    (l. 12-16): dV += Pᵀ dO, dP = dO Vᵀ, dS = P ∘ (dP − D), dQ += τ dS K, dK += τ dSᵀ Q."""
    dv = tl.dot(tl.trans(p.to(do.dtype)), do, input_precision=PREC)
    dp = tl.dot(do, tl.trans(v), input_precision=PREC)
    ds = p * (dp - delta[:, None])
    dq = scale * tl.dot(ds.to(k.dtype), k, input_precision=PREC)
    dk = scale * tl.dot(tl.trans(ds.to(q.dtype)), q, input_precision=PREC)
    return dv, dq, dk


# ----------------------------------------------------------------------------- FA1
@triton.jit
def _fa1_fwd(Q, K, V, OUT, Lsum, Mmax, n, scale, CAUSAL: tl.constexpr, PREC: tl.constexpr,
             BM: tl.constexpr, BN: tl.constexpr, D: tl.constexpr, DP: tl.constexpr):  # fmt: skip
    bh = tl.program_id(0)  # FA1: parallel over batch × heads only
    Q, K, V, OUT = Q + bh * n * D, K + bh * n * D, V + bh * n * D, OUT + bh * n * D
    Lsum, Mmax = Lsum + bh * n, Mmax + bh * n
    offs_d = tl.arange(0, DP)
    for j0 in range(0, n, BN):  # l. 5: outer loop over K_j, V_j
        offs_n = j0 + tl.arange(0, BN)
        k = _load_rows(K, offs_n, offs_d, n, D)
        v = _load_rows(V, offs_n, offs_d, n, D)
        i_start = (j0 // BM) * BM if CAUSAL else 0  # skip Q blocks that see none of these keys
        for i0 in range(i_start, n, BM):  # l. 7: inner loop over Q_i
            offs_m = i0 + tl.arange(0, BM)
            row = offs_m < n
            q = _load_rows(Q, offs_m, offs_d, n, D)  # l. 8: Q_i, O_i, ℓ_i, m_i from HBM
            o = _load_rows(OUT, offs_m, offs_d, n, D).to(tl.float32)
            l_i = tl.load(Lsum + offs_m, mask=row, other=0.0)
            m_i = tl.load(Mmax + offs_m, mask=row, other=float("-inf"))
            s = _masked_scores(q, k, offs_m, offs_n, n, scale, CAUSAL, PREC)  # l. 9
            m_blk = tl.max(s, 1)  # l. 10
            m_blk_safe = tl.where(m_blk == float("-inf"), 0.0, m_blk)
            p = tl.exp(s - m_blk_safe[:, None])
            l_blk = tl.sum(p, 1)
            m_new = tl.maximum(m_i, m_blk)  # l. 11
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            alpha, beta = tl.exp(m_i - m_safe), tl.exp(m_blk - m_safe)
            l_new = alpha * l_i + beta * l_blk
            pv = tl.dot(p.to(v.dtype), v, input_precision=PREC)
            l_div = tl.where(l_new > 0, l_new, 1.0)
            o = ((l_i * alpha)[:, None] * o + beta[:, None] * pv) / l_div[:, None]  # l. 12
            _store_rows(OUT, o.to(OUT.dtype.element_ty), offs_m, offs_d, n, D)
            tl.store(Lsum + offs_m, l_new, mask=row)  # l. 13
            tl.store(Mmax + offs_m, m_new, mask=row)
            tl.debug_barrier()  # the next read of these rows may come from other threads


@triton.jit
def _fa1_bwd(Q, K, V, OUT, DO, DQ, DK, DV, Lsum, Mmax, n, scale, CAUSAL: tl.constexpr,
             PREC: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, D: tl.constexpr,
             DP: tl.constexpr):  # fmt: skip
    bh = tl.program_id(0)
    off = bh * n * D
    Q, K, V, OUT, DO = Q + off, K + off, V + off, OUT + off, DO + off
    DQ, DK, DV = DQ + off, DK + off, DV + off
    Lsum, Mmax = Lsum + bh * n, Mmax + bh * n
    offs_d = tl.arange(0, DP)
    for j0 in range(0, n, BN):  # l. 6
        offs_n = j0 + tl.arange(0, BN)
        k = _load_rows(K, offs_n, offs_d, n, D)
        v = _load_rows(V, offs_n, offs_d, n, D)
        dk = tl.zeros([BN, DP], dtype=tl.float32)  # l. 8
        dv = tl.zeros([BN, DP], dtype=tl.float32)
        i_start = (j0 // BM) * BM if CAUSAL else 0
        for i0 in range(i_start, n, BM):  # l. 9
            offs_m = i0 + tl.arange(0, BM)
            row = offs_m < n
            q = _load_rows(Q, offs_m, offs_d, n, D)  # l. 10
            o = _load_rows(OUT, offs_m, offs_d, n, D).to(tl.float32)
            do = _load_rows(DO, offs_m, offs_d, n, D)
            l_i = tl.load(Lsum + offs_m, mask=row, other=1.0)
            m_i = tl.load(Mmax + offs_m, mask=row, other=0.0)
            s = _masked_scores(q, k, offs_m, offs_n, n, scale, CAUSAL, PREC)  # l. 11-12
            p = tl.exp(s - m_i[:, None]) / l_i[:, None]  # l. 13
            d_i = tl.sum(do.to(tl.float32) * o, 1)  # l. 19
            dv_b, dq_b, dk_b = _block_grads(q, k, v, do, p, d_i, scale, PREC)  # l. 16-22
            dv += dv_b
            dk += dk_b
            dq = _load_rows(DQ, offs_m, offs_d, n, D)  # l. 21: dQ_i += τ dS K_j in HBM
            _store_rows(DQ, dq + dq_b, offs_m, offs_d, n, D)
            tl.debug_barrier()
        _store_rows(DK, dk, offs_n, offs_d, n, D)  # l. 24
        _store_rows(DV, dv, offs_n, offs_d, n, D)


# ----------------------------------------------------------------------------- FA2
@triton.jit
def _fa2_fwd(Q, K, V, OUT, LSE, n, scale, CAUSAL: tl.constexpr, PREC: tl.constexpr,
             BM: tl.constexpr, BN: tl.constexpr, D: tl.constexpr, DP: tl.constexpr):  # fmt: skip
    i0 = tl.program_id(0) * BM  # FA2: parallel over Q blocks as well (l. 3)
    bh = tl.program_id(1)
    Q, K, V, OUT, LSE = (
        Q + bh * n * D,
        K + bh * n * D,
        V + bh * n * D,
        OUT + bh * n * D,
        LSE + bh * n,
    )
    offs_m = i0 + tl.arange(0, BM)
    offs_d = tl.arange(0, DP)
    q = _load_rows(Q, offs_m, offs_d, n, D)  # l. 4
    acc = tl.zeros([BM, DP], dtype=tl.float32)  # l. 5
    l_i = tl.zeros([BM], dtype=tl.float32)
    m_i = tl.full([BM], float("-inf"), dtype=tl.float32)
    hi = tl.minimum(n, i0 + BM) if CAUSAL else n  # later K/V blocks are fully masked
    for j0 in range(0, hi, BN):  # l. 6
        offs_n = j0 + tl.arange(0, BN)
        k = _load_rows(K, offs_n, offs_d, n, D)  # l. 7
        v = _load_rows(V, offs_n, offs_d, n, D)
        s = _masked_scores(q, k, offs_m, offs_n, n, scale, CAUSAL, PREC)  # l. 8
        m_new = tl.maximum(m_i, tl.max(s, 1))  # l. 9
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.exp(s - m_safe[:, None])
        alpha = tl.exp(m_i - m_safe)
        l_i = alpha * l_i + tl.sum(p, 1)
        acc = alpha[:, None] * acc + tl.dot(p.to(v.dtype), v, input_precision=PREC)  # l. 10
        m_i = m_new
    l_div = tl.where(l_i > 0, l_i, 1.0)
    _store_rows(OUT, (acc / l_div[:, None]).to(OUT.dtype.element_ty), offs_m, offs_d, n, D)  # l. 12
    tl.store(LSE + offs_m, m_i + tl.log(l_div), mask=offs_m < n)  # l. 13


@triton.jit
def _fa2_bwd(Q, K, V, DO, DQ, DK, DV, LSE, Delta, n, scale, CAUSAL: tl.constexpr,
             PREC: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, D: tl.constexpr,
             DP: tl.constexpr):  # fmt: skip
    j0 = tl.program_id(0) * BN  # one program per K/V block (l. 5, parallel)
    bh = tl.program_id(1)
    off = bh * n * D
    Q, K, V, DO = Q + off, K + off, V + off, DO + off
    DQ, DK, DV = DQ + off, DK + off, DV + off
    LSE, Delta = LSE + bh * n, Delta + bh * n
    offs_n = j0 + tl.arange(0, BN)
    offs_d = tl.arange(0, DP)
    k = _load_rows(K, offs_n, offs_d, n, D)  # l. 6
    v = _load_rows(V, offs_n, offs_d, n, D)
    dk = tl.zeros([BN, DP], dtype=tl.float32)  # l. 7
    dv = tl.zeros([BN, DP], dtype=tl.float32)
    i_start = (j0 // BM) * BM if CAUSAL else 0
    for i0 in range(i_start, n, BM):  # l. 8
        offs_m = i0 + tl.arange(0, BM)
        row = offs_m < n
        q = _load_rows(Q, offs_m, offs_d, n, D)  # l. 9
        do = _load_rows(DO, offs_m, offs_d, n, D)
        lse = tl.load(LSE + offs_m, mask=row, other=0.0)
        delta = tl.load(Delta + offs_m, mask=row, other=0.0)
        s = _masked_scores(q, k, offs_m, offs_n, n, scale, CAUSAL, PREC)  # l. 10
        p = tl.exp(s - lse[:, None])  # l. 11
        dv_b, dq_b, dk_b = _block_grads(q, k, v, do, p, delta, scale, PREC)  # l. 12-16
        dv += dv_b
        dk += dk_b
        mask = row[:, None] & (offs_d[None, :] < D)  # l. 15: dQ_i += dS K_j, atomically
        tl.atomic_add(DQ + offs_m[:, None] * D + offs_d[None, :], dq_b, mask=mask)
    _store_rows(DK, dk, offs_n, offs_d, n, D)  # l. 18
    _store_rows(DV, dv, offs_n, offs_d, n, D)


# ----------------------------------------------------------------------------- autograd
def _launch_args(q: torch.Tensor, block: int) -> dict:
    d = q.shape[-1]
    return {
        "PREC": "ieee" if q.dtype == torch.float32 else "tf32",
        "BM": block,
        "BN": block,
        "D": d,
        "DP": max(16, triton.next_power_of_2(d)),
    }


def _flat(*ts: torch.Tensor) -> list[torch.Tensor]:
    """(..., N, d) -> contiguous (B·H, N, d)."""
    return [t.reshape(-1, *t.shape[-2:]).contiguous() for t in ts]


class _TritonAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, causal, version, block):
        if not (q.shape == k.shape == v.shape):
            raise ValueError("the Triton kernels take q, k and v of one shape (self-attention)")
        shape, n = q.shape, q.shape[-2]
        qf, kf, vf = _flat(q, k, v)
        bh = qf.shape[0]
        scale = 1.0 / math.sqrt(q.shape[-1])
        meta = _launch_args(q, block)
        if version == 1:
            o = torch.zeros(qf.shape, device=q.device, dtype=torch.float32)
            l = torch.zeros(bh, n, device=q.device, dtype=torch.float32)  # noqa: E741
            m = torch.full((bh, n), float("-inf"), device=q.device, dtype=torch.float32)
            _fa1_fwd[(bh,)](qf, kf, vf, o, l, m, n, scale, causal, **meta)
            o = o.to(q.dtype)
            stats = (l, m)
        else:
            o = torch.empty_like(qf)
            lse = torch.empty(bh, n, device=q.device, dtype=torch.float32)
            _fa2_fwd[(triton.cdiv(n, block), bh)](qf, kf, vf, o, lse, n, scale, causal, **meta)
            stats = (lse,)
        ctx.save_for_backward(qf, kf, vf, o, *stats)
        ctx.args = (shape, causal, version, block, scale)
        return o.reshape(shape)

    @staticmethod
    def backward(ctx, do):
        qf, kf, vf, o, *stats = ctx.saved_tensors
        shape, causal, version, block, scale = ctx.args
        (dof,) = _flat(do)
        bh, n = qf.shape[0], qf.shape[1]
        meta = _launch_args(qf, block)
        dq, dk, dv = (torch.zeros(qf.shape, device=qf.device, dtype=torch.float32) for _ in "qkv")
        if version == 1:
            l, m = stats  # noqa: E741
            _fa1_bwd[(bh,)](qf, kf, vf, o, dof, dq, dk, dv, l, m, n, scale, causal, **meta)
        else:
            (lse,) = stats
            delta = (dof.float() * o.float()).sum(-1)  # Algorithm 2 l. 4: D = rowsum(dO ∘ O)
            grid = (triton.cdiv(n, block), bh)
            _fa2_bwd[grid](qf, kf, vf, dof, dq, dk, dv, lse, delta, n, scale, causal, **meta)
        return tuple(g.to(qf.dtype).reshape(shape) for g in (dq, dk, dv)) + (None,) * 3


def flash_attention_triton(q, k, v, causal: bool = False, block: int = 64) -> torch.Tensor:
    """FA1 as a Triton kernel (forward and backward)."""
    return _TritonAttention.apply(q, k, v, causal, 1, block)


def flash_attention_2_triton(q, k, v, causal: bool = False, block: int = 64) -> torch.Tensor:
    """FA2 as a Triton kernel (forward and backward)."""
    return _TritonAttention.apply(q, k, v, causal, 2, block)


KERNELS = {"triton_fa1": flash_attention_triton, "triton_fa2": flash_attention_2_triton}
