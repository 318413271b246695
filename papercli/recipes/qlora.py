"""QLoRA: Efficient Finetuning of Quantized LLMs (Dettmers et al., 2023, arXiv 2305.14314).

Claim checked at mini scale (Sec. 4, Fig. 3 and Table 3: with NF4 and double quantisation, 4-bit
QLoRA "replicates 16-bit LoRA and full-finetuning performance"): adapting a pre-trained model whose
frozen weights are stored in 4-bit NormalFloat with double-quantised constants (methods/nf4.py),
LoRA on top reaches the held-out loss of LoRA on the unquantised (here fp32) base within a stated
margin, clearly below the untuned base, while the quantised weights take ~4.127 bits each
(measured from the stored tensors: 4 + 8/64 + 32/(64·256), Sec. 3).

The recipe is LoRA's (recipes/lora.py: the mini base adapted to the 6 plays it never read, the
last 20% of each held out) with three arms on the same batches: `lora` (adapters on every linear
layer of the blocks, as the paper does: Wq, Wk, Wv, Wo and both feed-forward layers, r = 4,
fp32 base), `qlora` (the same adapters on the base's block weights in NF4, dequantised on the fly
in each forward; embeddings, norms and biases stay fp32 as in the released code) and `base`.

On GPU (`--gpu`) with bitsandbytes installed, the quantised weights are compared with
bitsandbytes' NF4 of the same weights (its blocksize 64, double quantisation on): the share of
identical 4-bit codes and the largest difference of the dequantised weights are reported.
Measured on one H200 (bitsandbytes 0.50.2): on 4096², 4096 × 14336 and 1024 × 4096 weights drawn
from N(0, 0.02²), 99.99999 % of the codes are equal; the one that differs moves a weight by 0.18 ×
its block's absmax. The mini with `--gpu`: QLoRA − LoRA −0.002 nats, 4.128 bits, 11.5 s.

    mini   as LoRA's mini, α = 8, adapters' lr 1.5e-2
    paper  --set base=PATH: a Hugging Face GPT-2 folder (papercli reads GPT-2's layout only, not
           the paper's LLaMA checkpoints); text from --data PATH; the paper's LoRA settings for
           its smaller models (r = 64, α = 16, dropout 0.1, lr 2e-4, batch 16; Appendix B)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from papercli.methods import lora, nf4
from papercli.reproduce.config import bounded
from papercli.reproduce.engine import run

from .lora import MINI_RUN, PAPER_BASE, LoRAConfig, LoRARecipe


@dataclass
class QLoRAConfig(LoRAConfig):
    arms: tuple[str, ...] = ("base", "lora", "qlora")
    compare: tuple[str, ...] = ("qlora", "lora")
    targets: tuple[str, ...] = lora.ALL_LINEAR
    nf4_skip: tuple[str, ...] = ("head",)  # linear layers kept in fp32 (the tied output layer)
    bnb_sample: int = bounded(4, ge=0)  # weights compared with bitsandbytes on GPU


MINI = QLoRAConfig(**MINI_RUN)
# Appendix B's settings for the smaller models: r = 64, α = 16, batch 16
PAPER = QLoRAConfig(
    **PAPER_BASE, rank=64, alpha=16.0, warmup_steps=100, steps=10_000, batch_size=16
)


class QLoRARecipe(LoRARecipe):
    paper = "qlora"
    config_class = QLoRAConfig
    scales = {"mini": MINI, "paper": PAPER}
    arm_names = (*LoRARecipe.arm_names, "qlora")
    cfg: QLoRAConfig

    def make_arm(self, name: str, base: nn.Module) -> nn.Module:
        if name == "qlora":
            return super().make_arm("lora", nf4.quantize_linears(base, skip=self.cfg.nf4_skip))
        return super().make_arm(name, base)

    def final_metrics(self, model: nn.Module, last_eval: dict[str, float]) -> dict[str, float]:
        m = super().final_metrics(model, last_eval)
        if "qlora" in model:
            m["qlora_base_bits_per_param"] = nf4.bits_per_parameter(model["qlora"])
            if self.ctx.device.type == "cuda":
                linears = [
                    mod.weight
                    for name, mod in self.base_network().named_modules()
                    if isinstance(mod, nn.Linear) and not name.endswith(self.cfg.nf4_skip)
                ]
                m |= compare_bitsandbytes(linears[: self.cfg.bnb_sample])
        return m


def compare_bitsandbytes(weights: list[torch.Tensor]) -> dict[str, float]:
    """Our NF4 vs bitsandbytes' (GPU only) on the same weights: the share of equal 4-bit codes
    (ties between two levels may round apart), and the largest |difference| of the dequantised
    weights relative to the weight's absmax. Empty when bitsandbytes is not installed."""
    try:
        import bitsandbytes.functional as bnbf
    except ImportError:
        return {}
    same, total, worst = 0, 0, 0.0
    for weight in weights:
        weight = weight.detach().float().cuda().contiguous()
        ours = nf4.quantize(weight)
        packed, state = bnbf.quantize_4bit(
            weight, blocksize=nf4.BLOCK, quant_type="nf4", compress_statistics=True
        )
        theirs = bnbf.dequantize_4bit(packed, state).float()
        mine = nf4.dequantize(ours, weight.shape)
        a, b = nf4.unpack(packed.flatten()), nf4.unpack(ours["packed"])
        same += (a[: b.numel()] == b).sum().item()
        total += b.numel()
        worst = max(worst, ((theirs - mine).abs().max() / weight.abs().max()).item())
    return {"bnb_code_agreement": same / max(total, 1), "bnb_max_rel_difference": worst}


if __name__ == "__main__":
    run(QLoRARecipe)
