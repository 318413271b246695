"""An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale (Dosovitskiy et al., 2020).

Claims checked at mini scale:
  1. a pure transformer on image patches (Section 3.1, Eq. 1-4) learns real image classification
     — test accuracy on Fashion-MNIST above a stated bar;
  2. the paper's small-data finding (Section 4.3, Fig. 3/4): trained from scratch on a small data
     set with the same budget, ViT *trails* a ResNet of similar size, because it lacks the CNN's
     inductive biases (locality, translation equivariance); it needs large pre-training to win.

Both arms train side by side on identical batches, each with its customary optimiser:
  ViT     Adam(W) with β = (0.9, 0.999), linear warm-up then cosine decay, gradient clipping at
          global norm 1 (Appendix B.1)
  ResNet  SGD with momentum 0.9 (the BiT-style baseline), same warm-up + cosine shape

    mini   ViT-mini/7 (our laptop size: D=64, 6 blocks, 4 heads, 7x7 patches; 0.20M params) vs
           ResNet-20 (0.27M) on Fashion-MNIST at 28 px, 1000 steps of 128
    paper  ViT-B/16 at 224 px on an ImageNet folder from --data: batch 4096, Adam lr 3e-3, weight
           decay 0.3, 10k warm-up steps, cosine decay, 300 epochs, dropout 0.1 (Table 3);
           `--set baseline.model=resnet50` adds the ResNet arm
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
from papercli.reproduce.optim import warmup_cosine, weight_decay_groups


@dataclass(frozen=True)
class Baseline:
    """A CNN arm trained alongside the ViT on the same batches (`model=""`: ViT alone)."""

    model: str = ""  # e.g. resnet20 (CIFAR family on small images), resnet50 (ImageNet)
    width: int = bounded(16, ge=1)  # CIFAR-style baselines only
    lr: float = bounded(0.1, gt=0.0)
    weight_decay: float = bounded(1e-4, ge=0.0)


@dataclass
class ViTTrainConfig(ClassificationConfig):
    model: str = "vit-b/16"
    patch_size: int = bounded(0, ge=0)  # 0 = from the model name
    dropout: float = fraction(0.0)
    lr: float = bounded(3e-3, gt=0.0)
    weight_decay: float = bounded(0.3, ge=0.0)
    beta2: float = fraction(0.999)
    warmup_steps: int = bounded(10_000, ge=0)
    baseline: Baseline = Baseline()  # --set baseline.model=resnet50 --set baseline.lr=0.05


PAPER = ViTTrainConfig(
    dataset="imagenet",
    image_size=224,
    model="vit-b/16",
    steps=93_750,
    batch_size=4096,  # global (Table 3)
    micro_batch_size=256,  # per GPU: 16 accumulation steps on one GPU, 2 on eight
    eval_every=3125,
    log_every=100,
    lr=3e-3,
    weight_decay=0.3,
    warmup_steps=10_000,
    dropout=0.1,
    grad_clip=1.0,
)
# Augmentation off at mini scale: Fashion-MNIST items are centred and upright, and both arms see the
# same raw batches (the comparison, not the absolute accuracy, is the point).
MINI = ViTTrainConfig(
    dataset="fashion-mnist",
    model="vit-mini/7",
    steps=1000,
    batch_size=128,
    eval_every=250,
    lr=1e-3,
    weight_decay=0.05,
    warmup_steps=50,
    grad_clip=1.0,
    baseline=Baseline(model="resnet20"),
    augment=False,
    eval_train_samples=2000,
    eval_test_samples=5000,
)


class ViTRecipe(ClassificationRecipe):
    paper = "vit"
    config_class = ViTTrainConfig
    scales = {"mini": MINI, "paper": PAPER}
    cfg: ViTTrainConfig
    baseline_arm = "resnet"  # the CNN arm's name (DeiT's teacher)
    no_decay = ("pos_embed", "cls_token", "dist_token")  # weight matrices kept out of the decay

    def model_overrides(self) -> dict[str, object]:
        """Size, channels and classes from the data; what every patch-based arm is built with."""
        overrides: dict[str, object] = {
            "image_size": self.input_size,
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "dropout": self.cfg.dropout,
        }
        if self.cfg.patch_size:
            overrides["patch_size"] = self.cfg.patch_size
        return overrides

    def patch_arms(self) -> dict[str, nn.Module]:
        """The arms trained with AdamW (a recipe on ViT's may train several, e.g. DeiT's)."""
        return {"vit": create_model(self.cfg.model, **self.model_overrides())}

    def build_model(self) -> nn.Module:
        arms = self.patch_arms()
        if self.cfg.baseline.model:
            name = self.cfg.baseline.model
            cifar = self.cfg.dataset != "imagenet"
            extra = {"width": self.cfg.baseline.width} if cifar else {}
            arms[self.baseline_arm] = create_model(
                f"{name}-cifar" if cifar else name,
                in_channels=self.in_channels,
                num_classes=self.num_classes,
                **extra,
            )
        return Arms(arms)

    def schedule_steps(self, arm: str) -> int:
        """Steps over which an arm's schedule runs (all of them; DeiT's phases split them)."""
        return self.cfg.steps

    def configure_optimizers(self, model: nn.Module):
        # Appendix B.1: Adam, β1 = 0.9, β2 = 0.999, high weight decay (decoupled here, AdamW);
        # no decay on biases, LayerNorm and the position/class embeddings.
        optimizers = {
            name: torch.optim.AdamW(
                weight_decay_groups(arm, self.cfg.weight_decay, skip=self.no_decay),
                lr=self.cfg.lr,
                betas=(0.9, self.cfg.beta2),
            )
            for name, arm in model.items()
            if name != self.baseline_arm
        }
        if self.baseline_arm in model:
            optimizers[self.baseline_arm] = torch.optim.SGD(
                model[self.baseline_arm].parameters(),
                lr=self.cfg.baseline.lr,
                momentum=0.9,
                weight_decay=self.cfg.baseline.weight_decay,
            )
        return {
            name: (opt, warmup_cosine(opt, self.cfg.warmup_steps, self.schedule_steps(name)))
            for name, opt in optimizers.items()
        }

    def final_metrics(self, model: nn.Module, last_eval: dict[str, float]) -> dict[str, float]:
        m = dict(last_eval)
        if "resnet" in model and "vit" in model:
            # positive: the CNN wins on small data, as Section 4.3 finds
            m["resnet_minus_vit_acc"] = m["resnet_test_acc"] - m["vit_test_acc"]
        return m


if __name__ == "__main__":
    run(ViTRecipe)
