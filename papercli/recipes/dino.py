"""Emerging Properties in Self-Supervised Vision Transformers — DINO (Caron et al., 2021).

Claims checked at mini scale:
  1. self-distillation with no labels (Sec. 3.1, Algorithm 1; methods/dino.py) learns features
     that classify: the weighted k-NN accuracy (k = 20, T = 0.07, Sec. 4.1 / Table 2's protocol)
     of the frozen teacher's [CLS] features — training images as the memory, test images as the
     queries — is far above that of the same ViT at its random initialisation, and above a floor;
  2. centring and sharpening together avoid both collapses (Sec. 5.3, Fig. 7): the teacher's
     output entropy stays away from 0 (one dimension) and from log K (uniform), and different
     images use different output dimensions (the entropy of the batch-mean P_t stays high).

Labels are never used in training; the k-NN evaluation alone reads them.

Per step: each image gives 2 global crops (scale 0.4–1 of the area, at full size) and several local
crops (scale 0.05–0.4, at half size), with random horizontal flips. The student sees all of them,
the momentum teacher (EMA of the student, λ cosine 0.996 → 1) only the global ones.

    mini   ViT-mini/7 (D=64, 6 blocks; 0.20M) + head (hidden 256, bottleneck 128, K = 256) on
           Fashion-MNIST: 2 × 28 px global + 4 × 14 px local crops with BYOL's photometric
           augmentations, AdamW lr 1e-3 (60 warm-up steps, then cosine), batch 64, 1800 steps
           (1.9 epochs), τ_t 0.04, teacher momentum 0.99 → 1, the last layer frozen for 40 steps;
           k-NN on 5,000 training / 1,000 test images
    paper  ViT-S/16 on an ImageNet folder from --data (Sec. 4.1): 100 epochs of batch 1024, AdamW
           with lr 0.0005 × 1024/256, 10 warm-up epochs then cosine decay, weight decay cosine
           0.04 → 0.4, gradient clipping at 3, τ_s 0.1, τ_t 0.04 → 0.07 over 30 epochs, centre
           momentum 0.9, K = 65536, the last layer frozen for the first epoch, 2 × 224 px global and
           10 × 96 px local crops. `--set model=vit-b/16` for ViT-B/16. BYOL's colour
           jitter (without the hue shift), blur and solarisation are `photometric`: on in the
           mini, off at paper scale (crops and flips only; `--set photometric=true`).
           `--set norm_last_layer=false` learns the last layer's weight-norm scale g (the released
           code's setting for ViT-S; fixed at 1 by default).

Measured at mini scale (user CPU of one thread, OMP_NUM_THREADS=1, two runs side by side on the
2 cores; teacher k-NN at steps 600 / 1200 / 1800 against the random ViT's; entropy, batch-mean
entropy as fractions of log K, KL):
    seed 0   73.1 / 76.3 / 76.3% vs 64.8% (gain 11.5), 0.53 / 0.82 / 0.14, CPU 300 s
    seed 1   73.0 / 76.0 / 76.2% vs 62.0% (gain 14.2), 0.55 / 0.83 / 0.15, CPU 279 s
    seed 2   74.7 / 74.7 / 75.2% vs 64.6% (gain 10.6), 0.57 / 0.86 / 0.14, CPU 278 s
    seed 3   75.3% vs 63.9% (gain 11.4), CPU 261 s      seed 4   74.9% vs 62.9% (gain 12.0), 262 s
Every check passes on the five seeds. Timed as a user runs it (default threads, the 2 cores
otherwise idle): seeds 0 / 1 REPRODUCED with the same numbers in 198 / 205 s of wall time (392 s of
user CPU for seed 0's two threads). With bottleneck 64 (the mini until this was measured)
seeds 0 / 1 / 2 gave 75.1 / 76.3 / 76.3% (gains 10.3 / 14.3 / 11.7) and, with two threads on the
otherwise idle 2 cores (the check's setting), seeds 0 and 1 gave the same numbers to the last
digit in 199 / 194 s of wall time. The smallest margin, 0.6 points (seed 2), is under the ±1.4
points of binomial noise on 1,000 test images.

The former mini (300 steps of batch 128, lr 5e-4, crops and flips only) kept the teacher's k-NN
accuracy at the random ViT's (63.1 / 64.3 / 64.1% at steps 100 / 200 / 300 against 64.8%), with a
healthy collapse monitor (entropy 0.60 log K, batch-mean entropy 0.78 log K, KL 0.13): a fraction
of an epoch is far too little for DINO (the paper trains 100–800 epochs); an earlier probe (lr
1e-3, K = 1024, τ_t 0.04 → 0.07) drifted towards the uniform collapse (entropy 0.82 log K, KL 0.03)
with the same k-NN accuracy.

Probes for a mini that reproduces (seed 0, 300 steps of batch 64, warm-up 30 steps, teacher
momentum 0.98 → 1: a short run needs a lower start than the paper's 0.996, whose horizon of ~250
steps is most of the run; teacher k-NN against the random network's, both on the same 5,000 / 1,000
images; raw-pixel k-NN is 83.2%, so the random ViT/7's [CLS] already loses information):
    ViT-mini/7, lr 1e-3         64.1% vs 64.8% (CPU 72 s); entropy 0.65 log K
    ViT-mini/7, lr 3e-3, λ 0.95 61.6% vs 64.8% (CPU 88 s); near one-dimension collapse at step 100
    ViT-mini/4, 12 px locals    56.4% vs 58.8% at step 100 (mean of patch tokens 54.5%)
    resnet8-cifar, width 16     59.5% vs 64.1% at step 200; entropy 0.75–0.90 log K
No setting tried learns features above the random network's within the budget; `model=` takes a
CIFAR ResNet (`--set model=resnet8-cifar --set width=16`, Table 2's other backbone) as well as a ViT.

Issue 16 probes (user CPU seconds of one thread, measured while ~10 other processes shared the 2
cores, which inflates them: the 300-step mini took 72 s before). Teacher k-NN against the random
ViT's 64.8% (seed 0) at the evaluations, batch 128, λ 0.99 → 1:
    crops and flips only, lr 5e-4, 1100 steps        67.1 / 67.4% at 220 / 440 (stopped)
    + photometric (`photometric=true`), lr 5e-4,      69.7 / 71.3 / 73.3 / 73.6 / 73.7% at 220 … 1100
      1100 steps                                       (gain 8.9, CPU 339 s: over the budget);
                                                       entropy 0.56, batch entropy 0.81, KL 0.14
    the same, seed 1                                   67.7% vs 62.0% at 220 (stopped)
    the same, batch 64 × 2200 steps                    70.3% at 440 (the images of 220 above: 69.7%)
    + photometric, lr 1e-3, 900 steps                  69.5 / 72.0 / 73.1% at 300 / 600 / 900
                                                       (gain 8.3, CPU 281 s); 0.60 / 0.83 / 0.13
      the same, seed 1                                 70.2 / 71.5 / 72.6% vs 62.0% (gain 10.6: every
                                                       k-NN and monitor check passes; CPU 281 s)
    + photometric, lr 1e-3, λ 0.98 → 1, 900 steps      71.2 / 73.9 / 74.5% (gain 9.7: fails by 0.3;
                                                       CPU 266 s); 0.59 / 0.84 / 0.12
      the same, seed 1                                 70.6 / 73.9 / 74.3% vs 62.0% (gain 12.3;
                                                       CPU 245 s, wall 286 s: every check passes)
    + photometric, lr 1e-3, global scale 0.25–1, 900   69.3 / 72.9 / 72.9% (gain 8.1, CPU 266 s)
    + photometric, lr 1e-3, K = 1024, 900 steps        69.3 / 72.3 / 72.3% (gain 7.5, CPU 290 s)
    + photometric, lr 1e-3, 8 locals, 700 steps        69.1 / 70.7 / 70.2% at 300 / 600 / 700 (gain 5.4,
                                                       CPU 290 s)
    + photometric, lr 2e-3, 900 steps                  69.6 / 72.2 / 72.2% (gain 7.4, CPU 286 s)
    + photometric, lr 1e-3, blur σ 0.1–1 px, 900       69.9 / 72.1 / 73.0% (gain 8.2, CPU 283 s)
    resnet8-cifar, width 16                            half the ViT's images per second (68 vs
                                                       149/s): ~500 steps in the budget (stopped)
BYOL's augmentations are the one lever that moved the k-NN accuracy (+2.6 points at 220 steps;
73.7% at 1100 steps against the random network's 64.8%, above the 70% floor). Within ~280 s
the closest is `--steps 900 --set photometric=true --set lr=1e-3 --set teacher_momentum=0.98`
(a teacher that follows the student faster in a short run): seed 1 passes every check (74.3% vs
62.0%, gain 12.3) but seed 0 gains 9.7 points (74.5% vs 64.8%), 0.3 short of the 10 the check
asks. The same setting at 1,000 steps (the rest of the budget; 296 / 297 s of one-thread CPU,
the two seeds side by side on an otherwise idle machine): seed 0 73.9% (gain 9.1), seed 1 74.7%
(gain 12.7) — seed 0's gain moves with the step count by more than the 0.3 it lacks, so the miss
is not a matter of one more setting. A larger K, more local crops, larger global crops and a
higher lr did not help: still NOT reproduced, and the mini stays as it was.

Issue 16, second round: the issue's levers, each on top of that closest setting
(photometric, lr 1e-3, λ 0.98 → 1, 900 steps, seed 0; teacher k-NN at steps 300 / 600 / 900
against the random ViT's 64.8%; user CPU of one thread while 6–8 other processes shared the 2
cores; the k-NN reads the teacher backbone's normalised [CLS] state, as Sec. 4.1, and the baseline
reads the same state of the untrained copy):
    τ_t 0.04 → 0.07 over 270 steps (30%)        71.1 / 71.9% at 300 / 600 (stopped); entropy 0.91 /
      (Sec. 4.1's warm-up)                        0.87 log K, KL 0.03 / 0.02: towards the uniform
                                                  collapse, and 2 points under τ_t 0.04 at step 600
    τ_t 0.03 held                               70.5 / 72.8 / 73.4% (gain 8.6, CPU 281 s); sharper:
                                                  entropy 0.39, batch entropy 0.68, KL 0.21
    λ 0.96 → 1                                  68.9% at 300 (stopped; 71.2% at λ 0.98)
    λ 0.97 → 1                                  72.1 / 74.6 / 74.3% (gain 9.5, CPU 276 s); 0.54 /
                                                  0.77 / 0.10
      the same, seed 1                            71.7 / 74.6 / 74.2% vs 62.0% (gain 12.2, CPU 273 s)
    K = 128                                     73.4 / 73.9 / 74.7% (gain 9.9: fails by 0.1;
                                                  CPU 278 s); 0.52 / 0.81 / 0.12
    K = 128 and λ 0.97 → 1                      72.9 / 74.2 / 74.0% (gain 9.2, CPU 279 s); 0.50 /
                                                  0.78 / 0.11
    lr warm-up 90 steps (10%, as 10 of 100      71.9 / 72.8 / 73.4% (gain 8.6, CPU 278 s)
      epochs)
    local crops at scale 0.1–0.4 (9–18 px of    70.4 / 74.0 / 74.5% (gain 9.7, CPU 281 s)
      the 28, not 6–18)
    2 local crops, 1100 steps (cheaper steps,   69.8 / 72.7 / 73.3 / 73.4% at 275 … 1100 (gain 8.6,
      the same CPU)                               CPU 288 s)
    ViT D = 96, 4 blocks (a temporary override, 72.7 / 73.1% at 300 / 600 (gain 8.3, CPU 208 s;
      1.5× the cost per step), 600 steps          its random-init k-NN also read 64.8%)
Every variant ends between 73.1 and 74.7% for seed 0, 0.1–1.7 points short of the 74.8% that
10 points above this seed's random ViT asks, while seed 1 (random ViT 62.0%) passes with room
whenever it was run: a plateau near 74% on these 1,000 test images (±1.4 points of binomial
noise), not one lever away. Still NOT reproduced; the mini stays as it was.
The k-NN protocol at the paper's breadth (Table 2: the whole training set as memory, every
test image as a query) re-read from the λ 0.97 runs' checkpoints: memory 60,000 / queries 10,000
gives teacher 78.4 / 78.7% against random init 71.9 / 69.6% (gains 6.4 / 9.2, seeds 0 / 1; ~30 s
of CPU each): a random ViT's features gain more from a larger memory than the teacher's, so the
mini's 5,000 / 1,000 is not what holds seed 0 back (5,000 / 10,000: gain 9.6).

Issue 16, third round (on top of the closest setting above; teacher k-NN at the evaluations,
user CPU of one thread with two to four runs sharing the 2 cores):
    weight decay held at 0.04 (the paper's 0.04 → 0.4  71.2 / 73.7 / 74.8% at 300 / 600 / 900
      is for 100 epochs), seed 0                       (gain 10.0: passes by 0.0; CPU 280 s);
                                                       0.59 / 0.84 / 0.12
    batch 64 × 1800 steps (the same images; warm-up   72.5 / 74.6 / 75.1% at 600 / 1200 / 1800
      60, last layer frozen 40 steps, λ 0.99 → 1:      (gain 10.3, CPU 294 s); 0.58 / 0.85 / 0.13
      the EMA's horizon in images of λ 0.98 at 128)
      the same, seed 1                                 73.5 / 75.6 / 76.3% vs 62.0% (gain 14.3,
                                                       CPU 260 s)
    batch 64 × 1800 and weight decay held at 0.04     72.5 / 74.4 / 74.8% (gain 10.0, CPU 263 s)
    batch 64 × 1800, `norm_last_layer=false` (g       72.4 / 74.7 / 75.1% (gain 10.3, CPU 274 s);
      learnt, the released code's ViT-S setting)       0.58 / 0.85 / 0.13: no change
    batch 32 × 3600 steps (warm-up 120, frozen 80,    72.9 / 74.0 / 74.7% at 1200 / 2400 / 3600
      λ 0.995 → 1)                                     (gain 9.9, CPU 311 s): smaller still does not help
    batch 64 × 1800, seed 2                            73.2 / 76.7 / 76.3% vs 64.6% (gain 11.7, CPU
                                                       291 s); 0.54 / 0.82 / 0.14
    batch 64 × 1800, centre momentum 0.8              72.3 / 74.6 / 75.4% (gain 10.6, CPU 276 s)
    batch 64 × 1800, centre momentum 0.95             71.6 / 73.1 / 72.6% (gain 7.8, CPU 294 s)
    batch 64 × 1800, last layer never frozen          72.6 / 74.4 / 74.7% (gain 9.9, CPU 275 s)
    batch 64 × 1800, bottleneck 128 (paper 256)       73.1 / 76.3 / 76.3% (gain 11.5, CPU 300 s);
                                                       0.53 / 0.82 / 0.14
      the same, seeds 1 / 2                            73.0 / 76.0 / 76.2% vs 62.0% (gain 14.2, CPU
                                                       279 s); 74.7 / 74.7 / 75.2% vs 64.6% (gain
                                                       10.6, CPU 278 s): the mini
Halving the batch for twice the steps (the same images, the same EMA horizon in images) is the
lever that lifted seed 0 over the line (74.5 → 75.1%), and a bottleneck of 128 (nearer the
paper's 256) gives it room (76.3%): reproduced on seeds 0, 1 and 2. Levers of the issue not run
for lack of time: freezing the last layer for 100 steps, bottleneck 32 or hidden 512, evaluating
only at the end (the evaluations cost little: 6,000 forward passes of 28 px images against
115,200 multi-crop training images).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from papercli.data.transforms import (
    color_jitter,
    gaussian_blur,
    normalize,
    random_resized_crop,
    solarize,
    unnormalize,
)
from papercli.methods.dino import (
    DINO,
    DINOHead,
    DINOLoss,
    collapse_monitor,
    teacher_momentum,
    teacher_temperature,
)
from papercli.methods.ema import EMA
from papercli.metrics.knn import weighted_knn
from papercli.models import create_model
from papercli.recipes._classification import ClassificationConfig, ClassificationRecipe
from papercli.reproduce.config import bounded, fraction
from papercli.reproduce.engine import run
from papercli.reproduce.optim import warmup_cosine, weight_decay_groups


@dataclass
class DINOConfig(ClassificationConfig):
    model: str = "vit-s/16"
    patch_size: int = bounded(0, ge=0)  # 0 = from the model name
    width: int = bounded(16, ge=1)  # CIFAR ResNets (model=resnet20-cifar): first-stage filters
    out_dim: int = bounded(65536, ge=2)  # K
    head_hidden: int = bounded(2048, ge=1)
    bottleneck: int = bounded(256, ge=1)
    norm_last_layer: bool = True  # False: the weight norm's g is learnt (released code, ViT-S)
    local_crops: int = bounded(10, ge=0)
    local_size: int = bounded(96, ge=1)  # px; global crops are image_size
    global_scale_min: float = fraction(0.4)
    local_scale_max: float = fraction(0.4)
    local_scale_min: float = fraction(0.05)
    # BYOL's photometric augmentations (Appendix / Sec. 4.1), after the crops and flips: colour
    # jitter (p 0.8; on grey images brightness and contrast), Gaussian blur (p 1.0 on the first
    # global view, 0.1 on the second, 0.5 on the locals) and solarisation (p 0.2, second view);
    # off by default, so both scales keep crops and flips only: `--set photometric=true`
    photometric: bool = False
    jitter_p: float = fraction(0.8)
    brightness: float = fraction(0.4)
    contrast: float = fraction(0.4)
    blur_sigma_min: float = bounded(0.1, gt=0.0)  # px
    blur_sigma_max: float = bounded(2.0, gt=0.0)  # px (BYOL / DINO at 224 px)
    solarize_p: float = fraction(0.2)
    lr: float = bounded(0.002, gt=0.0)  # 0.0005 × batch / 256
    warmup_steps: int = bounded(12_510, ge=0)
    weight_decay: float = bounded(0.04, ge=0.0)
    weight_decay_end: float = bounded(0.4, ge=0.0)
    student_temp: float = bounded(0.1, gt=0.0)
    teacher_temp: float = bounded(0.04, gt=0.0)  # τ_t at the start …
    teacher_temp_end: float = bounded(0.07, gt=0.0)  # … after the warm-up
    teacher_temp_warmup_steps: int = bounded(37_530, ge=0)
    center_momentum: float = fraction(0.9)
    teacher_momentum: float = bounded(0.996, ge=0.0, lt=1.0)
    freeze_last_layer_steps: int = bounded(1251, ge=0)
    knn_k: int = bounded(20, ge=1)
    knn_temperature: float = bounded(0.07, gt=0.0)
    monitor_samples: int = bounded(512, ge=2)  # test images for the collapse monitor


PAPER = DINOConfig(
    dataset="imagenet",
    image_size=224,
    model="vit-s/16",
    steps=125_100,  # 100 epochs of 1251 steps
    batch_size=1024,
    micro_batch_size=64,
    eval_every=12_510,
    log_every=100,
    grad_clip=3.0,
    augment=False,  # the folder's own crop; multi-crop is applied on top
    eval_train_samples=1_281_167,  # the whole training set is the k-NN memory
)
MINI = DINOConfig(
    dataset="fashion-mnist",
    model="vit-mini/7",
    steps=1800,  # 1.9 epochs of batch 64: more, smaller steps than 900 of 128 on the same images
    batch_size=64,
    eval_every=600,
    log_every=20,
    out_dim=256,
    head_hidden=256,
    bottleneck=128,  # the paper 256; 64 leaves seed 0 0.3 points above the line, 128 1.5
    local_crops=4,
    local_size=14,
    photometric=True,  # BYOL's colour jitter, blur and solarisation (Sec. 4.1, Appendix)
    lr=1e-3,
    warmup_steps=60,
    teacher_temp_end=0.04,  # τ_t held at 0.04: the run is shorter than the paper's warm-up
    teacher_momentum=0.99,  # λ 0.99 → 1: the paper's 0.996 averages over most of a short run
    freeze_last_layer_steps=40,
    grad_clip=3.0,
    augment=False,
    eval_train_samples=5000,
    eval_test_samples=1000,
)


class DINORecipe(ClassificationRecipe):
    paper = "dino"
    config_class = DINOConfig
    scales = {"mini": MINI, "paper": PAPER}
    cfg: DINOConfig

    # --- data: multi-crop views, no labels --------------------------------------------------------
    def train_batch(self, step: int, micro: int = 0) -> list[torch.Tensor]:
        x, _ = super().train_batch(step, micro)  # the labels are dropped here
        g = self.ctx.generator(step, stream=1000 + self.ctx.shard(micro))
        cfg = self.cfg
        globals_ = [
            random_resized_crop(x, self.input_size, (cfg.global_scale_min, 1.0), g)
            for _ in range(2)
        ]
        locals_ = [
            random_resized_crop(x, cfg.local_size, (cfg.local_scale_min, cfg.local_scale_max), g)
            for _ in range(cfg.local_crops)
        ]
        if not cfg.photometric:
            return globals_ + locals_
        # Appendix: asymmetric blur and solarisation between the two global views
        blur_p = [1.0, 0.1] + [0.5] * cfg.local_crops
        solarize_p = [0.0, cfg.solarize_p] + [0.0] * cfg.local_crops
        return [
            self._photometric(v, b, s, g)
            for v, b, s in zip(globals_ + locals_, blur_p, solarize_p, strict=True)
        ]

    def _photometric(
        self, view: torch.Tensor, blur_p: float, solarize_p: float, g: torch.Generator
    ) -> torch.Tensor:
        """Colour jitter, blur and solarisation of one normalised view, in [0, 1] pixel units."""
        cfg, mean, std = self.cfg, self.spec.mean, self.spec.std
        x = unnormalize(view, mean, std).clamp(0, 1)
        x = color_jitter(
            x, g, brightness=cfg.brightness, contrast=cfg.contrast, saturation=0.2, p=cfg.jitter_p
        )
        x = gaussian_blur(x, blur_p, g, (cfg.blur_sigma_min, cfg.blur_sigma_max))
        x = solarize(x, solarize_p, g)
        return normalize(x, mean, std)

    def units_in(self, batch) -> int:
        return len(batch[0])

    # --- model: student, momentum teacher, loss ---------------------------------------------------
    def build_model(self) -> nn.Module:
        if self.cfg.local_size >= self.input_size:
            raise ValueError(f"local crops must be smaller than the {self.input_size} px image")
        backbone = self._backbone()
        # the baseline of claim 1: the very weights the student starts from, never trained
        self.random_backbone = copy.deepcopy(backbone).requires_grad_(False)
        head = DINOHead(
            backbone.feature_info[-1]["channels"],
            self.cfg.out_dim,
            self.cfg.head_hidden,
            self.cfg.bottleneck,
            self.cfg.norm_last_layer,
        )
        return DINO(backbone, head)

    def _backbone(self) -> nn.Module:
        """The network whose features k-NN reads: a ViT's normalised [CLS] state, or a ResNet's
        globally pooled last stage (Table 2 also trains DINO on a ResNet-50)."""
        cfg = self.cfg
        if cfg.model.startswith(("resnet", "plain")):
            backbone = create_model(cfg.model, in_channels=self.in_channels, width=cfg.width)
            backbone.fc = nn.Identity()
            return backbone
        overrides = {"image_size": self.input_size, "in_channels": self.in_channels}
        if cfg.patch_size:
            overrides["patch_size"] = cfg.patch_size
        backbone = create_model(cfg.model, **overrides)
        backbone.head = nn.Identity()
        if cfg.local_size % backbone.cfg.patch_size:
            raise ValueError(
                f"local_size {cfg.local_size} is not a multiple of the patch size "
                f"{backbone.cfg.patch_size}"
            )
        return backbone

    def configure_optimizers(self, model: nn.Module):
        # the model is on its device: the teacher starts as a copy of the student there
        self.teacher = EMA(model, self.cfg.teacher_momentum)
        self.criterion = DINOLoss(
            self.cfg.out_dim, self.cfg.student_temp, self.cfg.center_momentum
        ).to(self.ctx.device)
        self.random_backbone.to(self.ctx.device)
        self._step = 0
        groups = weight_decay_groups(model, self.cfg.weight_decay, skip=("pos_embed", "cls_token"))
        opt = torch.optim.AdamW(groups, lr=self.cfg.lr)
        return opt, warmup_cosine(opt, self.cfg.warmup_steps, self.cfg.steps)

    def teacher_temp(self, step: int) -> float:
        cfg = self.cfg
        return teacher_temperature(
            step, cfg.teacher_temp_warmup_steps, cfg.teacher_temp, cfg.teacher_temp_end
        )

    def loss(self, model: nn.Module, views: list[torch.Tensor]) -> torch.Tensor:
        student_out = model(views)
        with torch.no_grad():
            teacher_out = self.teacher.model(views[:2])  # the teacher sees only the global views
        return self.criterion(student_out, teacher_out, self.teacher_temp(self._step))

    def train_step(self, step: int, trainer) -> dict[str, float]:
        self._step = step
        cfg = self.cfg
        # Sec. 4.1: the weight decay follows a cosine schedule from 0.04 to 0.4
        progress = step / max(1, cfg.steps - 1)
        wd = (
            cfg.weight_decay_end
            + (cfg.weight_decay - cfg.weight_decay_end) * (1 + math.cos(math.pi * progress)) / 2
        )
        optimizer = trainer.slots["main"].optimizer
        optimizer.param_groups[0]["weight_decay"] = wd
        losses = trainer.accumulate(step, self.loss)
        if step < cfg.freeze_last_layer_steps:  # the last layer stays fixed in the first epoch
            for p in trainer.model.head.last_layer_parameters():
                p.grad = None
        trainer.step_optimizers()
        self.teacher.decay = teacher_momentum(step, cfg.steps, cfg.teacher_momentum)
        self.teacher.update(trainer.model)
        return {**losses, "teacher_temp": self.teacher_temp(step), "momentum": self.teacher.decay}

    def state_dict(self) -> dict:
        return {"teacher": self.teacher.state_dict(), "center": self.criterion.center}

    def load_state_dict(self, state: dict) -> None:
        self.teacher.load_state_dict(state["teacher"])
        self.criterion.center.copy_(state["center"])

    # --- evaluation: weighted k-NN on frozen features, collapse monitor ---------------------------
    def _labelled(self, split: str):
        """(x, y) batches of the k-NN memory (`train`: the fixed training subset) or queries."""
        if self.cfg.dataset == "imagenet":
            folder = self.train_eval_set if split == "train" else self.val_set
            return torch.utils.data.DataLoader(folder, batch_size=250, num_workers=self.cfg.workers)
        idx = self.eval_train_idx if split == "train" else self.eval_test_idx
        xs, ys = (self.train_x, self.train_y) if split == "train" else (self.test_x, self.test_y)
        return self._tensor_batches(xs[idx], ys[idx])

    def _features(self, backbone: nn.Module, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        feats, labels = [], []
        for x, y in self._labelled(split):
            feats.append(backbone(self._to_device(x)).float())
            labels.append(y.to(self.ctx.device))
        return torch.cat(feats), torch.cat(labels)

    def knn_accuracy(self, backbone: nn.Module) -> float:
        backbone.eval()
        memory, memory_y = self._features(backbone, "train")
        queries, queries_y = self._features(backbone, "test")
        predicted = weighted_knn(
            memory, memory_y, queries, self.num_classes, self.cfg.knn_k, self.cfg.knn_temperature
        )
        return float((predicted == queries_y).float().mean())

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        if not hasattr(self, "_random_knn"):  # the untrained weights do not change: once per run
            self._random_knn = self.knn_accuracy(self.random_backbone)
        teacher = self.teacher.model
        metrics = {
            "knn_acc": self.knn_accuracy(teacher.backbone),
            "random_knn_acc": self._random_knn,
        }
        # Fig. 7's monitor on fixed test images, each seen whole (a global view)
        x = next(iter(self._labelled("test")))[0][: self.cfg.monitor_samples]
        x = self._to_device(x)
        p_t = self.criterion.teacher_probs(teacher([x])[0], self.teacher_temp(self._step))
        log_p_s = F.log_softmax(model([x])[0].float() / self.cfg.student_temp, dim=-1)
        return {**metrics, **collapse_monitor(p_t, log_p_s)}

    def final_metrics(self, model: nn.Module, last_eval: dict[str, float]) -> dict[str, float]:
        m = dict(last_eval)
        m["knn_gain"] = m["knn_acc"] - m["random_knn_acc"]
        return m


if __name__ == "__main__":
    run(DINORecipe)
