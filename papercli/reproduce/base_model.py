"""The pre-trained model the fine-tuning recipes start from (LoRA, QLoRA, InstructGPT, learning to
summarise, RLAIF).

Mini scale: GPT-2's architecture trained on the plays by the gpt-2 recipe itself (one arm, run in
a child process as `papercli reproduce gpt-2` would run it), on first use, then cached under
PAPERCLI_HOME/models/<name>/ with its config, its tokenizer and a SHA-256 of the weights; later
runs load the cache and check the checksum. `--set base=PATH` points a recipe at another one.

Formats read by `load_base(PATH)` (a folder):
- papercli's own: `model.safetensors` + `config.json` with `"format": "papercli-base"` (the
  transformer's options) + `tokenizer.json` — what the mini base is cached as;
- Hugging Face GPT-2: `model.safetensors` + `config.json` with `"model_type": "gpt2"` (+
  `tokenizer.json` when present), e.g. a download of `gpt2-medium`; its Conv1D weights (x W + b,
  W stored in × out) are transposed into our Linear layers and c_attn is split into q and k, v.
Nothing else is read (no pickles, no .bin files), and papercli never downloads a checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from papercli import paths
from papercli.errors import PapercliError
from papercli.models.transformer import Transformer, TransformerConfig

FORMAT = "papercli-base"
WEIGHTS, CONFIG, TOKENIZER = "model.safetensors", "config.json", "tokenizer.json"


class BaseModelError(PapercliError):
    exit_code = 1


@dataclass(frozen=True)
class MiniBase:
    """How the mini base is trained: one arm of the gpt-2 recipe (its names, its data)."""

    arm: str = "d128"  # gpt2.MINI_ARMS: width 128, 4 layers, 4 heads
    steps: int = 600
    batch_size: int = 32
    vocab_size: int = 1024
    context: int = 64
    seed: int = 0

    @property
    def name(self) -> str:
        """The cache folder: every setting is in the name, so a change trains a new base."""
        return (
            f"plays-gpt2-{self.arm}-v{self.vocab_size}-c{self.context}"
            f"-s{self.steps}x{self.batch_size}-seed{self.seed}"
        )


@dataclass
class Base:
    """A loaded base: the network, its tokenizer, and where it came from."""

    model: Transformer
    tokenizer: Any  # tokenizers.Tokenizer, or None when the folder has none
    source: str  # a sentence: what it is and where it was read from
    info: dict[str, Any]


def models_dir() -> Path:
    return paths.home() / "models"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------------------- the mini base
def _to_stderr(message: str) -> None:  # stdout may be a run's --json result
    print(message, file=sys.stderr, flush=True)


def ensure_mini_base(spec: MiniBase = MiniBase(), *, log=_to_stderr) -> Path:
    """The folder of the mini base, trained first if it is not cached yet. Concurrent callers
    (several ranks, two runs) wait on a file lock; one trains, the others then load."""
    folder = models_dir() / spec.name
    if (folder / CONFIG).is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _locked(folder.parent / f".{spec.name}.lock"):
        if not (folder / CONFIG).is_file():
            log(f"training the base model on first use ({spec.name}); later runs reuse it")
            _train_mini_base(spec, folder)
    return folder


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _train_mini_base(spec: MiniBase, folder: Path) -> None:
    """Run the gpt-2 recipe for one arm in a child process, then keep its weights."""
    from papercli.reproduce import checkpoint
    from papercli.reproduce.lock import HELD_ENV

    with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
        run_dir = Path(tmp) / "run"
        cmd = [
            sys.executable,
            "-m",
            "papercli.recipes.gpt2",
            "--scale",
            "mini",
            "--out",
            str(run_dir),
            "--seed",
            str(spec.seed),
            "--steps",
            str(spec.steps),
            "--batch-size",
            str(spec.batch_size),
            "--set",
            f"arms={spec.arm}",
            "--set",
            f"vocab_size={spec.vocab_size}",
            "--set",
            f"context={spec.context}",
            "--set",
            "sample_tokens=0",
            "--set",
            f"eval_every={spec.steps}",
        ]
        env = {k: v for k, v in os.environ.items() if k != HELD_ENV}  # its own run, its own lock
        done = subprocess.run(cmd, env=env, stdout=sys.stderr, check=False)
        result = run_dir / "result.json"
        if not result.is_file():
            raise BaseModelError(f"training the base model failed (exit {done.returncode})")
        state = checkpoint.load(run_dir / checkpoint.CHECKPOINT)["model"]
        prefix = f"{spec.arm}."
        weights = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        from papercli.data import plays
        from papercli.recipes.gpt2 import arm_config

        model = Transformer(arm_config(spec.arm, spec.vocab_size, spec.context))
        model.load_state_dict(weights)
        metrics = json.loads(result.read_text(encoding="utf-8")).get("metrics", {})
        info = {
            "trained_by": f"papercli's gpt-2 recipe, mini scale, arm {spec.arm}",
            "settings": dataclasses.asdict(spec),
            "heldout_loss": metrics.get(f"{spec.arm}_heldout_loss"),
        }
        staging = Path(tmp) / "base"
        save_base(staging, model, plays.bpe_tokenizer(spec.vocab_size), info)
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)  # whole or not at all: config.json marks a finished base


# ----------------------------------------------------------------------------- save / load
def save_base(folder: Path, model: Transformer, tokenizer, info: dict[str, Any]) -> None:
    """A base in papercli's format: weights (safetensors), config with their SHA-256, tokenizer."""
    from safetensors.torch import save_model

    folder.mkdir(parents=True, exist_ok=True)
    save_model(model, str(folder / WEIGHTS))  # handles the tied embedding/output weight
    if tokenizer is not None:
        paths.atomic_write_text(folder / TOKENIZER, tokenizer.to_str())
    config = {
        "format": FORMAT,
        "version": 1,
        "architecture": dataclasses.asdict(model.cfg),
        "sha256": sha256(folder / WEIGHTS),
        **info,
    }
    paths.atomic_write_text(folder / CONFIG, json.dumps(config, indent=2) + "\n")


