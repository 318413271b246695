"""Efficiently Modeling Long Sequences with Structured State Spaces (Gu, Goel & Ré, 2021) — S4.

Claim checked at mini scale (Sec. 4.2, Table 6: sequential image classification, where S4 reaches
91% on sequential CIFAR-10 and RNNs such as the LSTM trail far behind): read one pixel at a time,
an image is a sequence with long-range dependencies, and an S4 network learns it better than an
LSTM of about the same number of parameters trained on the same batches for the same steps.

The model (papercli/models/ssm.py) follows the paper section by section:
  Sec. 2.1–2.2  the state space x' = Ax + Bu, y = Cx + Du with A the HiPPO-LegS matrix (Eq. 2);
  Sec. 2.3      bilinear discretisation → a recurrence (Eq. 3), used for generation;
  Sec. 2.4, 3   its convolution kernel K̄ (Eq. 5) computed by Algorithm 1: A normal plus low-rank
                (Λ − P P*), the generating function at the roots of unity, four Cauchy kernels
                joined by the Woodbury identity, an inverse FFT — used for training (FFT
                convolution). tests/test_ssm.py checks the two views give equal outputs.
  Sec. 3.4      the deep network: H independent SSMs per layer, GELU, a position-wise linear
                layer, residual, LayerNorm; mean pooling and a linear classifier.
The SSM parameters (Λ, P, B, C̃, Δ) train with a smaller rate and no weight decay, as the paper's
code does; the rest with AdamW. The LSTM gets Adam at its own rate, the same warm-up and decay.

    mini   Fashion-MNIST as 784-step pixel sequences: S4 with H = 32, N = 64, 2 layers (about
           19k parameters) vs a one-layer LSTM with 64 units (about 18k), 300 steps of 32 images,
           accuracy on 1,000 test images; chance is 10%
    paper  sequential CIFAR-10 (1024 steps of RGB pixels): the Table 9 model, 6 layers, H = 1024,
           N = 64, LayerNorm, dropout 0.25, AdamW lr 0.01, weight decay 0.01, batch 50, 200
           epochs; the LSTM arm is off (`--set lstm_hidden=N` adds it). Causal (unidirectional)
           layers throughout, so the trained model can also run as a recurrence.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from papercli.models import create_model
from papercli.models.ssm import LSTMClassifier, S4Classifier, S4Config
from papercli.recipes._classification import ClassificationConfig, ClassificationRecipe
from papercli.reproduce.arms import Arms
from papercli.reproduce.config import bounded, fraction
from papercli.reproduce.engine import run
from papercli.reproduce.optim import warmup_cosine

SSM_PARAMS = ("kernel.",)  # Λ, P, B, C̃, Δ: the S4 kernel's own parameters


@dataclass
class S4TrainConfig(ClassificationConfig):
    model: str = ""  # a registered size (s4-scifar, s4-lra-image); "" = the fields below
    d_model: int = bounded(32, ge=1)  # H
    layers: int = bounded(2, ge=1)
    state: int = bounded(64, ge=2)  # N
    dropout: float = fraction(0.0)
    lr: float = bounded(1e-2, gt=0.0)
    ssm_lr: float = bounded(1e-3, gt=0.0)  # the kernel's parameters
    weight_decay: float = bounded(0.01, ge=0.0)
    warmup_steps: int = bounded(20, ge=0)
    lstm_hidden: int = bounded(64, ge=0)  # 0 = no LSTM arm
    lstm_lr: float = bounded(3e-3, gt=0.0)


MINI = S4TrainConfig(
    dataset="fashion-mnist",
    steps=300,
    batch_size=32,
    eval_every=150,
    log_every=25,
    augment=False,  # a pixel sequence, not an image: no crops or flips
    eval_train_samples=200,
    eval_test_samples=1000,
    grad_clip=1.0,
)
PAPER = S4TrainConfig(
    dataset="cifar10",
    model="s4-scifar",
    steps=200 * 50_000 // 50,  # 200 epochs of batch 50 (Table 9)
    batch_size=50,
    eval_every=1000,
    log_every=100,
    augment=False,  # Table 6: "no data augmentation"
    lr=1e-2,
    weight_decay=0.01,
    warmup_steps=1000,
    lstm_hidden=0,
    eval_train_samples=2000,
)


class S4Recipe(ClassificationRecipe):
    paper = "s4"
    config_class = S4TrainConfig
    scales = {"mini": MINI, "paper": PAPER}
    channels_last = False  # sequences, not convolutions over images
    cfg: S4TrainConfig

    def build_model(self) -> nn.Module:
        c = self.cfg
        sizes = {"d_input": self.in_channels, "num_classes": self.num_classes}
        if c.model:
            s4 = create_model(c.model, dropout=c.dropout, **sizes)
        else:
            s4 = S4Classifier(
                S4Config(
                    d_model=c.d_model, layers=c.layers, state=c.state, dropout=c.dropout, **sizes
                )
            )
        arms = {"s4": s4}
        if c.lstm_hidden:
            arms["lstm"] = LSTMClassifier(self.in_channels, c.lstm_hidden, 1, self.num_classes)
        return Arms(arms)

    def configure_optimizers(self, model: nn.Module):
        c = self.cfg
        ssm = [p for n, p in model["s4"].named_parameters() if any(s in n for s in SSM_PARAMS)]
        rest = [p for n, p in model["s4"].named_parameters() if not any(s in n for s in SSM_PARAMS)]
        optimizers = {
            "s4": torch.optim.AdamW(
                [
                    {"params": rest, "weight_decay": c.weight_decay},
                    {"params": ssm, "weight_decay": 0.0, "lr": min(c.ssm_lr, c.lr)},
                ],
                lr=c.lr,
            )
        }
        if "lstm" in model:
            optimizers["lstm"] = torch.optim.Adam(model["lstm"].parameters(), lr=c.lstm_lr)
        return {
            name: (opt, warmup_cosine(opt, c.warmup_steps, c.steps))
            for name, opt in optimizers.items()
        }

    def final_metrics(self, model: nn.Module, last_eval: dict[str, float]) -> dict[str, float]:
        m = dict(last_eval)
        if "lstm" in model:
            # positive: S4 learns the pixel sequence better than the LSTM (Table 6)
            m["s4_minus_lstm_acc"] = m["s4_test_acc"] - m["lstm_test_acc"]
        return m


if __name__ == "__main__":
    run(S4Recipe)
