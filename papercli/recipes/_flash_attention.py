"""What the FlashAttention recipes share: measuring exact attention, not training anything.

Each engine "step" measures one sequence length N (no model, no optimizer; the measurements are
the recipe's state, so a run resumes at the next N): peak memory and time of one forward +
backward pass of the recipe's algorithm and of the others it is compared with, on random
N(0, 1) queries, keys and values (batch × heads × N × d). The verdict's metrics come at the end:
- exactness: output and dQ, dK, dV of the algorithm in fp32 against standard attention in
  float64, causal and not, at a sequence length that is not a multiple of the block;
- growth: the log-log slope of peak memory against N for each algorithm (1 = linear, 2 = quadratic);
- per N: `<algorithm>_mib_<N>` and `<algorithm>_ms_<N>`, and the table in `attention.md`.

mini   on the CPU: the tiled PyTorch algorithm vs standard attention (S and P materialised),
       N = 1k…16k, 1 head, d = 64; each point in a fresh process (see methods/attention_bench.py).
       The CPU's tiled version is Python loops over blocks: slower than standard attention, which
       is not the paper's claim (that is about GPU memory traffic) and is reported as measured.
paper  with --gpu: the Triton kernels vs naive attention and F.scaled_dot_product_attention over
       N = 128…16k at the papers' benchmark shape (fp16, d = 64, 16k tokens per batch, Fig. 3 of
       FA1 / Fig. 4 of FA2): time (CUDA events, median of 10) and peak allocated memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from papercli.errors import PapercliError, UsageError
from papercli.methods import attention_bench as bench
from papercli.reproduce.config import bounded
from papercli.reproduce.engine import Recipe, TrainConfig


@dataclass
class FlashConfig(TrainConfig):
    algorithms: tuple[str, ...] = (
        "flash",
        "standard",
    )  # the first is the recipe's own (bench.ALGORITHMS)
    seq_lens: tuple[int, ...] = (1024, 2048, 4096, 8192, 16384)  # one per step
    tokens: int = bounded(0, ge=0)  # batch = max(1, tokens // N); 0 = batch 1
    heads: int = bounded(1, ge=1)
    head_dim: int = bounded(64, ge=1)
    block: int = bounded(128, ge=16)  # Br = Bc
    causal: bool = False
    dtype: str = "float32"  # of the timed runs; exactness is always checked in fp32
    exact_n: int = bounded(1000, ge=2)  # not a multiple of the block: the last block is ragged
    exact_heads: int = bounded(2, ge=1)
    # torch threads per measuring process: the tiled loop's block-sized ops gain nothing from
    # more, and on shared cores extra threads thrash (a 4k point went from 0.9 s to 49 s)
    threads: int = bounded(1, ge=1)


def mini_config(algorithm: str) -> FlashConfig:
    return FlashConfig(
        algorithms=(algorithm, "standard"), steps=5, batch_size=1, eval_every=1, log_every=1
    )


def paper_config(algorithms: tuple[str, ...]) -> FlashConfig:
    lens = tuple(2**i for i in range(7, 15))  # 128 … 16k
    return FlashConfig(
        algorithms=algorithms,
        seq_lens=lens,
        tokens=16384,
        heads=16,
        block=64,
        dtype="float16",
        steps=len(lens),
        batch_size=1,
        eval_every=1,
        log_every=1,
    )


class AttentionBenchRecipe(Recipe):
    """The measuring recipe; subclasses name their paper, algorithm and scales."""

    unit = "tokens"
    cfg: FlashConfig

    def __init__(self, cfg: FlashConfig, ctx):
        super().__init__(cfg, ctx)
        if cfg.steps > len(cfg.seq_lens):
            raise UsageError(
                f"this recipe measures one sequence length per step: steps ({cfg.steps}) must be "
                f"at most the {len(cfg.seq_lens)} lengths in seq_lens"
            )
        unknown = [a for a in cfg.algorithms if a not in bench.ALGORITHMS]
        if unknown or not cfg.algorithms:
            raise UsageError(
                f"--set algorithms: unknown {', '.join(unknown) or '(none given)'} "
                f"(choose from {', '.join(bench.ALGORITHMS)})"
            )
        self.points: dict[str, dict[str, dict[str, float]]] = {}  # algorithm -> N -> measures

    def describe(self, counts: dict[str, Any]) -> str:
        c = self.cfg
        lens = ", ".join(_short(n) for n in c.seq_lens[: c.steps])
        where = "GPU (CUDA)" if self.gpu_scale else "CPU, a fresh process per point"
        batch = f"batch {_short(c.tokens)} tokens / N × " if c.tokens else ""
        return (
            f"no training: forward + backward of {' vs '.join(c.algorithms)}, N = {lens}, "
            f"{batch}{c.heads} head(s) × d {c.head_dim}, {c.dtype}; peak memory and time on the "
            f"{where}"
        )

    @property
    def gpu_scale(self) -> bool:
        return any(a.startswith("triton") or a == "sdpa" for a in self.cfg.algorithms)

    def data_source(self) -> str:
        return "random q, k, v ~ N(0, 1) (seeded); nothing to download"

    def setup_data(self) -> None:
        if self.ctx.device.type != "cuda" and self.gpu_scale:
            raise UsageError(
                "this scale times Triton kernels and SDPA on a GPU: add --gpu (or use --scale mini)"
            )
        if self.gpu_scale:
            try:
                import triton  # noqa: F401
            except ImportError:
                raise PapercliError("the GPU scale needs Triton: pip install triton") from None

    # --- no model, no optimizer ----------------------------------------------------------------
    def build_model(self) -> nn.Module:
        return nn.Module()

    def configure_optimizers(self, model: nn.Module) -> dict:
        return {}

    def point(self, algorithm: str, n: int) -> bench.Point:
        c = self.cfg
        batch = max(1, c.tokens // n) if c.tokens else 1
        return bench.Point(
            algorithm, n, c.heads, c.head_dim, c.causal, c.block, self.ctx.seed, batch
        )

    def train_step(self, step: int, trainer) -> dict[str, float]:
        """Measure every algorithm at the step's sequence length."""
        n = self.cfg.seq_lens[step]
        logged = {}
        for algorithm in self.cfg.algorithms:
            p = self.point(algorithm, n)
            if self.ctx.device.type == "cuda":
                m = bench.measure_gpu(p, dtype=getattr(torch, self.cfg.dtype))
            else:
                m = bench.measure_cpu(p, self.cfg.threads)
            self.points.setdefault(algorithm, {})[str(n)] = m
            logged[f"{algorithm}_mib"] = m["peak_bytes"] / 2**20
            logged[f"{algorithm}_ms"] = m["seconds"] * 1e3
            trainer.units += p.batch * p.heads * n
        return logged

    def state_dict(self) -> dict[str, Any]:
        return {"points": self.points}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.points = state.get("points", {})

    # --- the verdict's metrics ------------------------------------------------------------------
    def exactness(self) -> dict[str, float]:
        """Largest |error| of the recipe's algorithm (fp32, on this device) against float64
        standard attention, causal and not."""
        c, own = self.cfg, self.cfg.algorithms[0]
        worst: dict[str, float] = {}
        for causal in (False, True):
            p = bench.Point(own, c.exact_n, c.exact_heads, c.head_dim, causal, c.block)
            fn = bench.attention_fn(own, c.block)
            errors = bench.attention_errors(fn, p, self.ctx.device)
            for name, e in errors.items():
                worst[name] = max(worst.get(name, 0.0), e)
        return {f"max_abs_error_{k}": v for k, v in worst.items()} | {
            "max_abs_error": max(worst.values())
        }

    def final_metrics(self, model: nn.Module, last_eval: dict[str, float]) -> dict[str, float]:
        m = self.exactness()
        for algorithm, by_n in self.points.items():
            ns = sorted(int(n) for n in by_n)
            for n in ns:
                m[f"{algorithm}_mib_{n}"] = by_n[str(n)]["peak_bytes"] / 2**20
                m[f"{algorithm}_ms_{n}"] = by_n[str(n)]["seconds"] * 1e3
            m[f"{algorithm}_memory_slope"] = bench.loglog_slope(
                ns, [by_n[str(n)]["peak_bytes"] for n in ns]
            )
        return m | self.comparisons(m)

    def comparisons(self, m: dict[str, float]) -> dict[str, float]:
        """The recipe's own summary metrics from the per-N ones (see the subclasses)."""
        own, longest = self.cfg.algorithms[0], max(self.measured_lengths(), default=0)
        if not longest:
            return {}
        out = {"tiled_memory_slope": m[f"{own}_memory_slope"]}
        if "standard" in self.points:
            out["standard_memory_slope"] = m["standard_memory_slope"]
            out["memory_saving_at_longest"] = (
                m[f"standard_mib_{longest}"] / m[f"{own}_mib_{longest}"]
            )
            out["speedup_over_standard_at_longest"] = (
                m[f"standard_ms_{longest}"] / m[f"{own}_ms_{longest}"]
            )
        return out

    def measured_lengths(self) -> list[int]:
        return sorted({int(n) for by_n in self.points.values() for n in by_n})

    def plots(self, model: nn.Module, run_dir) -> None:
        """attention.md: the Fig. 3-style table of time and peak memory per N and algorithm."""
        algorithms = list(self.points)
        head = "| N | " + " | ".join(f"{a} ms | {a} MiB" for a in algorithms) + " |"
        rows = [head, "|" + " --- |" * (1 + 2 * len(algorithms))]
        for n in self.measured_lengths():
            cells = []
            for a in algorithms:
                got = self.points[a].get(str(n))
                cells += (
                    [f"{got['seconds'] * 1e3:.1f}", f"{got['peak_bytes'] / 2**20:.1f}"]
                    if got
                    else ["", ""]
                )
            rows.append(f"| {n} | " + " | ".join(cells) + " |")
        where = torch.cuda.get_device_name() if self.ctx.device.type == "cuda" else "CPU"
        c = self.cfg
        title = (
            f"# forward + backward, {c.heads} head(s) × d {c.head_dim}, {c.dtype}, "
            f"causal={c.causal}, on {where}\n\n"
        )
        (run_dir / "attention.md").write_text(title + "\n".join(rows) + "\n", encoding="utf-8")


def _short(n: int) -> str:
    return f"{n // 1024}k" if n % 1024 == 0 else str(n)