def load_base(folder: Path, *, device: str | torch.device = "cpu") -> Base:
    """A base from a folder in one of the formats of the module docstring."""
    folder = Path(folder).expanduser()
    config_path, weights = folder / CONFIG, folder / WEIGHTS
    if not config_path.is_file() or not weights.is_file():
        raise BaseModelError(
            f"{folder}: not a base model folder (need {CONFIG} and {WEIGHTS}: papercli's own "
            "format or a Hugging Face GPT-2 download)"
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BaseModelError(f"{config_path}: cannot read: {exc}") from None
    tokenizer = _tokenizer(folder / TOKENIZER)
    if config.get("format") == FORMAT:
        return _load_papercli(folder, config, tokenizer, device)
    if config.get("model_type") == "gpt2":
        return _load_hf_gpt2(folder, config, tokenizer, device)
    raise BaseModelError(
        f"{config_path}: unknown model format (papercli-base or Hugging Face gpt2 are read)"
    )


def _tokenizer(path: Path):
    if not path.is_file():
        return None
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path))


def _load_papercli(folder: Path, config: dict, tokenizer, device) -> Base:
    from safetensors.torch import load_model

    want, got = config.get("sha256"), sha256(folder / WEIGHTS)
    if want != got:
        raise BaseModelError(
            f"{folder / WEIGHTS}: checksum mismatch (config says {str(want)[:12]}…, file is "
            f"{got[:12]}…); delete the folder to train it again"
        )
    fields = {f.name for f in dataclasses.fields(TransformerConfig)}
    arch = TransformerConfig(**{k: v for k, v in config["architecture"].items() if k in fields})
    model = Transformer(arch)
    load_model(model, str(folder / WEIGHTS), device=str(device))
    what = config.get("trained_by", "a papercli base")
    return Base(model.to(device), tokenizer, f"{what} ({folder})", config)


def _load_hf_gpt2(folder: Path, config: dict, tokenizer, device) -> Base:
    """Hugging Face's GPT-2 layout (transformers' GPT2LMHeadModel weights)."""
    from safetensors.torch import load_file

    arch = TransformerConfig(
        vocab_size=config["vocab_size"],
        dim=config["n_embd"],
        layers=config["n_layer"],
        heads=config["n_head"],
        ff_dim=config.get("n_inner") or 4 * config["n_embd"],
        max_len=config["n_positions"],
        norm_eps=config.get("layer_norm_epsilon", 1e-5),
    )
    hf = load_file(str(folder / WEIGHTS))
    hf = {k.removeprefix("transformer."): v for k, v in hf.items()}
    model = Transformer(arch)
    d = arch.dim
    ours: dict[str, torch.Tensor] = {
        "embed.weight": hf["wte.weight"],
        "pos.weight": hf["wpe.weight"],
        "dec_norm.weight": hf["ln_f.weight"],
        "dec_norm.bias": hf["ln_f.bias"],
    }
    for i in range(arch.layers):
        h, o = f"h.{i}.", f"decoder.{i}."
        c_attn_w, c_attn_b = hf[h + "attn.c_attn.weight"], hf[h + "attn.c_attn.bias"]
        ours |= {
            o + "norms.0.weight": hf[h + "ln_1.weight"],
            o + "norms.0.bias": hf[h + "ln_1.bias"],
            o + "norms.1.weight": hf[h + "ln_2.weight"],
            o + "norms.1.bias": hf[h + "ln_2.bias"],
            # Conv1D keeps W as (in, out): x W + b. c_attn's outputs are q | k | v
            o + "attn.q.weight": c_attn_w[:, :d].t(),
            o + "attn.q.bias": c_attn_b[:d],
            o + "attn.kv.weight": c_attn_w[:, d:].t(),
            o + "attn.kv.bias": c_attn_b[d:],
            o + "attn.out.weight": hf[h + "attn.c_proj.weight"].t(),
            o + "attn.out.bias": hf[h + "attn.c_proj.bias"],
            o + "ff.up.weight": hf[h + "mlp.c_fc.weight"].t(),
            o + "ff.up.bias": hf[h + "mlp.c_fc.bias"],
            o + "ff.down.weight": hf[h + "mlp.c_proj.weight"].t(),
            o + "ff.down.bias": hf[h + "mlp.c_proj.bias"],
        }
    ours["head.weight"] = ours["embed.weight"]  # tied (GPT-2)
    missing, unexpected = model.load_state_dict(
        {k: v.contiguous() for k, v in ours.items()}, strict=False
    )
    if missing or unexpected:
        raise BaseModelError(f"{folder}: weights do not fit GPT-2 (missing {missing[:3]})")
    return Base(model.to(device), tokenizer, f"Hugging Face GPT-2 weights ({folder})", config)


def resolve_base(path: str | Path | None, spec: MiniBase = MiniBase(), *, device="cpu") -> Base:
    """`--set base=PATH` when given, else the mini base (trained on first use)."""
    folder = Path(path) if path else ensure_mini_base(spec)
    return load_base(folder, device=device)
