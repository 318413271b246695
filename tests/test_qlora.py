"""NF4 with double quantisation against the paper's code book and its construction from normal
quantiles; nearest-level codes, the stored bits per weight, a forward that dequantises on the fly
with LoRA on top; a tiny qlora run through the CLI and a 2-step run that must not reproduce."""

from __future__ import annotations

import copy

import pytest
import torch
from test_lora import CONTROL, SMALL, tiny_base, tiny_run  # noqa: F401  (tiny_base: a fixture)

from papercli.methods import lora, nf4
from papercli.models.transformer import Transformer

# Appendix E of the paper, as printed there (the released bitsandbytes' NF4 values)
APPENDIX_E = [
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0,
]  # fmt: skip


def test_the_code_book_is_the_papers_and_its_normal_quantile_construction():
    from scipy.stats import norm

    assert list(nf4.NF4_CODE) == APPENDIX_E
    # Sec. 3: quantiles of N(0, 1), 8 for the positive half and 7 for the negative half (so that
    # 0 is exact), offset = (1 − 1/(2·15) + 1 − 1/(2·16)) / 2, normalised into [−1, 1]
    offset = (1 - 1 / 30 + 1 - 1 / 32) / 2
    positive = norm.ppf(torch.linspace(offset, 0.5, 9)[:-1].double().numpy())
    negative = -norm.ppf(torch.linspace(offset, 0.5, 8)[:-1].double().numpy())
    values = torch.tensor(sorted([*positive, 0.0, *negative]))
    values /= values.abs().max()
    assert torch.allclose(values, torch.tensor(APPENDIX_E, dtype=torch.float64), atol=2e-6)


def test_blockwise_codes_are_the_nearest_levels_and_the_constants_double_quantised():
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(96, 80, generator=g) * 0.02  # 7680 values: 120 blocks of 64
    stored = nf4.quantize(weight)
    blocks = weight.flatten().view(-1, nf4.BLOCK)
    absmax = blocks.abs().amax(dim=1)
    brute = (blocks[..., None] / absmax[:, None, None] - torch.tensor(APPENDIX_E)).abs().argmin(-1)
    assert torch.equal(nf4.unpack(stored["packed"]).long(), brute.flatten())

    # the block constants come back within e4m3's precision of their block of 256
    back = nf4.dequantize_absmax(stored)
    assert stored["absmax_codes"].dtype == torch.float8_e4m3fn
    assert (back - absmax).abs().max() <= (absmax - absmax.mean()).abs().max() / 16
    restored = nf4.dequantize(stored, weight.shape)
    assert restored.shape == weight.shape
    # worst case: half the widest gap between levels (1 − 0.723) at a slightly-off absmax
    assert (restored - weight).abs().max() <= 0.15 * absmax.max()
    assert (restored - weight).abs().mean() < 0.1 * weight.abs().mean() * 2


def test_stored_bits_per_weight_are_4_127():
    layer = nf4.NF4Linear(torch.nn.Linear(1024, 1024))
    # 4-bit codes + an 8-bit constant per 64 + an fp32 scale per 64·256 + one fp32 mean
    expected = 4 + 8 / 64 + 32 / (64 * 256) + 32 / 1024**2
    assert layer.storage_bits() / 1024**2 == pytest.approx(expected, abs=1e-12)
    assert nf4.bits_per_parameter(layer) == pytest.approx(4.127, abs=0.001)
    assert not list(p for p in layer.parameters() if p.requires_grad)  # nothing of it trains


def test_lora_trains_through_the_dequantised_nf4_base():
    torch.manual_seed(0)
    base = Transformer(SMALL).eval()
    quantized = nf4.quantize_linears(copy.deepcopy(base), skip=("head",))
    assert isinstance(quantized.decoder[0].ff.up, nf4.NF4Linear)
    assert quantized.head.weight is quantized.embed.weight  # the tied output layer kept
    x = torch.randint(0, SMALL.vocab_size, (2, SMALL.max_len))
    layer = quantized.decoder[0].attn.q
    h = torch.randn(3, SMALL.dim)
    expected = torch.nn.functional.linear(h, layer.dequantized_weight(), layer.bias)
    assert torch.equal(layer(h), expected)  # the forward is the dequantised weight's
    with torch.no_grad():  # 4-bit weights stay close to the base's outputs
        assert (quantized(x) - base(x)).abs().max() < 0.5

    adapted = lora.apply_lora(quantized, lora.ALL_LINEAR, rank=4, alpha=8.0)
    loss = adapted(x).logsumexp(-1).mean()
    loss.backward()
    grads = [p.grad for p in adapted.parameters() if p.requires_grad]
    assert len(grads) == SMALL.layers * 6 * 2  # A and B on q, k, v, o, up, down
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    with pytest.raises(TypeError, match="NF4"):
        lora.merge(adapted)  # 4-bit codes cannot absorb BA


@pytest.mark.skipif(not torch.cuda.is_available(), reason="bitsandbytes' NF4 runs on GPU")
def test_our_nf4_matches_bitsandbytes():
    pytest.importorskip("bitsandbytes")
    from papercli.recipes.qlora import compare_bitsandbytes

    g = torch.Generator().manual_seed(0)
    found = compare_bitsandbytes([torch.randn(256, 512, generator=g) * 0.02])
    assert found["bnb_code_agreement"] > 0.999
    assert found["bnb_max_rel_difference"] < 0.05  # 8-bit constants: e4m3 vs its dynamic code


def test_tiny_qlora_run_and_two_steps_do_not_reproduce(tmp_path, tiny_base, runner):  # noqa: F811
    from conftest import two_step_control

    record = tiny_run("qlora", tmp_path / "run", tiny_base)
    m = record["metrics"]
    assert 4.12 < m["qlora_base_bits_per_param"] <= 4.2
    assert m["qlora_trainable_params"] == m["lora_trainable_params"] > 0
    assert {"qlora_minus_lora_loss", "base_minus_qlora_loss"} <= set(m)
    bits = next(c for c in record["checks"] if c["metric"] == "qlora_base_bits_per_param")
    assert bits["passed"]

    failed = two_step_control(runner, "qlora", tmp_path / "control", f"base={tiny_base}", *CONTROL)
    assert "base_minus_qlora_loss" in failed
