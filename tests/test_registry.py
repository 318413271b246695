"""The registry: the bundled files, schema errors, lookup, layering and the parse cache."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import REPO, SEEDS, write_paper
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from papercli import paths
from papercli.errors import RegistryError, UnknownPaperError
from papercli.registry import (
    Registry,
    load_directory,
    load_file,
    normalize_arxiv,
    validate_directory,
)
from papercli.reproduce.catalog import recipe_names

BUNDLED = REPO / "registry" / "papers"


def test_bundled_registry_is_valid_and_complete():
    checked, problems = validate_directory(BUNDLED, recipe_names())
    assert problems == []
    assert checked >= 53
    reg = Registry.load([BUNDLED])
    assert {p.field for p in reg.papers} == {"language", "vision", "general"}
    for p in reg.papers:
        assert p.summary and p.key_points, p.id
        assert len(p.summary.split()) >= 40, f"{p.id}: summary too short"


@pytest.mark.skipif(
    not SEEDS.is_dir(), reason="the seed notes (../shared/seeds) are not beside this checkout"
)
def test_every_seed_arxiv_id_resolves():
    text = "\n".join(p.read_text(encoding="utf-8", errors="replace") for p in SEEDS.glob("*.txt"))
    ids = set(re.findall(r"arxiv\.org/(?:abs|pdf)/([0-9]{4}\.[0-9]{4,5}(?:v[0-9]+)?)", text))
    assert len(ids) >= 40
    reg = Registry.load([BUNDLED])
    for arxiv_id in sorted(ids):
        paper = reg.get(arxiv_id)  # raises UnknownPaperError when missing
        assert paper.arxiv == arxiv_id.split("v")[0]


def test_seed_papers_without_arxiv_are_present():
    reg = Registry.load([BUNDLED])
    for name in (
        "resnet",
        "pytorch-autodiff",
        "moe",
        "mixtral",
        "attention-sinks-blog",
        "grounded-sam",
        "gpt",
        "gpt-2",
        "unet",
        "vit",
    ):
        assert reg.get(name).id == name


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("vit", "vit"),
        ("ViT", "vit"),
        ("16x16", "vit"),
        ("2010.11929", "vit"),
        ("2010.11929v2", "vit"),
        ("arXiv:2010.11929", "vit"),
        ("https://arxiv.org/abs/2010.11929v1", "vit"),
        ("FlashAttention-2", "flash-attention-2"),
        ("flashattention2", "flash-attention-2"),
        ("Stable Diffusion", "latent-diffusion"),
        ("RESNET", "resnet"),
    ],
)
def test_lookup(query, expected):
    assert Registry.load([BUNDLED]).get(query).id == expected


def test_unknown_id_suggests():
    with pytest.raises(UnknownPaperError) as exc:
        Registry.load([BUNDLED]).get("vitt")
    assert str(exc.value) == "unknown paper 'vitt' — did you mean: vit?"
    assert exc.value.exit_code == 2


def test_normalize_arxiv_forms():
    assert normalize_arxiv("https://arxiv.org/pdf/2010.11929v2.pdf") == ("2010.11929", "v2")
    assert normalize_arxiv("hep-ex/0406020v1") == ("hep-ex/0406020", "v1")
    assert normalize_arxiv("math.GT/0309136") == ("math.GT/0309136", None)
    assert normalize_arxiv("not an id") is None


BAD_CASES = {
    "malformed": ("title: [unclosed\nid: x\n", "malformed YAML", 2),
    "wrong_type": (None, "year: must be an integer, got a string", None),
    "missing": (None, "summary: is required", None),
    "unknown_field": (None, "titel: unknown field (did you mean 'title'?)", None),
    "number_arxiv": (None, "arxiv: must be a quoted string", None),
}


def _variant(case: str, tmp: Path) -> Path:
    base = write_paper(tmp, "bad-paper")
    text = base.read_text()
    if case == "malformed":
        text = BAD_CASES[case][0]
    elif case == "wrong_type":
        text = text.replace("year: 2021", 'year: "2021"')
    elif case == "missing":
        text = re.sub(r"summary: .*\n", "", text)
    elif case == "unknown_field":
        text = text + "titel: typo\n"
    elif case == "number_arxiv":
        text = text.replace('arxiv: "2101.00001"', "arxiv: 2101.00001")
    base.write_text(text)
    return base


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_files_give_one_line_errors(case, tmp_path):
    path = _variant(case, tmp_path)
    with pytest.raises(RegistryError) as exc:
        load_file(path)
    message = str(exc.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    assert BAD_CASES[case][1] in message
    if case == "wrong_type":
        assert exc.value.line == 4  # the line of `year:` in the file
    if case == "malformed":
        assert exc.value.line is not None


@pytest.mark.parametrize("bad_id", ["../x", "Vi T", "-lead", "UPPER"])
def test_id_must_be_a_slug(bad_id, tmp_path):
    path = write_paper(tmp_path, "slug-test")
    path.write_text(path.read_text().replace("id: slug-test", f'id: "{bad_id}"'))
    with pytest.raises(RegistryError, match="is not a slug"):
        load_file(path)


def test_id_must_match_file_name(tmp_path):
    path = write_paper(tmp_path, "one")
    path.rename(tmp_path / "two.yaml")
    with pytest.raises(RegistryError, match="does not match the file name 'two'"):
        load_file(tmp_path / "two.yaml")


def test_error_line_points_into_nested_fields(tmp_path):
    path = write_paper(tmp_path, "nested")
    path.write_text(path.read_text().replace("value: 90.5", 'value: "high"'))
    with pytest.raises(RegistryError) as exc:
        load_file(path)
    assert exc.value.field == "claims[0].value"
    assert exc.value.line == 13


def test_duplicates_are_reported(tmp_path):
    write_paper(tmp_path, "first", alias="same", arxiv="2101.00001")
    write_paper(tmp_path, "second", alias="SAME", arxiv="2101.00001")
    _, problems = validate_directory(tmp_path)
    messages = [str(p) for p in problems]
    assert any("aliases: 'SAME' is already used" in m for m in messages)
    assert any("arXiv id 2101.00001 is already used" in m for m in messages)


def test_user_registry_overrides_bundled(user_registry):
    vit = (
        (BUNDLED / "vit.yaml")
        .read_text()
        .replace('title: "An Image is Worth', 'title: "My Own Notes on An Image is Worth')
    )
    (user_registry / "vit.yaml").write_text(vit)
    write_paper(user_registry, "extra-paper")
    reg = Registry.load()
    assert reg.get("vit").title.startswith("My Own Notes")
    assert reg.get("extra-paper").source == user_registry / "extra-paper.yaml"
    assert len(reg.papers) == len(list(BUNDLED.glob("*.yaml"))) + 1


def test_parse_cache_follows_edits_and_survives_corruption(tmp_path):
    path = write_paper(tmp_path, "cached")
    assert load_directory(tmp_path)[0].title.startswith("A Test Paper")
    cache_files = list((paths.cache_dir() / "registry").glob("*.marshal"))
    assert len(cache_files) == 1
    path.write_text(path.read_text().replace("A Test Paper", "An Edited Paper, longer"))
    assert load_directory(tmp_path)[0].title.startswith("An Edited Paper")
    cache_files[0].write_bytes(b"\x00garbage")
    assert load_directory(tmp_path)[0].title.startswith("An Edited Paper")
    path.write_text("id: [broken\n")
    with pytest.raises(RegistryError):
        load_directory(tmp_path)  # a cached copy never hides a file that is now broken


yaml_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.dates(),
)
yaml_values = st.recursive(
    yaml_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
schema_keys = st.sampled_from(
    [
        "id",
        "title",
        "authors",
        "year",
        "date",
        "field",
        "tags",
        "aliases",
        "arxiv",
        "urls",
        "summary",
        "key_points",
        "claims",
        "reproduce",
        "x",
    ]
)
documents = st.one_of(
    st.dictionaries(schema_keys, yaml_values, max_size=10),
    yaml_values,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(doc=documents, raw=st.one_of(st.none(), st.text(max_size=60)))
def test_loader_never_raises_anything_but_registry_error(doc, raw, tmp_path):
    import yaml

    path = tmp_path / "fuzz.yaml"
    path.write_text(
        raw if raw is not None else yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8"
    )
    try:
        paper = load_file(path)
    except RegistryError as exc:
        assert "\n" not in str(exc).strip()
    else:
        assert paper.id == "fuzz"
