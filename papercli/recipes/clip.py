"""Learning Transferable Visual Models From Natural Language Supervision (CLIP; Radford et al., 2021).

An image encoder and a text encoder train together, with no classifier, on image-caption pairs:
the symmetric InfoNCE loss of Fig. 3 with a learned temperature (models/clip.py). Claims checked
at mini scale:
  1. zero-shot transfer (Sec. 3.1): held-out test images are classified from text prompts alone —
     "a photo of a {class}." embedded by the text encoder, the most similar class wins — well
     above chance (10%), with no classifier ever trained;
  2. zero-shot approaches a linear probe (Sec. 3.2, Fig. 5/6): a logistic regression fitted on the
     same frozen image features of labelled training images is the bar; the gap is reported.
Prompt ensembling (Sec. 3.1.4: the mean of several prompts' embeddings) is reported too.

THE MINI'S CAPTIONS ARE GENERATED, not written by people (papercli/data/captions.py): each names
the Fashion-MNIST class and describes the image's brightness, ink area and width measured from its
own pixels, in one of four templates ("a photo of a dark, wide trouser."), drawn per step. The
zero-shot prompts are none of the training captions (every caption also describes the image).

    mini   clip-mini (0.32M): ViT-mini/7 image encoder (0.21M with its projection) + a 2-layer,
           64-wide causal text transformer over a 37-token word vocabulary (0.11M), 64-d joint
           space; Fashion-MNIST at 28 px, 800 steps of 128 pairs, AdamW lr 1e-3 (β2 0.98,
           ε 1e-6), weight decay 0.2, warm-up + cosine; the probe fitted on 5,000 training
           images' features; zero-shot and probe scored on all 10,000 test images
    paper  Tables 18-20: CLIP ViT-B/32 (clip-rn50 and clip-vit-l/14 with --set model=…), 224 px,
           32 epochs of 400M pairs (390,625 steps) of 32,768, AdamW with decoupled weight decay
           0.2, 2,000 warm-up iterations then cosine decay; lr 5e-4 (RN50, ViT-B/32) or 4e-4
           (ViT-L/14), β2 0.999 / ε 1e-8 for ResNets, 0.98 / 1e-6 for ViTs; BPE of 49,408 tokens,
           76 tokens + [EOS]. Data: --data PATH, a folder with captions.tsv and the images
           (papercli/data/image_text.py; WIT itself was never released), zero-shot and probe
           metrics when it also holds val/<class>/ (and train/<class>/) folders.
Measured at mini scale (seeds 0 / 1): zero-shot 77.2 / 74.2 % (ensemble 78.6 / 76.9 %), linear
probe 82.5 / 81.8 %, so zero-shot trails the probe by 5.3 / 7.5 points; 2 steps: zero-shot ~10 %.
Training took 776 / 769 s with both seeds side by side on 2 cores shared with other work (load
average 8-10): the 300 s bar is for an idle machine and was not measured on one.

Not reproduced at paper scale: the negatives come from each process's micro-batch — CLIP gathers
all 32,768 embeddings across GPUs — so set micro_batch_size as large as memory allows; training
crops are ImageFolder's random-resized crops (CLIP uses a random square crop only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from papercli.data import captions
from papercli.errors import UsageError
from papercli.models import create_model
from papercli.models.clip import config as clip_config
from papercli.models.clip import contrastive_loss, zero_shot_classifier, zero_shot_predict
from papercli.recipes._classification import ClassificationConfig, ClassificationRecipe
from papercli.reproduce.config import bounded
from papercli.reproduce.engine import run
from papercli.reproduce.optim import warmup_cosine, weight_decay_groups

# Tables 19/20 and 18: learning rate, Adam β2 and ε of each paper-scale model
PAPER_OPTIM = {
    "clip-rn50": (5e-4, 0.999, 1e-8),
    "clip-vit-b/32": (5e-4, 0.98, 1e-6),
    "clip-vit-l/14": (4e-4, 0.98, 1e-6),
}
CLASS_NAMES = {
    "digits": ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"),
}


@dataclass
class CLIPTrainConfig(ClassificationConfig):
    dataset: Literal["fashion-mnist", "digits", "image-text"] = "image-text"
    model: str = "clip-vit-b/32"
    image: str = ""  # another image encoder of the families, e.g. resnet20-cifar ("" = model's)
    context: int = bounded(77, ge=4)  # tokens per caption, [SOS] and [EOS] included
    lr: float = bounded(0.0, ge=0.0)  # 0 = the paper's for the model (PAPER_OPTIM)
    beta2: float = bounded(0.0, ge=0.0, lt=1.0)  # 0 = the paper's for the model
    eps: float = bounded(0.0, ge=0.0)  # 0 = the paper's for the model
    weight_decay: float = bounded(0.2, ge=0.0)
    warmup_steps: int = bounded(2000, ge=0)
    probe_c: float = bounded(1.0, gt=0.0)  # inverse L2 strength of the linear probe


PAPER = CLIPTrainConfig(
    dataset="image-text",
    image_size=224,
    model="clip-vit-b/32",
    steps=390_625,  # 32 epochs × 400M pairs / 32,768
    batch_size=32_768,
    micro_batch_size=256,
    eval_every=10_000,
    log_every=100,
    eval_test_samples=0,
    eval_train_samples=50_000,
)
MINI = CLIPTrainConfig(
    dataset="fashion-mnist",
    model="clip-mini",
    context=18,  # the longest caption: [SOS] + 15 tokens + [EOS]
    steps=800,
    batch_size=128,
    eval_every=200,
    lr=1e-3,
    beta2=0.98,
    eps=1e-6,
    warmup_steps=50,
    augment=False,  # the captions describe the pixels as they are
    eval_train_samples=5000,  # the linear probe's training images
    eval_test_samples=0,  # all 10,000 test images
)


class CLIPRecipe(ClassificationRecipe):
    paper = "clip"
    config_class = CLIPTrainConfig
    scales = {"mini": MINI, "paper": PAPER}
    cfg: CLIPTrainConfig

    # --- text -----------------------------------------------------------------------------------
    @property
    def class_names(self) -> tuple[str, ...]:
        if self.cfg.dataset == "fashion-mnist":
            from papercli.data.fashion_mnist import CLASSES

            return CLASSES
        if self.cfg.dataset == "digits":
            return CLASS_NAMES["digits"]
        return tuple(c.replace("_", " ") for c in getattr(self, "classes", ()))

    @property
    def vocab(self) -> captions.Vocabulary:
        return captions.Vocabulary.for_classes(self.class_names, self.cfg.context)

    def prompt_rows(self) -> torch.Tensor:
        """(classes, prompts, context) token rows of the zero-shot prompts."""
        texts = [p.format(name=n.lower()) for n in self.class_names for p in captions.PROMPTS]
        rows = self.tokenizer.encode(texts)
        return rows.view(len(self.class_names), len(captions.PROMPTS), -1)

    # --- data -----------------------------------------------------------------------------------
    def setup_data(self) -> None:
        if self.cfg.dataset != "image-text":
            super().setup_data()
            self.tokenizer = self.vocab
            self.table = captions.CaptionTable(self.class_names, self.tokenizer)
            self.levels = captions.levels(self.train_x)  # from each training image's pixels
            return
        from papercli.data.image_text import CaptionedImages, CaptionTokenizer
        from papercli.data.imagefolder import ImageFolder

        if self.ctx.data_path is None:
            raise UsageError(f"CLIP at paper scale reads --data PATH: {self.spec.how_to_get}")
        root = self.ctx.data_path
        size = self.input_size
        self.train_set = CaptionedImages(root, train=True, size=size, seed=self.ctx.seed)
        vocab_size = clip_config(self.cfg.model).vocab_size  # the paper's 49,408
        self.tokenizer = CaptionTokenizer(self.train_set.captions, vocab_size, self.cfg.context)
        self._loader = None
        self.val_set = (
            ImageFolder(root / "val", train=False, size=size) if (root / "val").is_dir() else None
        )
        self.probe_set = None
        if self.val_set is not None:
            self.classes = self.val_set.classes
            if (root / "train").is_dir():
                probe = ImageFolder(root / "train", train=False, size=size)
                g = torch.Generator().manual_seed(1234)
                pick = torch.randperm(len(probe), generator=g)[: self.cfg.eval_train_samples]
                self.probe_set = torch.utils.data.Subset(probe, pick.tolist())

    def train_batch(self, step: int, micro: int = 0):
        if self.cfg.dataset == "image-text":
            x, index = self._folder_batch(step, micro)
            texts = [self.train_set.captions[i] for i in index.tolist()]
            return x, self.tokenizer.encode(texts).to(self.ctx.device)
        idx = self.ctx.batch_indices(len(self.train_x), step, micro)
        g = self.ctx.generator(step, stream=self.ctx.shard(micro))
        template = torch.randint(len(captions.TEMPLATES), (len(idx),), generator=g)
        tokens = self.table.lookup(self.train_y[idx], self.levels[idx], template)
        return self._to_device(self._prepare(self.train_x[idx])), tokens.to(self.ctx.device)

    # --- model and optimisation -----------------------------------------------------------------
    def build_model(self) -> nn.Module:
        """Image size and channels from the data, the caption length, and at mini scale the word
        vocabulary's size; `image` swaps the image encoder."""
        overrides: dict[str, object] = {
            "image_size": self.input_size,
            "in_channels": self.in_channels,
            "context": self.cfg.context,
        }
        if self.cfg.dataset != "image-text":
            overrides["vocab_size"] = len(self.vocab.tokens)
        if self.cfg.image:
            overrides["image"] = self.cfg.image
        return create_model(self.cfg.model, **overrides)

    def configure_optimizers(self, model: nn.Module):
        lr, beta2, eps = self.cfg.lr, self.cfg.beta2, self.cfg.eps
        if not (lr and beta2 and eps):
            if self.cfg.model not in PAPER_OPTIM:
                raise UsageError(f"no paper settings for '{self.cfg.model}': set lr, beta2 and eps")
            paper = PAPER_OPTIM[self.cfg.model]
            lr, beta2, eps = (
                mine or theirs for mine, theirs in zip((lr, beta2, eps), paper, strict=True)
            )
        # Sec. 2.5 / Table 18: decoupled weight decay on every weight that is not a gain or bias
        opt = torch.optim.AdamW(
            weight_decay_groups(model, self.cfg.weight_decay), lr=lr, betas=(0.9, beta2), eps=eps
        )
        return opt, warmup_cosine(opt, self.cfg.warmup_steps, self.cfg.steps)

    def loss(self, model: nn.Module, batch) -> dict[str, torch.Tensor]:
        images, tokens = batch
        return {"clip": contrastive_loss(model(images, tokens))}

    # --- evaluation -----------------------------------------------------------------------------
    def _image_features(self, model: nn.Module, batches) -> tuple[torch.Tensor, torch.Tensor]:
        """I_f (before the projection) and labels of (x, y) batches."""
        feats, labels = [], []
        for x, y in batches:
            feats.append(model.visual.features(self._to_device(x)).float().cpu())
            labels.append(torch.as_tensor(y))
        return torch.cat(feats), torch.cat(labels)

    def _eval_batches(self):
        """(held-out batches, probe-training batches) of (x, y)."""
        if self.cfg.dataset == "image-text":
            loader = torch.utils.data.DataLoader
            w = self.cfg.workers
            test = loader(self.val_set, batch_size=250, num_workers=w)
            probe = (
                loader(self.probe_set, batch_size=250, num_workers=w) if self.probe_set else None
            )
            return test, probe
        test_i, train_i = self.eval_test_idx, self.eval_train_idx
        return (
            self._tensor_batches(self.test_x[test_i], self.test_y[test_i]),
            self._tensor_batches(self.train_x[train_i], self.train_y[train_i]),
        )

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        from papercli.metrics.probe import linear_probe_accuracy

        if self.cfg.dataset == "image-text" and self.val_set is None:
            return {"logit_scale": model.scale().item()}
        test_batches, probe_batches = self._eval_batches()
        test_f, test_y = self._image_features(model, test_batches)
        test_e = F.normalize(model.visual.proj(test_f.to(self.ctx.device)).float(), dim=-1)
        prompts = self.prompt_rows().to(self.ctx.device)
        metrics = {"logit_scale": model.scale().item()}
        for key, rows in (("zero_shot_acc", prompts[:, :1]), ("zero_shot_ensemble_acc", prompts)):
            predicted = zero_shot_predict(test_e, zero_shot_classifier(model, rows)).cpu()
            metrics[key] = (predicted == test_y).float().mean().item()
        if probe_batches is not None:
            train_f, train_y = self._image_features(model, probe_batches)
            metrics["probe_acc"] = linear_probe_accuracy(
                train_f, train_y, test_f, test_y, self.cfg.probe_c
            )
        return metrics

    def final_metrics(self, model: nn.Module, last_eval: dict[str, float]) -> dict[str, float]:
        m = dict(last_eval)
        if "probe_acc" in m:
            # how far zero-shot (one prompt) trails the probe on the same features (Sec. 3.2)
            m["probe_minus_zero_shot_acc"] = m["probe_acc"] - m["zero_shot_acc"]
        return m


if __name__ == "__main__":
    run(CLIPRecipe)
