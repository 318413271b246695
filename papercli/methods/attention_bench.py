"""Peak memory and time of one attention forward + backward pass, for the FlashAttention recipes.

CPU peak memory: torch has no `max_memory_allocated` for the CPU, so each point runs in a fresh
Python process (`python -m papercli.methods.attention_bench …`) and reads the kernel's own account
of it: after the inputs exist and a small warm-up pass has initialised autograd and the kernels,
the process resets its resident-set high-water mark (writing 5 to /proc/self/clear_refs, Linux ≥
4.0) and notes its resident set; after the pass, VmHWM − that baseline is everything the pass
itself held at its peak — output, saved statistics, gradients, temporaries and the N×N matrices
where there are any — as the OS saw it, not as an allocator believes it. A fresh process per
point keeps one point's freed-but-cached heap from hiding (or inflating) the next one's peak.

GPU: `torch.cuda.max_memory_allocated` after `reset_peak_memory_stats`, in-process.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

import torch

from papercli.methods import flash_attention as fa


@dataclass(frozen=True)
class Point:
    """One measurement: `algorithm` ("standard", "flash", "flash2", or a Triton kernel's name)
    on `batch` × `heads` × N × `dim`."""

    algorithm: str
    n: int
    heads: int = 1
    dim: int = 64
    causal: bool = False
    block: int = 128
    seed: int = 0
    batch: int = 1


ALGORITHMS = ("standard", "sdpa", "flash", "flash2", "triton_fa1", "triton_fa2")


def attention_fn(algorithm: str, block: int):
    """(q, k, v, causal) -> O for the algorithms on the CPU (and the plain-PyTorch ones on a GPU)."""
    if algorithm == "standard":
        return lambda q, k, v, causal: fa.standard_attention(q, k, v, causal)
    if algorithm == "sdpa":
        import torch.nn.functional as F

        return lambda q, k, v, causal: F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    if algorithm in ("flash", "flash2"):
        tiled = fa.flash_attention if algorithm == "flash" else fa.flash_attention_2
        return lambda q, k, v, causal: tiled(q, k, v, causal, block_q=block, block_k=block)
    from papercli.methods import flash_attention_triton as fat  # imported only when asked for

    return lambda q, k, v, causal: fat.KERNELS[algorithm](q, k, v, causal, block)


def inputs(p: Point, device="cpu", dtype=torch.float32) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(p.seed)
    q, k, v, do = (
        torch.randn(p.batch, p.heads, p.n, p.dim, generator=g, dtype=dtype) for _ in range(4)
    )
    return (*(t.to(device).requires_grad_() for t in (q, k, v)), do.to(device))


def forward_backward(fn, q, k, v, do, causal: bool) -> None:
    fn(q, k, v, causal).backward(do)


# ----------------------------------------------------------------------------- CPU, one process
def _status_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"/proc/self/status has no {field}")


def measure_here(p: Point) -> dict[str, float]:
    """Peak resident bytes and seconds of one forward + backward pass, in this process (call it in
    a fresh one: see the module note)."""
    fn = attention_fn(p.algorithm, p.block)
    warm = inputs(Point(p.algorithm, min(p.n, 2 * p.block), p.heads, p.dim, p.causal, p.block))
    forward_backward(fn, *warm, p.causal)
    q, k, v, do = inputs(p)
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # reset VmHWM to the current resident set
    base = _status_kib("VmRSS")
    t0 = time.perf_counter()
    forward_backward(fn, q, k, v, do, p.causal)
    seconds = time.perf_counter() - t0
    return {"peak_bytes": (_status_kib("VmHWM") - base) * 1024.0, "seconds": seconds}


def measure_cpu(p: Point, threads: int = 1) -> dict[str, float]:
    """`measure_here` in a fresh process with `threads` torch threads."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run(
        [sys.executable, "-m", "papercli.methods.attention_bench", json.dumps(asdict(p))],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"measuring {p.algorithm} at N={p.n} failed: {tail}")
    return json.loads(proc.stdout)


# ----------------------------------------------------------------------------- GPU, in process
def measure_gpu(p: Point, repeats: int = 10, dtype=torch.float16) -> dict[str, float]:
    """Median seconds (CUDA events) and peak allocated bytes of forward + backward on the GPU."""
    fn = attention_fn(p.algorithm, p.block)
    q, k, v, do = inputs(p, "cuda", dtype)
    forward_backward(fn, q, k, v, do, p.causal)  # compile / autotune outside the timing
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    times = []
    for _ in range(repeats):
        q.grad = k.grad = v.grad = None
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        forward_backward(fn, q, k, v, do, p.causal)
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    peak = torch.cuda.max_memory_allocated() - base
    return {"peak_bytes": float(peak), "seconds": sorted(times)[len(times) // 2]}


# ----------------------------------------------------------------------------- exactness
def attention_errors(fn, p: Point, device="cpu") -> dict[str, float]:
    """Largest |error| of `fn` in fp32 against standard attention in float64 (the fp32 reference
    would carry rounding errors of its own), for the output and each gradient."""
    q, k, v, do = inputs(p)
    ref = [t.detach().double().requires_grad_() for t in (q, k, v)]
    out_ref = fa.standard_attention(*ref, p.causal)
    out_ref.backward(do.double())
    mine = [t.detach().to(device).requires_grad_() for t in (q, k, v)]
    out = fn(*mine, p.causal)
    out.backward(do.to(device))
    got = {"out": out, "dq": mine[0].grad, "dk": mine[1].grad, "dv": mine[2].grad}
    want = {"out": out_ref, "dq": ref[0].grad, "dk": ref[1].grad, "dv": ref[2].grad}
    return {
        name: float((got[name].detach().cpu().double() - want[name].detach()).abs().max())
        for name in got
    }


# ----------------------------------------------------------------------------- fitting
def loglog_slope(ns: list[int], values: list[float]) -> float:
    """Least-squares slope of log(value) against log(N): 1 for linear growth, 2 for quadratic."""
    if len(ns) < 2:
        return math.nan
    xs = [math.log(n) for n in ns]
    ys = [math.log(max(v, 1.0)) for v in values]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx


if __name__ == "__main__":
    print(json.dumps(measure_here(Point(**json.loads(sys.argv[1])))))
