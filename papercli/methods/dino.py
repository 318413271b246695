"""DINO: self-distillation with no labels (Caron et al., 2021, arXiv:2104.14294), Sec. 3.1 and
Algorithm 1.

A student g_θs and a teacher g_θt of the same architecture (a ViT backbone, then `DINOHead`) see
different crops of one image. The teacher's output on each *global* view, centred and sharpened,

    P_t(x) = softmax((g_θt(x) − c) / τ_t),      P_s(x) = softmax(g_θs(x) / τ_s)

is the target for the student's output on every *other* view (global and local):

    min_θs  Σ_{x ∈ {x1_g, x2_g}}  Σ_{x' ∈ V, x' ≠ x}  H(P_t(x), P_s(x')),   H(a, b) = −a·log b   (Eq. 3)

The teacher gets no gradients: it is an exponential moving average of the student, with a
momentum that follows a cosine schedule from 0.996 to 1 (Sec. 3.1, "Teacher network"). The centre
c is an EMA (m = 0.9) of the teacher's batch-mean output (Eq. 4). Centring alone would drive P_t to
the uniform distribution, sharpening alone (a low τ_t) to one dimension: the two together avoid
collapse (Sec. 5.3, Fig. 7), which `collapse_monitor` measures.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class DINOHead(nn.Module):
    """The projection head (Sec. 3.1, Appendix): a 3-layer MLP (hidden 2048, GELU) to a bottleneck
    of 256, ℓ2 normalisation, then a weight-normalised linear layer to K outputs without bias,
    F.linear(z, g · V / ‖V‖_row). With `norm_last_layer` (the released code's default) the scale g
    is fixed at 1, so the last layer is a matrix of unit rows; without it g is learnt (one scale
    per output, initialised to 1), which the released code's help text says "leads to better
    performance but can make the training unstable" and uses for ViT-S."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden: int = 2048,
        bottleneck: int = 256,
        norm_last_layer: bool = True,
    ):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden),
            nn.GELU(),
            nn.Linear(hidden, hidden),
            nn.GELU(),
            nn.Linear(hidden, bottleneck),
        )
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = nn.Parameter(torch.empty(out_dim, bottleneck))
        nn.init.trunc_normal_(self.last_layer, std=0.02)
        # g of the weight norm: a (K, 1) matrix as in torch's weight_norm, so it is decayed too
        self.last_layer_g = None if norm_last_layer else nn.Parameter(torch.ones(out_dim, 1))

    def last_layer_parameters(self) -> list[nn.Parameter]:
        """V and (when learnt) g: the parameters frozen during the first epoch."""
        return [self.last_layer] + ([] if self.last_layer_g is None else [self.last_layer_g])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = F.normalize(self.mlp(x), dim=-1)
        weight = F.normalize(self.last_layer, dim=-1)
        if self.last_layer_g is not None:
            weight = self.last_layer_g * weight
        return F.linear(z, weight)


class DINO(nn.Module):
    """Backbone (a ViT whose classifier is removed: its output is the normalised [CLS] state, the
    feature k-NN evaluates) followed by the DINO head. Views of different sizes are run in groups of
    equal size, as the released code does (the ViT interpolates its position table)."""

    def __init__(self, backbone: nn.Module, head: DINOHead):
        super().__init__()
        self.backbone, self.head = backbone, head

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward(self, views: list[torch.Tensor]) -> list[torch.Tensor]:
        outputs: list[torch.Tensor] = []
        start = 0
        while start < len(views):
            end = start
            while end < len(views) and views[end].shape[-1] == views[start].shape[-1]:
                end += 1
            group = self.head(self.backbone(torch.cat(views[start:end])))
            outputs.extend(group.chunk(end - start))
            start = end
        return outputs


class DINOLoss(nn.Module):
    """Eq. 3 with the teacher's centring and sharpening; the centre is a buffer (it is saved and
    restored with the loss module)."""

    def __init__(self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9):
        super().__init__()
        self.student_temp, self.center_momentum = student_temp, center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def teacher_probs(self, teacher_out: torch.Tensor, teacher_temp: float) -> torch.Tensor:
        """P_t: centred, then sharpened by the low temperature τ_t."""
        return F.softmax((teacher_out.float() - self.center) / teacher_temp, dim=-1)

    def forward(
        self, student_out: list[torch.Tensor], teacher_out: list[torch.Tensor], teacher_temp: float
    ) -> torch.Tensor:
        """Mean of H(P_t(x), P_s(x')) over the pairs of *different* views (Algorithm 1); the
        teacher's outputs are those of the global views, which come first in the student's list."""
        targets = [self.teacher_probs(t.detach(), teacher_temp) for t in teacher_out]
        log_student = [F.log_softmax(s.float() / self.student_temp, dim=-1) for s in student_out]
        total, pairs = 0.0, 0
        for i, p_t in enumerate(targets):
            for j, log_p_s in enumerate(log_student):
                if i == j:  # the same view: no target for itself
                    continue
                total = total + (-p_t * log_p_s).sum(-1).mean()
                pairs += 1
        self.update_center(torch.cat(teacher_out).detach())
        return total / pairs

    @torch.no_grad()
    def update_center(self, teacher_out: torch.Tensor) -> None:
        """Eq. 4: c ← m c + (1 − m) · mean of the batch's teacher outputs (all-reduced over
        processes, so every rank keeps the same centre)."""
        batch_center = teacher_out.float().mean(0, keepdim=True)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(batch_center)
            batch_center /= torch.distributed.get_world_size()
        self.center.mul_(self.center_momentum).add_(batch_center, alpha=1 - self.center_momentum)


def teacher_temperature(step: int, warmup_steps: int, start: float, end: float) -> float:
    """τ_t: a linear warm-up from `start` to `end` (0.04 → 0.07 over 30 epochs, Sec. 4.1), then
    constant."""
    if step >= warmup_steps:
        return end
    return start + (end - start) * step / max(1, warmup_steps)


def teacher_momentum(step: int, total_steps: int, base: float = 0.996) -> float:
    """λ of the teacher's EMA: a cosine schedule from `base` (0.996) to 1 during training."""
    progress = min(1.0, step / max(1, total_steps))
    return 1.0 - (1.0 - base) * (math.cos(math.pi * progress) + 1) / 2


@torch.no_grad()
def collapse_monitor(p_teacher: torch.Tensor, log_p_student: torch.Tensor) -> dict[str, float]:
    """Fig. 7's two terms of H(P_t, P_s) = h(P_t) + KL(P_t ‖ P_s), as fractions of log K where
    that helps reading them: a one-dimension collapse drives h(P_t) to 0, a uniform collapse to
    log K (and KL to 0 in both). `batch_entropy` is the entropy of the batch-mean P_t: high when
    different images pick different dimensions."""
    log_k = math.log(p_teacher.shape[-1])
    log_p_t = p_teacher.clamp_min(1e-12).log()
    entropy = -(p_teacher * log_p_t).sum(-1).mean()
    kl = (p_teacher * (log_p_t - log_p_student)).sum(-1).mean()
    mean = p_teacher.mean(0)
    batch_entropy = -(mean * mean.clamp_min(1e-12).log()).sum()
    return {
        "teacher_entropy": float(entropy / log_k),
        "teacher_batch_entropy": float(batch_entropy / log_k),
        "teacher_student_kl": float(kl),
    }
