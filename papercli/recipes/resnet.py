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

ImageNet (`--set dataset=imagenet --data PATH`, Section 3.4, Table 2): the arms become the ImageNet
networks of Table 1 — plain-18, plain-34, ResNet-18 and ResNet-34 by default (7x7 stem, option B
projection shortcuts), or any of resnet/plain 18, 34, 50, 101, 152 (bottlenecks from 50 on), e.g.
`--set arms=resnet50`; the comparisons below then use depths 18 and 34. The paper's schedule there:
`--batch-size 256 --steps 600000 --set image_size=224` (lr 0.1 ÷10 on plateaus, weight decay 1e-4).
An arm that does not fit the data set (resnet56 on ImageNet, resnet50 on 28 px images) is refused.

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

import re
from dataclasses import dataclass

import torch
from torch import nn

from papercli.models import create_model
from papercli.models.resnet import IMAGENET_LAYERS
from papercli.recipes._classification import ClassificationConfig, ClassificationRecipe
from papercli.reproduce.arms import Arms
from papercli.reproduce.config import bounded, fraction
from papercli.reproduce.engine import run


@dataclass
class ResNetTrainConfig(ClassificationConfig):
    arms: tuple[str, ...] = ()  # () = the data set's comparison: plain/ResNet at DEPTHS
    width: int = bounded(16, ge=1)  # CIFAR family: filters of the first stage (the paper: 16)
    lr: float = bounded(0.1, gt=0.0)
    momentum: float = fraction(0.9)
    weight_decay: float = bounded(1e-4, ge=0.0)
    # lr ÷10 at these fractions of training (32k/64k, 48k/64k)
    lr_drops: tuple[float, ...] = (0.5, 0.75)
    # Section 4.2 (ResNet-110): lr 0.01 until training error < 80%, ~400 iterations
    warmup_steps: int = bounded(0, ge=0)


# (shallow, deep) depths of the comparison: Fig. 6 on small images, Table 2 / Fig. 4 on ImageNet
DEPTHS = {"small": (20, 56), "imagenet": (18, 34)}
ARM = re.compile(r"(resnet|plain)(\d+)")

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

    @property
    def family(self) -> str:
        return "imagenet" if self.cfg.dataset == "imagenet" else "small"

    @property
    def arm_names(self) -> tuple[str, ...]:
        shallow, deep = DEPTHS[self.family]
        default = (f"plain{shallow}", f"plain{deep}", f"resnet{shallow}", f"resnet{deep}")
        return self.cfg.arms or default

    def _arm(self, name: str) -> nn.Module:
        """The network an arm name means on this data set: Table 1's ImageNet family or the
        6n+2-layer CIFAR family (Section 4.2); a name of the other family is refused."""
        match = ARM.fullmatch(name)
        if not match:
            raise ValueError(f"arm '{name}' is not resnet<depth> or plain<depth> (e.g. resnet56)")
        depth = int(match.group(2))
        common = {"in_channels": self.in_channels, "num_classes": self.num_classes}
        if self.family == "imagenet":
            if depth not in IMAGENET_LAYERS:
                raise ValueError(
                    f"arm '{name}' does not fit imagenet: its networks (Table 1) have "
                    f"{', '.join(map(str, IMAGENET_LAYERS))} layers"
                )
            return create_model(name, **common)
        if depth in IMAGENET_LAYERS or (depth - 2) % 6:
            raise ValueError(
                f"arm '{name}' does not fit {self.cfg.dataset}: small images take the CIFAR "
                "networks of 6n+2 layers (Section 4.2: 20, 32, 44, 56, 110); the 18/34/50/101/152-"
                "layer ImageNet networks need dataset=imagenet"
            )
        return create_model(f"{name}-cifar", width=self.cfg.width, **common)

    def build_model(self) -> nn.Module:
        return Arms({name: self._arm(name) for name in self.arm_names})

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
        have = set(self.arm_names)
        s, d = DEPTHS[self.family]
        loss = {name: m.get(f"{name}_train_loss") for name in have}
        if {f"plain{d}", f"resnet{d}"} <= have:
            m["residual_vs_plain_acc"] = m[f"resnet{d}_test_acc"] - m[f"plain{d}_test_acc"]
        if None in loss.values():  # no training-loss evaluation: nothing more to compare
            return m
        if {f"plain{d}", f"resnet{d}"} <= have:
            m["residual_vs_plain_loss"] = loss[f"plain{d}"] - loss[f"resnet{d}"]
        if {f"plain{s}", f"plain{d}"} <= have:
            m["plain_degradation"] = loss[f"plain{d}"] - loss[f"plain{s}"]
        if {f"resnet{s}", f"resnet{d}"} <= have:
            m["residual_depth_gain"] = loss[f"resnet{s}"] - loss[f"resnet{d}"]
        if {f"plain{s}", f"plain{d}", f"resnet{s}", f"resnet{d}"} <= have:
            # Share of the plain net's depth penalty that shortcuts remove: 1 = the deep ResNet
            # trains at least as well as the shallow one. Robust to the near-tie a short budget
            # leaves between them.
            penalty = max(0.0, -m["residual_depth_gain"])
            m["depth_penalty_removed"] = (
                1.0 - penalty / m["plain_degradation"] if m["plain_degradation"] > 0 else 0.0
            )
        return m


if __name__ == "__main__":
    run(ResNetRecipe)
