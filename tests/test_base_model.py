"""The fine-tuning recipes' base model: trained on first use by the real gpt-2 recipe and cached
with a checksum; Hugging Face GPT-2 weights read into the transformer family."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from papercli.reproduce.base_model import (
    BaseModelError,
    MiniBase,
    ensure_mini_base,
    load_base,
    resolve_base,
)

TINY = MiniBase(arm="d32", steps=4, batch_size=4, vocab_size=300, context=16)


def test_the_mini_base_is_trained_once_then_loaded_with_its_checksum(papercli_home):
    folder = ensure_mini_base(TINY, log=lambda *_: None)
    config = json.loads((folder / "config.json").read_text())
    assert config["format"] == "papercli-base" and len(config["sha256"]) == 64
    assert config["settings"]["steps"] == 4 and config["heldout_loss"] > 0
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert ensure_mini_base(TINY) == folder  # cached: not trained again
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp

    base = resolve_base(None, TINY)
    tokens = torch.tensor([base.tokenizer.encode("To be, or not to be").ids])
    assert base.model(tokens).shape == (1, tokens.shape[1], 300)
    assert base.model.head.weight is base.model.embed.weight  # still tied after loading

    # a changed byte is caught before anything trains on it
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(BaseModelError, match="checksum mismatch"):
        load_base(folder)


def test_not_a_base_folder_is_a_clear_error(tmp_path):
    with pytest.raises(BaseModelError, match="not a base model folder"):
        load_base(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(BaseModelError, match="unknown model format"):
        load_base(tmp_path)


def _gpt2_reference(hf: dict[str, torch.Tensor], tokens: torch.Tensor, layers: int, heads: int):
    """GPT-2's forward written from Hugging Face's weight names and Conv1D convention (y = x W + b
    with W stored in × out), independently of papercli's transformer."""
    x = hf["wte.weight"][tokens] + hf["wpe.weight"][: tokens.shape[1]]
    t = tokens.shape[1]
    mask = torch.ones(t, t, dtype=torch.bool).tril()
    for i in range(layers):
        p = f"h.{i}."
        h = F.layer_norm(x, x.shape[-1:], hf[p + "ln_1.weight"], hf[p + "ln_1.bias"])
        qkv = h @ hf[p + "attn.c_attn.weight"] + hf[p + "attn.c_attn.bias"]
        q, k, v = qkv.split(x.shape[-1], dim=-1)
        q, k, v = (z.view(1, t, heads, -1).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
        att = att.masked_fill(~mask, float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(1, t, -1)
        x = x + y @ hf[p + "attn.c_proj.weight"] + hf[p + "attn.c_proj.bias"]
        h = F.layer_norm(x, x.shape[-1:], hf[p + "ln_2.weight"], hf[p + "ln_2.bias"])
        h = F.gelu(h @ hf[p + "mlp.c_fc.weight"] + hf[p + "mlp.c_fc.bias"], approximate="tanh")
        x = x + h @ hf[p + "mlp.c_proj.weight"] + hf[p + "mlp.c_proj.bias"]
    x = F.layer_norm(x, x.shape[-1:], hf["ln_f.weight"], hf["ln_f.bias"])
    return x @ hf["wte.weight"].t()


def test_hugging_face_gpt2_weights_give_gpt2s_outputs(tmp_path):
    from safetensors.torch import save_file

    d, layers, heads, vocab, positions = 16, 2, 4, 50, 32
    g = torch.Generator().manual_seed(0)

    def w(*shape):
        return torch.randn(*shape, generator=g) * 0.2

    hf = {"wte.weight": w(vocab, d), "wpe.weight": w(positions, d)}
    hf |= {"ln_f.weight": 1 + w(d), "ln_f.bias": w(d)}
    for i in range(layers):
        p = f"h.{i}."
        hf |= {
            p + "ln_1.weight": 1 + w(d),
            p + "ln_1.bias": w(d),
            p + "ln_2.weight": 1 + w(d),
            p + "ln_2.bias": w(d),
            p + "attn.c_attn.weight": w(d, 3 * d),
            p + "attn.c_attn.bias": w(3 * d),
            p + "attn.c_proj.weight": w(d, d),
            p + "attn.c_proj.bias": w(d),
            p + "mlp.c_fc.weight": w(d, 4 * d),
            p + "mlp.c_fc.bias": w(4 * d),
            p + "mlp.c_proj.weight": w(4 * d, d),
            p + "mlp.c_proj.bias": w(d),
        }
    save_file(hf, str(tmp_path / "model.safetensors"))
    config = {"model_type": "gpt2", "vocab_size": vocab, "n_embd": d, "n_layer": layers}
    config |= {"n_head": heads, "n_positions": positions, "layer_norm_epsilon": 1e-5}
    (tmp_path / "config.json").write_text(json.dumps(config))

    base = load_base(tmp_path)
    tokens = torch.randint(0, vocab, (1, 12), generator=g)
    with torch.no_grad():
        ours = base.model.eval()(tokens)
    assert torch.allclose(ours, _gpt2_reference(hf, tokens, layers, heads), atol=1e-4)
    assert "Hugging Face GPT-2" in base.source and base.tokenizer is None
