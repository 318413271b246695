"""CLIP: the symmetric contrastive loss, the clipped temperature, generated captions that describe
real pixels, zero-shot classification from prompts, the paper-scale parameter counts, real training
steps through the CLI (Fashion-MNIST and a caption folder), and a 2-step control."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import two_step_control

from papercli.cli import app
from papercli.data import captions
from papercli.models import create_model
from papercli.models.clip import contrastive_loss, zero_shot_classifier, zero_shot_predict
from papercli.recipes._classification import load_in_memory

NAMES = ("T-shirt/top", "Trouser", "Bag")


def tiny_clip(vocab: captions.Vocabulary, **overrides):
    torch.manual_seed(0)
    return create_model(
        "clip-mini", vocab_size=len(vocab.tokens), context=vocab.context, **overrides
    ).eval()


# --------------------------------------------------------------------------- the objective
def test_loss_is_symmetric_and_equals_cross_entropy_both_ways():
    logits = torch.tensor([[2.0, 0.0], [1.0, 3.0]])

    def ce(scores: list[float], right: int) -> float:
        return -scores[right] + math.log(sum(math.exp(s) for s in scores))

    images = (ce([2.0, 0.0], 0) + ce([1.0, 3.0], 1)) / 2  # each image picks its caption
    texts = (ce([2.0, 1.0], 0) + ce([0.0, 3.0], 1)) / 2  # each caption picks its image
    assert contrastive_loss(logits).item() == pytest.approx((images + texts) / 2, abs=1e-6)
    assert contrastive_loss(logits.t()).item() == pytest.approx(contrastive_loss(logits).item())
    assert images != pytest.approx(texts)  # the two directions differ: both are needed


def test_temperature_starts_at_007_and_logits_are_never_scaled_past_100():
    vocab = captions.Vocabulary.for_classes(NAMES, 18)
    model = tiny_clip(vocab)
    assert model.scale().item() == pytest.approx(1 / 0.07, rel=1e-6)
    images = torch.randn(3, 1, 28, 28)
    texts = vocab.encode(["a trouser.", "a bag.", "a photo of a t-shirt/top."])
    with torch.no_grad():
        model.logit_scale.fill_(math.log(1000.0))
        assert model.scale().item() == pytest.approx(100.0)
        logits = model(images, texts)
    cosine = model.encode_image(images) @ model.encode_text(texts).t()
    assert torch.allclose(logits, 100.0 * cosine, atol=1e-5)
    # the clip stops the gradient pushing the temperature lower still
    model.zero_grad()
    contrastive_loss(model(images, texts)).backward()
    assert model.logit_scale.grad.item() == 0.0


# --------------------------------------------------------------------------- generated captions
def test_captions_are_deterministic_and_describe_the_pixels():
    dark_narrow = torch.zeros(1, 28, 28, dtype=torch.uint8)
    dark_narrow[0, :, 10:16] = 100  # 6 columns of dim ink
    light_wide = torch.full((1, 28, 28), 250, dtype=torch.uint8)
    level = captions.levels(torch.cat([dark_narrow, light_wide]))
    assert level.tolist() == [[0, 0, 0], [2, 2, 2]]  # brightness, size, width
    assert captions.caption("Trouser", level[0], 0) == "a photo of a dark, narrow trouser."
    assert captions.caption("Bag", level[1], 1) == "a large bag in light tones."
    # real images: the same image always gets the same words; brightening it changes them
    fmnist = load_in_memory("fashion-mnist", None)
    images = fmnist["train_x"][:200]
    assert torch.equal(captions.levels(images), captions.levels(images.clone()))
    dim = (images.float() * 0.5).to(torch.uint8)
    assert (captions.levels(dim)[:, 0] <= captions.levels(images)[:, 0]).all()
    assert (captions.levels(dim)[:, 0] == 0).float().mean() > 0.9
    # the table holds exactly the encoded captions
    vocab = captions.Vocabulary.for_classes(NAMES, 18)
    table = captions.CaptionTable(NAMES, vocab)
    labels, template = torch.tensor([0, 2]), torch.tensor([2, 3])
    rows = table.lookup(labels, level, template)
    texts = [
        captions.caption(NAMES[c], lv, t) for c, lv, t in zip(labels, level, template, strict=True)
    ]
    assert torch.equal(rows, vocab.encode(texts))
    row = vocab.encode(["A T-shirt/top."])[0].tolist()
    spelled = [vocab.tokens[i] for i in row[:10]]
    assert spelled == ["<sos>", "a", "t", "-", "shirt", "/", "top", ".", "<eos>", "<eos>"]


def test_zero_shot_prompts_are_no_training_caption():
    vocab = captions.Vocabulary.for_classes(NAMES, 18)
    table = captions.CaptionTable(NAMES, vocab)
    prompts = vocab.encode([p.format(name=n.lower()) for n in NAMES for p in captions.PROMPTS])
    trained = {tuple(r.tolist()) for r in table.rows.reshape(-1, vocab.context)}
    assert not trained & {tuple(r.tolist()) for r in prompts}
    assert 2 not in prompts  # no unknown words


# --------------------------------------------------------------------------- zero-shot
def test_zero_shot_is_the_argmax_of_prompt_similarities():
    vocab = captions.Vocabulary.for_classes(NAMES, 18)
    model = tiny_clip(vocab)
    texts = [[p.format(name=n.lower()) for p in captions.PROMPTS] for n in NAMES]
    rows = vocab.encode([t for per_class in texts for t in per_class]).view(3, 3, -1)
    images = torch.randn(16, 1, 28, 28)
    with torch.no_grad():
        image_emb = model.encode_image(images)
        single = model.encode_text(rows[:, 0])
        expected = (image_emb @ single.t()).argmax(1)
        assert torch.equal(
            zero_shot_predict(image_emb, zero_shot_classifier(model, rows[:, :1])), expected
        )
        # ensembling (Sec. 3.1.4): the mean of each class's normalised prompt embeddings
        ensemble = torch.stack([model.encode_text(rows[c]).mean(0) for c in range(3)])
        ensemble = ensemble / ensemble.norm(dim=1, keepdim=True)
        assert torch.allclose(zero_shot_classifier(model, rows), ensemble, atol=1e-6)


def test_the_text_feature_is_the_state_at_eos():
    vocab = captions.Vocabulary.for_classes(NAMES, 18)
    model = tiny_clip(vocab)
    row = vocab.encode(["a photo of a bag."])
    longer = row.clone()
    longer[0, 8:] = 5  # tokens after [EOS] cannot change it: the text encoder is causal
    other = vocab.encode(["a photo of a trouser."])
    with torch.no_grad():
        assert torch.allclose(model.encode_text(row), model.encode_text(longer), atol=1e-6)
        # … while a different caption gives a different embedding
        assert not torch.allclose(model.encode_text(row), model.encode_text(other), atol=1e-3)
        states = model.text.transformer.decode(row)
        expected = F.normalize(
            model.text.proj(states[:, 7]), dim=-1
        )  # [SOS] and 6 tokens, then [EOS]
        assert torch.allclose(model.encode_text(row), expected, atol=1e-6)


# --------------------------------------------------------------------------- paper scale
@pytest.mark.parametrize(
    ("name", "released", "ours"),
    [
        # released models' sum(p.numel()); ours differ only where models/clip.py says
        ("clip-rn50", 102_007_137, 102_007_137 - 19_232),  # ResNet's 7x7 stem, not CLIP's 3 convs
        ("clip-vit-b/32", 151_277_313, 151_277_313 - 1_536 + 768),  # no ln_pre, a patch bias
        ("clip-vit-l/14", 427_616_513, 427_616_513 - 2_048 + 1_024),
    ],
)
def test_paper_scale_counts_on_the_meta_device(name, released, ours):
    with torch.device("meta"):
        model = create_model(name)
    assert sum(p.numel() for p in model.parameters()) == ours
    text = sum(p.numel() for p in model.text.parameters())
    assert text == {"clip-rn50": 63_690_240, "clip-vit-b/32": 63_428_096}.get(name, 123_650_304)


def test_paper_plan_per_model(runner):
    def plan(*args: str) -> dict:
        result = runner.invoke(
            app, ["reproduce", "clip", "--scale", "paper", *args, "--dry-run", "--json"]
        )
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    assert plan()["params"] == 151_276_545
    assert plan("--set", "model=clip-rn50")["params"] == 101_987_905


# --------------------------------------------------------------------------- runs
def test_a_few_real_training_steps(runner, tmp_path):
    out = tmp_path / "run"
    args = ["reproduce", "clip", "--steps", "4", "--batch-size", "32", "--out", str(out)]
    for setting in ("eval_every=2", "eval_train_samples=300", "eval_test_samples=300"):
        args += ["--set", setting]
    result = runner.invoke(app, args)
    assert result.exit_code in (0, 1), result.output
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4]
    m = json.loads((out / "result.json").read_text())["metrics"]
    assert 0.0 <= m["zero_shot_acc"] <= 1.0 and 0.0 <= m["probe_acc"] <= 1.0
    assert m["probe_minus_zero_shot_acc"] == pytest.approx(m["probe_acc"] - m["zero_shot_acc"])
    assert m["logit_scale"] == pytest.approx(1 / 0.07, rel=0.01)  # lr × 4 steps barely moves it


def test_two_steps_do_not_reproduce(runner, tmp_path: Path):
    failed = two_step_control(
        runner, "clip", tmp_path / "control", "eval_test_samples=1000", "eval_train_samples=1000"
    )
    assert "zero_shot_acc" in failed  # the floor an untrained model misses


def _caption_folder(root: Path) -> None:
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    lines = []
    for i in range(8):
        colour = ("red", "blue")[i % 2]
        pixels = torch.randint(0, 60, (30, 30, 3), generator=g, dtype=torch.uint8)
        pixels[..., 0 if colour == "red" else 2] += 180
        Image.fromarray(pixels.numpy()).save(root / f"{i}.png")
        lines.append(f"{i}.png\tA {colour} square, photographed {i} times")
        for split in ("val", "train"):
            folder = root / split / colour
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels.numpy()).save(folder / f"{i}.png")
    (root / "captions.tsv").write_text("\n".join(lines) + "\n")


def test_paper_scale_reads_a_caption_folder(runner, tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("PAPERCLI_HOME", str(tmp_path / "home"))
    data = tmp_path / "pairs"
    data.mkdir()
    _caption_folder(data)
    args = ["reproduce", "clip", "--scale", "paper", "--steps", "2", "--batch-size", "4"]
    args += ["--data", str(data)]
    for s in ("model=clip-mini", "lr=1e-3", "beta2=0.98", "eps=1e-6", "image_size=28",
              "micro_batch_size=0", "workers=0", "context=16", "eval_every=2",
              "eval_train_samples=8"):  # fmt: skip
        args += ["--set", s]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "run")])
    assert result.exit_code in (0, 1), result.output
    m = json.loads((tmp_path / "run" / "result.json").read_text())["metrics"]
    assert {"zero_shot_acc", "zero_shot_ensemble_acc", "probe_acc"} <= set(m)
    assert list((tmp_path / "home" / "cache" / "tokenizers").glob("captions-bpe49408-*.json"))

    (data / "captions.tsv").write_text("0.png no tab here\n")
    capfd.readouterr()
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "bad")])
    assert result.exit_code == 1
    errors = [line for line in capfd.readouterr().err.splitlines() if "error" in line]
    assert errors == [
        f"papercli: error: {data / 'captions.tsv'}:1: expected <image path>\\t<caption>"
    ]
