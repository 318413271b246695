"""4-bit NormalFloat with double quantisation (QLoRA; Dettmers et al. 2023, arXiv 2305.14314,
Sec. 3 and Appendix E).

NF4: 16 levels placed at quantiles of N(0, 1), rescaled to [−1, 1], with an exact zero — 8
positive and 7 negative quantiles (the asymmetric construction of the released code,
bitsandbytes' `create_normal_map(offset=0.9677083)`); a weight block of 64 is scaled by its
absolute maximum and each value stored as the 4-bit index of the nearest level.

Double quantisation (Sec. 3, "Double Quantization"): the fp32 absmax of every block (32 / 64 =
0.5 bits a weight) is itself quantised: its mean is subtracted and the centred constants are stored
as 8-bit floats (float8 e4m3) in blocks of 256, each block with one fp32 scale, so the constants
cost 8 / 64 + 32 / (64 · 256) = 0.127 bits a weight and a weight 4.127 bits in all. The released
code keeps those 8-bit constants in its own dynamic 8-bit code; e4m3 is the paper's "8-bit Floats".

`NF4Linear` holds only these stored tensors and dequantises its weight on the fly in the forward
(the computation runs in the input's dtype, the paper's BFloat16 compute data type on GPU).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Appendix E / bitsandbytes' NF4 data type, index 0 … 15
NF4_CODE = (
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
)  # fmt: skip
BLOCK = 64  # weights per absmax (Sec. 3: "blocksize of 64 for W")
BLOCK2 = 256  # absmax constants per second-level scale ("blocksize of 256 for c2")
FP8 = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8).max  # 448


def _code(device=None) -> torch.Tensor:
    return torch.tensor(NF4_CODE, dtype=torch.float32, device=device)


def quantize_nf4(values: torch.Tensor) -> torch.Tensor:
    """Indices (uint8, 0 … 15) of the nearest NF4 level of each value in [−1, 1]."""
    code = _code(values.device)
    midpoints = (code[1:] + code[:-1]) / 2
    return torch.bucketize(values.float().contiguous(), midpoints).to(torch.uint8)


def _blocks(flat: torch.Tensor, size: int) -> torch.Tensor:
    """`flat` zero-padded to whole blocks, as rows of `size`."""
    pad = -flat.numel() % size
    return F.pad(flat, (0, pad)).view(-1, size)


def double_quantize(absmax: torch.Tensor) -> dict[str, torch.Tensor]:
    """fp32 block constants -> mean + 8-bit floats in blocks of BLOCK2 with one fp32 scale each."""
    mean = absmax.mean()
    centred = _blocks(absmax - mean, BLOCK2)
    scale = centred.abs().amax(dim=1).clamp_min(torch.finfo(torch.float32).tiny)
    codes = (centred / scale[:, None] * FP8_MAX).to(FP8).flatten()[: absmax.numel()]
    return {"absmax_codes": codes, "absmax_scale": scale, "absmax_mean": mean.reshape(1)}


def dequantize_absmax(stored: dict[str, torch.Tensor]) -> torch.Tensor:
    codes = stored["absmax_codes"]
    rows = _blocks(codes.float(), BLOCK2) / FP8_MAX * stored["absmax_scale"][:, None]
    return rows.flatten()[: codes.numel()] + stored["absmax_mean"]


def quantize(weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """A weight as NF4 codes (two a byte) with double-quantised block absmax constants."""
    blocks = _blocks(weight.detach().float().flatten(), BLOCK)
    absmax = blocks.abs().amax(dim=1).clamp_min(torch.finfo(torch.float32).tiny)
    index = quantize_nf4(blocks / absmax[:, None]).flatten()
    packed = (index[0::2] << 4) | index[1::2]
    return {"packed": packed, **double_quantize(absmax)}


def unpack(packed: torch.Tensor) -> torch.Tensor:
    """The 4-bit indices of packed bytes, high nibble first."""
    return torch.stack([packed >> 4, packed & 15], dim=1).flatten()


def dequantize(stored: dict[str, torch.Tensor], shape: torch.Size, dtype=torch.float32):
    """The weight back from its stored tensors (values are NF4 levels × dequantised absmax)."""
    packed = stored["packed"]
    index = unpack(packed).long()
    numel = shape.numel()
    values = _blocks(_code(packed.device)[index][: -(-numel // BLOCK) * BLOCK], BLOCK)
    weight = (values * dequantize_absmax(stored)[:, None]).flatten()[:numel]
    return weight.view(shape).to(dtype)


STORED = ("packed", "absmax_codes", "absmax_scale", "absmax_mean")


class NF4Linear(nn.Module):
    """A frozen linear layer whose weight is stored in NF4 with double quantisation."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.shape = linear.weight.shape
        for name, tensor in quantize(linear.weight).items():
            self.register_buffer(name, tensor)
        bias = linear.bias
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), False)

    def stored(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name) for name in STORED}

    def dequantized_weight(self, dtype=torch.float32) -> torch.Tensor:
        return dequantize(self.stored(), self.shape, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.dequantized_weight(x.dtype), bias)

    def storage_bits(self) -> int:
        """Bits the stored weight takes (codes and constants; the bias is not the weight)."""
        return sum(t.numel() * t.element_size() * 8 for t in self.stored().values())


def quantize_linears(model: nn.Module, skip: tuple[str, ...] = ()) -> nn.Module:
    """Replace every nn.Linear of `model` (except names ending in `skip`) by an NF4Linear."""
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear) and not name.endswith(skip):
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent), attr, NF4Linear(module))
    return model


def bits_per_parameter(model: nn.Module) -> float:
    """Stored bits per quantised weight, measured over the model's NF4 layers."""
    layers = [m for m in model.modules() if isinstance(m, NF4Linear)]
    if not layers:
        raise ValueError("the model has no NF4 layers")
    return sum(m.storage_bits() for m in layers) / sum(m.shape.numel() for m in layers)
