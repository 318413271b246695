"""The registry: the bundled files, schema errors, lookup, layering and the parse cache."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import REPO, SEEDS, VALID_PAPER, write_paper
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from papercli.cli import app
from papercli.errors import RegistryError, UnknownPaperError
from papercli.index import index_path
from papercli.registry import (
    MAX_DEPTH,
    YEARS,
    Registry,
    check_file,
    drop_index,
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


def test_a_large_registry_finds_by_one_pass_what_its_index_finds():
    papers = Registry.load([BUNDLED]).papers * 4  # past the size where lookups scan instead
    scanning, indexed = Registry(papers), Registry(papers)
    assert len(indexed._index) > 0 and "_index" not in scanning.__dict__
    names = [n for p in papers[:53] for n in (p.id, *p.aliases, p.arxiv or "")]
    queries = names + [n.upper().replace("-", " ") for n in names] + ["flashattention2", "nope"]
    for q in queries:
        assert scanning.find(q) is indexed.find(q), q
        assert scanning._lookup(q.lower(), "zzz") is indexed._lookup(q.lower(), "zzz"), q
    assert "_index" not in scanning.__dict__


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
    assert index_path().is_file()
    path.write_text(path.read_text().replace("A Test Paper", "An Edited Paper, longer"))
    assert load_directory(tmp_path)[0].title.startswith("An Edited Paper")
    drop_index()
    index_path().write_bytes(b"\x00garbage" * 100)
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


# ----------------------------------------------------------------------------- hostile input
def _papercli(*argv: str, home: Path) -> subprocess.CompletedProcess:
    """The real CLI in its own interpreter: a crash (SIGSEGV) fails the test, not the run."""
    env = {**os.environ, "PAPERCLI_HOME": str(home), "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "papercli", *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_100k_levels_of_brackets_do_not_crash_any_command(user_registry, papercli_home):
    deep = user_registry / "deep.yaml"
    deep.write_text("[" * 100_000 + "\n")  # a 100 KB file that overflowed libyaml's C composer
    listed = _papercli("list", "--json", home=papercli_home)
    assert listed.returncode == 0, listed.stderr  # was -11 (SIGSEGV) with no message
    assert "vit" in {p["id"] for p in json.loads(listed.stdout)}
    assert listed.stderr == (
        f"papercli: warning: skipped {deep}:1: nested deeper than {MAX_DEPTH} levels"
        " (a paper file needs 4)\n"
    )
    checked = _papercli("validate", home=papercli_home)
    assert checked.returncode == 1
    assert (
        checked.stdout
        == f"{deep}:1: nested deeper than {MAX_DEPTH} levels (a paper file needs 4)\n"
    )


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("- " * 50_000 + "x\n", 1),  # block sequences nested on one line
        ("id: x\nsummary: " + "{a: " * 40 + "\n", 2),  # flow mappings, the excess on line 2
        ("".join("  " * i + "a:\n" for i in range(300)) + "  " * 300 + "b\n", MAX_DEPTH + 1),
    ],
    ids=["dashes", "braces", "indentation"],
)
def test_every_kind_of_deep_nesting_is_refused_with_its_line(text, line, tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text(text)
    with pytest.raises(RegistryError) as exc:
        load_file(path)
    assert f"nested deeper than {MAX_DEPTH} levels" in str(exc.value)
    assert exc.value.line == line


def test_many_brackets_at_a_real_depth_still_load(tmp_path):
    # 60 flow-style claims put the cheap bound above MAX_DEPTH; the exact walk lets it through
    path = write_paper(tmp_path, "many-claims")
    claim = '  - {name: c, metric: m, value: 1, setting: "[x] {y}", source: T1}\n'
    path.write_text(path.read_text() + "".join(claim for _ in range(59)))
    assert len(load_file(path).claims) == 60


def test_broken_files_do_not_lock_out_read_commands(runner, user_registry):
    broken = write_paper(user_registry, "broken", text="id: broken\ntitle: [\n")
    typo = write_paper(user_registry, "typo", alias="T2", arxiv="2101.00002")
    typo.write_text(typo.read_text().replace("year: 2021", "year: soon") + "titel: x\n")
    write_paper(user_registry, "fine")
    for argv in (["list"], ["show", "vit"], ["summary", "fine"], ["search", "test"]):
        result = runner.invoke(app, argv)
        assert result.exit_code == 0, (argv, result.output)
        warnings = result.stderr.splitlines()
        assert warnings == [
            f"papercli: warning: skipped {broken}:3: malformed YAML: did not find expected node"
            " content",
            f"papercli: warning: skipped {typo}:14: titel: unknown field (did you mean 'title'?)"
            " (+1 more)",
        ]
    # the paper of a skipped file is named with its problem, not 'unknown paper'
    shown = runner.invoke(app, ["show", "typo"])
    assert shown.exit_code == 1
    assert shown.stderr.splitlines()[-1] == (
        f"papercli: error: {typo}:14: titel: unknown field (did you mean 'title'?)"
    )
    checked = runner.invoke(app, ["validate"])
    assert checked.exit_code == 1
    assert checked.stdout.splitlines() == [
        f"{broken}:3: malformed YAML: did not find expected node content",
        f"{typo}:14: titel: unknown field (did you mean 'title'?)",
        f"{typo}:4: year: must be an integer, got a string",
    ]


def test_validate_checks_the_merged_registry_like_the_loader(runner, user_registry):
    text = VALID_PAPER.format(id="mine", alias="ViT", arxiv="2010.11929")
    text = text.replace("year: 2021", "year: 2020").replace('date: "2021-01"', 'date: "2020-10"')
    mine = write_paper(user_registry, "mine", text=text)  # consistent, but clashes with vit
    vit = BUNDLED / "vit.yaml"
    expected = [
        f"{mine}:8: aliases: 'ViT' is already used by {vit}",
        f"{mine}:9: arxiv: arXiv id 2010.11929 is already used by {vit}",
    ]
    checked = runner.invoke(app, ["validate"])
    assert checked.exit_code == 1 and checked.stdout.splitlines() == expected
    single = runner.invoke(app, ["validate", str(mine)])  # a file alone, layered over bundled
    assert single.exit_code == 1 and single.stdout.splitlines() == expected
    assert "2 problem(s) in 1 file(s)" in single.stderr
    reg = Registry.load()  # the loader finds exactly the same problems ...
    assert [str(p) for p in reg.problems] == expected
    assert reg.get("ViT").id == "vit" and reg.get("2010.11929").id == "vit"  # ... and serves vit
    listed = runner.invoke(app, ["list"])
    assert listed.exit_code == 0 and "mine" not in listed.stdout.split()


def test_user_override_of_a_bundled_paper_is_still_valid(runner, user_registry):
    (user_registry / "vit.yaml").write_text((BUNDLED / "vit.yaml").read_text())
    result = runner.invoke(app, ["validate"])
    assert result.exit_code == 0, result.output


def test_unquoted_arxiv_hint_shows_the_id_as_written(tmp_path):
    path = write_paper(tmp_path, "float-id")
    path.write_text(path.read_text().replace('arxiv: "2101.00001"', "arxiv: 2010.11930"))
    with pytest.raises(RegistryError) as exc:
        load_file(path)
    # YAML read 2010.1193 (a float); the hint must be the id as typed, trailing zero included
    assert str(exc.value) == (
        f"{path}:9: arxiv: must be a quoted string (YAML read it as a number: write"
        " '2010.11930' in quotes)"
    )


@pytest.mark.parametrize(
    ("line_text", "expected"),
    [
        ("date: 2020-13-45", "5: date: '2020-13-45' is not a date (YYYY-MM or YYYY-MM-DD)"),
        ('date: "2021-02-30"', "5: date: '2021-02-30' is not a date (YYYY-MM or YYYY-MM-DD)"),
        ("year: 99999999", f"4: year: 99999999 is not a year between {YEARS[0]} and {YEARS[1]}"),
        ("year: 202", f"4: year: 202 is not a year between {YEARS[0]} and {YEARS[1]}"),
    ],
)
def test_impossible_dates_and_years_are_refused_with_their_line(line_text, expected, tmp_path):
    path = write_paper(tmp_path, "bad-date")
    key = line_text.split(":")[0]
    path.write_text(re.sub(rf"^{key}: .*$", line_text, path.read_text(), flags=re.M))
    _, problems = check_file(path)
    assert f"{path}:{expected}" in [str(p) for p in problems]


def test_a_100kb_value_is_not_echoed_in_full(runner, tmp_path):
    path = write_paper(tmp_path, "long-id")
    huge = "X" * 100_000
    # a long id, and a long unknown key (explicit '? ' form: implicit keys stop at 1024)
    path.write_text(path.read_text().replace("id: long-id", f"id: {huge}") + f"? {huge}\n: 1\n")
    _, problems = check_file(path)
    assert problems and all(len(str(p)) < 400 for p in problems)
    assert sum("(100000 characters)" in str(p) for p in problems) == 2
    shown = runner.invoke(app, ["show", huge])
    assert shown.exit_code == 2 and len(shown.stderr) < 300
    assert "(100000 characters)" in shown.stderr


def test_a_large_first_run_checks_in_parallel_with_the_same_outcome(
    user_registry, papercli_home, monkeypatch
):
    """Past PARALLEL_MIN changed files the checks run in forked workers: the papers served, the
    problems reported (with their lines) and which of two clashing files is blamed must be
    exactly those of checking one file after another."""
    from papercli.index import PARALLEL_MIN

    for i in range(PARALLEL_MIN + 20):
        write_paper(user_registry, f"bulk-{i:04d}", alias=f"bp{i}", arxiv=f"2101.{10000 + i:05d}")
    write_paper(user_registry, "bulk-0007b", alias="bulk-0007")  # clashes with bulk-0007's id
    (user_registry / "bulk-0300.yaml").write_text("id: bulk-0300\ntitle: [unclosed\n")
    parallel = _papercli("list", "--json", home=papercli_home)
    ids = {p["id"] for p in json.loads(parallel.stdout)}
    assert parallel.returncode == 0 and len(ids) == len(list(BUNDLED.glob("*.yaml"))) + (
        PARALLEL_MIN + 20 - 1
    )
    assert "bulk-0007" in ids and "bulk-0007b" not in ids and "bulk-0300" not in ids
    assert (
        "bulk-0300.yaml:3: malformed YAML" in parallel.stderr
        and "bulk-0007b.yaml" in parallel.stderr
    )
    # the same registry checked file by file in this process, with no index to help
    from papercli import index

    index_path().unlink()
    monkeypatch.setattr(index, "PARALLEL_MIN", 10**9)
    sequential = Registry.load([user_registry], light=True)
    assert {p.id for p in sequential.papers} == ids - {p.stem for p in BUNDLED.glob("*.yaml")}


@pytest.mark.parametrize(
    "doc",
    [
        *(p.read_text(encoding="utf-8") for p in sorted((REPO / "registry/papers").glob("*.yaml"))),
        "x: &a {k: v}\ny: *a\n",  # an alias: shared, as the safe constructor shares it
        "a: &x [*x]\n",  # an alias inside its own anchor
        "m: &m {a: 1}\nn: {<<: *m, b: 2}\n",  # a merge key
        "- a\n- {1: 2, 2.5: null, true: 2020-01-01}\n",  # keys and scalars that are not strings
        "d: 2020-13-45\n",  # an impossible date stays a string (the schema reports it)
        "a: &a [x, x, x]\nb: &b [*a, *a, *a]\nc: [*b, *b, *b]\n",
    ],
)
def test_the_fast_loader_builds_what_the_safe_loader_builds(doc):
    """registry._Loader walks strings, mappings and sequences itself for speed: same documents."""
    import yaml

    from papercli import registry

    class Safe(yaml.CSafeLoader):
        pass

    Safe.add_constructor("tag:yaml.org,2002:timestamp", registry._timestamp)
    fast, safe = yaml.load(doc, Loader=registry._Loader), yaml.load(doc, Loader=Safe)
    assert repr(fast) == repr(safe)
    if isinstance(safe, dict) and "y" in safe:
        assert fast["x"] is fast["y"]


def test_the_loaders_tag_resolution_is_the_safe_loaders():
    """registry._Loader resolves tags by itself (libyaml asks for every node); every kind of
    scalar, quoted or not, must come out as the safe loader makes it."""
    import yaml

    from papercli.registry import _Loader

    text = textwrap.dedent(
        """\
        ints: [0, 7, 2020, 0755, 09, -3, +7, 0x1F, 0o17, 1_000, 1:30, '12', ２０]
        floats: [1.5, 5., .5, 007.5, 1_000.5, 1:30.5, -2e3, .inf, -.Inf, 6.02e+23, "1.5"]
        bools: [true, False, yes, No, on, OFF, "true"]
        nulls: [~, null, Null, '', "null"]
        dates: [2021-01-05, 2021-01-05T10:00:00Z, "2021-01-05"]
        strings: [plain, '=', "=", 'x: y', -dash, .dot, <angle, "~"]
        empty:
        merged: {<<: {a: 1}, b: 2}
        nested: [[1, [2, {k: v}]], {}]
        """
    )
    # repr: 5 == 5.0, and an int where the safe loader makes a float is a difference
    assert repr(yaml.load(text, Loader=_Loader)) == repr(yaml.load(text, Loader=yaml.SafeLoader))
    for path in sorted((REPO / "registry" / "papers").glob("*.yaml")):
        doc = path.read_text(encoding="utf-8")
        assert yaml.load(doc, Loader=_Loader) == yaml.load(doc, Loader=yaml.SafeLoader), path
