"""Deep Residual Learning for Image Recognition (He, Zhang, Ren & Sun, 2015).

Central claim (Section 4.1, Fig. 4; Section 4.2, Fig. 6): plain networks *degrade* with depth —
the deeper plain net has a higher *training* error than the shallower one, so the problem is
optimisation, not overfitting — while residual networks of the same depth train better and keep
improving with depth.

The recipe trains four CIFAR-style networks side by side on identical batches: plain-20, plain-56,
ResNet-20 and ResNet-56 (Section 4.2: 6n+2 layers, 16/32/64 filters, option A shortcuts).
    paper  CIFAR-10, batch 128, SGD lr 0.1, momentum 0.9, weight decay 1e-4, lr ÷10 at 32k and 48k
           iterations, 64k in all, 4-pixel pad + random 32x32 crop + horizontal flip
    mini   Fashion-MNIST (real, offline) at 14x14 px with filters halved to 8/16/32, so that the four
           arms train for ~2.5 epochs in under 5 CPU-minutes; schedule shape as in the paper
Single models (e.g. ResNet-110 at paper scale): `--set arms=resnet110`.

Metrics per arm: <arm>_train_loss (eval-mode cross-entropy on a fixed training subset; Fig. 6 plots
training error), <arm>_train_error, <arm>_test_acc. Comparisons for the verdict (positive = the
paper's direction):
    residual_vs_plain_loss  plain56 − resnet56 training loss   (the residual net trains better)
    residual_vs_plain_acc   resnet56 − plain56 test accuracy   (and generalises better)
    plain_degradation       plain56 − plain20 training loss    (the deeper plain net is worse)
    residual_depth_gain     resnet20 − resnet56 training loss  (the deeper residual net is not…)
    depth_penalty_removed   1 − max(0, −residual_depth_gain) / plain_degradation
                            (…: the share of plain-56's depth penalty that shortcuts remove)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from papercli.models import create_model
from papercli.recipes._classification import ClassificationConfig, ClassificationRecipe
from papercli.reproduce.arms import Arms
from papercli.reproduce.config import bounded, fraction
from papercli.reproduce.engine import run


@dataclass
class ResNetTrainConfig(ClassificationConfig):
    arms: tuple[str, ...] = ("plain20", "plain56", "resnet20", "resnet56")
    width: int = bounded(16, ge=1)  # filters of the first stage (the paper: 16)
    lr: float = bounded(0.1, gt=0.0)
    momentum: float = fraction(0.9)
    weight_decay: float = bounded(1e-4, ge=0.0)
    # lr ÷10 at these fractions of training (32k/64k, 48k/64k)
    lr_drops: tuple[float, ...] = (0.5, 0.75)
    # Section 4.2 (ResNet-110): lr 0.01 until training error < 80%, ~400 iterations
    warmup_steps: int = bounded(0, ge=0)


PAPER = ResNetTrainConfig(
    dataset="cifar10", steps=64_000, batch_size=128, eval_every=2000, log_every=100
)
MINI = ResNetTrainConfig(
    dataset="fashion-mnist",
    image_size=14,
    width=8,
    steps=1000,
    batch_size=128,
    eval_every=250,
    warmup_steps=50,
    eval_train_samples=2000,
    eval_test_samples=2000,
)


class ResNetRecipe(ClassificationRecipe):
    paper = "resnet"
    config_class = ResNetTrainConfig
    scales = {"mini": MINI, "paper": PAPER}
    cfg: ResNetTrainConfig

    def build_model(self) -> nn.Module:
        return Arms(
            {
                name: create_model(
                    f"{name}-cifar",
                    width=self.cfg.width,
                    in_channels=self.in_channels,
                    num_classes=self.num_classes,
                )
                for name in self.cfg.arms
            }
        )

    def configure_optimizers(self, model: nn.Module):
        # Section 4.2: SGD, momentum 0.9, weight decay 1e-4; lr 0.1, divided by 10 at 50% and 75%
        milestones = [int(f * self.cfg.steps) for f in self.cfg.lr_drops]
        warmup = self.cfg.warmup_steps

        def factor(step: int) -> float:
            if step < warmup:
                return 0.1  # the paper's 0.01 warm-up for very deep nets
            return 0.1 ** sum(step >= m for m in milestones)

        optimizers = {}
        for name, arm in model.items():  # one optimizer per arm, stepped in arm order
            opt = torch.optim.SGD(
                arm.parameters(),
                lr=self.cfg.lr,
                momentum=self.cfg.momentum,
                weight_decay=self.cfg.weight_decay,
            )
            optimizers[name] = (opt, torch.optim.lr_scheduler.LambdaLR(opt, factor))
        return optimizers

    def final_metrics(self, model: nn.Module, last_eval: dict[str, float]) -> dict[str, float]:
        m = dict(last_eval)
        have = set(self.cfg.arms)
        if {"plain56", "resnet56"} <= have:
            m["residual_vs_plain_loss"] = m["plain56_train_loss"] - m["resnet56_train_loss"]
            m["residual_vs_plain_acc"] = m["resnet56_test_acc"] - m["plain56_test_acc"]
        if {"plain20", "plain56"} <= have:
            m["plain_degradation"] = m["plain56_train_loss"] - m["plain20_train_loss"]
        if {"resnet20", "resnet56"} <= have:
            m["residual_depth_gain"] = m["resnet20_train_loss"] - m["resnet56_train_loss"]
        if {"plain20", "plain56", "resnet20", "resnet56"} <= have:
            # Share of the plain net's depth penalty that shortcuts remove: 1 = ResNet-56 trains at
            # least as well as ResNet-20. Robust to the near-tie a short budget leaves between them.
            penalty = max(0.0, -m["residual_depth_gain"])
            m["depth_penalty_removed"] = (
                1.0 - penalty / m["plain_degradation"] if m["plain_degradation"] > 0 else 0.0
            )
        return m


if __name__ == "__main__":
    run(ResNetRecipe)
