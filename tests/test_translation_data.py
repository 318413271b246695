"""The translation data: the generated German/English numbers corpus (aligned, held-out numbers
never trained on, deterministic), the WMT14 folder layout and its errors, the shared BPE and the
padded batches cut from it."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from num2words import num2words

from papercli.data import registry, translation
from papercli.errors import PapercliError


@functools.cache
def _spelled(lang: str, high: int) -> dict[str, int]:
    """Every spelling (cardinal and ordinal) of 1 … high -> its number: num2words read backwards."""
    spelled = {num2words(n, lang=lang): n for n in range(1, high + 1)}
    return spelled | {num2words(n, lang=lang, to="ordinal"): n for n in range(1, high + 1)}


def _number(text: str, lang: str, high: int) -> int:
    return _spelled(lang, high)[text]


def test_numbers_are_aligned_and_held_out_numbers_never_trained_on():
    corpus = translation.numbers(150, 30, high=200, ordinal_share=0.5, seed=3)
    (de_train, en_train), (de_test, en_test) = corpus.train, corpus.test
    assert (len(de_train), len(de_test)) == (150, 30) and corpus.source == "de"
    train = {_number(de, "de", 200) for de in de_train}
    test = {_number(de, "de", 200) for de in de_test}
    # both sides spell the same number, German with its own order ("einundzwanzig" / "twenty-one")
    for de, en in zip(de_train + de_test, en_train + en_test, strict=True):
        assert _number(de, "de", 200) == _number(en, "en", 200)
    assert not train & test
    assert any(de.endswith("ste") for de in de_train)  # ordinals are in the mix


def test_numbers_are_deterministic_from_the_seed_and_cached(papercli_home):
    first = translation.numbers(40, 10, per_sentence=3, seed=1)
    assert list(papercli_home.rglob("numbers-*.json"))  # cached under PAPERCLI_HOME
    for cached in papercli_home.rglob("numbers-*.json"):
        cached.unlink()
    assert translation.numbers(40, 10, per_sentence=3, seed=1) == first  # regenerated alike
    assert translation.numbers(40, 10, per_sentence=3, seed=2) != first
    longest = max(first.train[1], key=len)
    assert " and " in longest and longest.count(",") >= 1  # "A, B and C"


def test_numbers_in_other_languages_regroup_the_digits(papercli_home):
    """Japanese groups digits by 10^4 (万) where English groups by 10^3 (thousand): the same
    numbers, aligned, with the held-out numbers still never trained on."""
    corpus = translation.numbers(150, 30, high=20_000, seed=3, source="ja", target="en")
    (ja_train, en_train), (ja_test, en_test) = corpus.train, corpus.test
    assert (corpus.source, corpus.target) == ("ja", "en")
    for ja, en in zip(ja_train + ja_test, en_train + en_test, strict=True):
        assert _number(ja, "ja", 20_000) == _number(en, "en", 20_000)
    train = {_number(ja, "ja", 20_000) for ja in ja_train}
    assert not train & {_number(ja, "ja", 20_000) for ja in ja_test}
    assert any("万" in ja for ja in ja_train)
    # the default pair is German -> English; French joins a list with "et"
    french = translation.numbers(20, 5, high=1000, per_sentence=3, source="fr", target="en")
    assert any(" et " in fr and fr.count(",") for fr in french.train[0])


def test_numbers_leave_out_what_num2words_cannot_spell(papercli_home):
    """num2words fails on Korean multiples of 10,000 (KeyError '만'): they leave the pools."""
    assert not translation._spells(10_000, "ko") and translation._spells(12_345, "ko")
    corpus = translation.numbers(9_990, 10, high=10_000, source="ko", target="en")  # every number
    assert len(corpus.train[0]) == 9_990 and len(corpus.test[0]) == 10
    assert "ten thousand" not in corpus.train[1] + corpus.test[1]


def test_numbers_refuses_more_numbers_than_the_range_holds():
    with pytest.raises(PapercliError, match="distinct numbers"):
        translation.numbers(90, 20, high=100)


def test_wmt14_layout(tmp_path):
    with pytest.raises(PapercliError, match=r"pass --data DIR with train\.en"):
        translation.wmt14(None)
    (tmp_path / "train.en").write_text("Hello .\nGood morning .\n", encoding="utf-8")
    with pytest.raises(PapercliError, match=r"missing train\.de, newstest2014\.en"):
        translation.wmt14(tmp_path)
    (tmp_path / "train.de").write_text("Hallo .\n", encoding="utf-8")
    (tmp_path / "newstest2014.en").write_text("Thank you .\n", encoding="utf-8")
    (tmp_path / "newstest2014.de").write_text("Danke .\n", encoding="utf-8")
    with pytest.raises(PapercliError, match="line-aligned"):
        translation.wmt14(tmp_path)
    (tmp_path / "train.de").write_text("Hallo .\nGuten Morgen .\n", encoding="utf-8")
    corpus = translation.wmt14(tmp_path)
    assert corpus.train == (["Hello .", "Good morning ."], ["Hallo .", "Guten Morgen ."])
    assert corpus.test == (["Thank you ."], ["Danke ."])
    assert (corpus.source, corpus.target) == ("en", "de")


def test_shared_bpe_and_padded_batches(papercli_home):
    corpus = translation.numbers(300, 20, high=5000, seed=0)
    src, tgt = corpus.train
    tok = translation.shared_bpe(src + tgt, 300)
    pad, bos, eos = (
        tok.token_to_id(t) for t in (translation.PAD, translation.BOS, translation.EOS)
    )
    assert len({pad, bos, eos}) == 3 and tok.get_vocab_size() == 302
    enc = translation.Encoded(tok, tgt, max_tokens=64)
    rows = enc.rows(np.array([0, 1, 2]), pad, bos=bos, eos=eos)
    for row, sentence in zip(rows.tolist(), tgt[:3], strict=True):
        assert row[0] == bos
        body = row[1 : row.index(eos)]
        assert tok.decode(body) == sentence  # byte-level BPE round-trips the text
        assert all(t == pad for t in row[row.index(eos) + 1 :])
    cut = translation.Encoded(tok, tgt[:5], max_tokens=3)
    assert cut.lengths.max() == 3
    again = translation.shared_bpe(src + tgt, 300)  # from the cache: the same ids
    assert again.encode(src[0]).ids == tok.encode(src[0]).ids


def test_registry_lists_both_translation_data_sets():
    numbers = registry.get("numbers")
    assert numbers.offline and numbers.status().present
    wmt = registry.get("wmt14")
    assert not wmt.status().present and "newstest2014.de" in wmt.how_to_get
