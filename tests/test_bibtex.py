"""Citations a reviewer would accept: every exported entry parsed back with pybtex (a BibTeX
parser, strict about undefined macros), entry types and required fields per type, year/date/
eprint agreement for every registry entry, and truncated author lists shown as "et al."."""

from __future__ import annotations

import calendar
import json
import re
import subprocess
import sys
import textwrap

import pytest
from conftest import REPO, write_paper
from pybtex.database import BibliographyData, parse_string

from papercli.bibtex import bibliography, entry, key_suffix
from papercli.cli import app
from papercli.errors import RegistryError
from papercli.registry import Paper, Venue, load_directory, load_file

BUNDLED = REPO / "registry" / "papers"
PAPERS = {p.id: p for p in load_directory(BUNDLED)}

# BibTeX's required fields per entry type (btxdoc); our @misc always carries these three.
REQUIRED = {
    "inproceedings": {"author", "title", "booktitle", "year"},
    "article": {"author", "title", "journal", "year"},
    "techreport": {"author", "title", "institution", "year"},
    "misc": {"author", "title", "year"},
}
TYPE_OF_KIND = {
    "conference": "inproceedings",
    "workshop": "inproceedings",
    "journal": "article",
    "techreport": "techreport",
    "blog": "misc",
    "arxiv": "misc",
}
MONTH_NAMES = list(calendar.month_name)[1:]  # what pybtex expands the month macros to
KEY_RE = re.compile(r"^[a-z]+[0-9]{4}[a-z0-9]*$")


def parse(text: str) -> BibliographyData:
    """pybtex raises on undefined macros, unbalanced braces and duplicate keys."""
    return parse_string(text, "bibtex")


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[str, BibliographyData]:
    """`papercli bib --all` run as a user runs it, in a subprocess, parsed back."""
    env = {"PAPERCLI_HOME": str(tmp_path_factory.mktemp("home")), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-m", "papercli", "bib", "--all"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, parse(proc.stdout)


def _exported_entry(db: BibliographyData, paper: Paper):
    """The exported entry of one paper: `bib --all` writes them in id order."""
    key = list(db.entries)[sorted(PAPERS).index(paper.id)]
    e = db.entries[key]
    assert e.fields.get("eprint") == paper.arxiv or not paper.arxiv
    return key, e


def test_every_paper_exports_one_parseable_entry_with_a_valid_key(exported):
    text, db = exported
    assert len(db.entries) == len(PAPERS) == text.count("\n@") + 1
    assert all(KEY_RE.match(k) for k in db.entries), [k for k in db.entries if not KEY_RE.match(k)]


@pytest.mark.parametrize("paper_id", sorted(PAPERS))
def test_entry_type_and_required_fields_per_type(exported, paper_id):
    paper = PAPERS[paper_id]
    _, e = _exported_entry(exported[1], paper)
    kind = paper.venue.kind if paper.venue else "arxiv"
    assert e.type == TYPE_OF_KIND[kind]
    fields = set(e.fields) | set(e.persons)
    assert REQUIRED[e.type] <= fields, REQUIRED[e.type] - fields
    if kind == "blog":
        assert {"howpublished", "url", "urldate"} <= fields
        assert e.fields["howpublished"] == paper.venue.name
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", e.fields["urldate"])
    if kind in ("conference", "workshop", "journal"):
        assert e.fields["year"] == str(paper.venue.year)  # the venue's year, not arXiv's
        assert "month" not in e.fields  # the registry holds no venue month
    else:
        assert e.fields["year"] == str(paper.year)
        if len(paper.date) >= 7:  # month macro, expanded by the parser
            assert e.fields["month"] == MONTH_NAMES[int(paper.date[5:7]) - 1]
    if paper.arxiv:  # the eprint fields survive whatever the entry type
        assert e.fields["eprint"] == paper.arxiv
        assert e.fields["archivePrefix"] == "arXiv"
    elif kind == "arxiv":
        pytest.fail("an arXiv-only entry without an eprint")
    authors = [str(p) for p in e.persons["author"]]
    assert len(authors) == len(paper.authors) + paper.et_al
    assert (authors[-1] == "others") is paper.et_al


@pytest.mark.parametrize(
    ("paper_id", "kind", "venue_field", "venue_text", "year"),
    [
        ("resnet", "inproceedings", "booktitle", "Computer Vision and Pattern Recognition", 2016),
        ("bert", "inproceedings", "booktitle", "North American Chapter", 2019),
        ("vit", "inproceedings", "booktitle", "Learning Representations (ICLR)", 2021),
        ("t5", "article", "journal", "Journal of Machine Learning Research", 2020),
        ("gpt", "techreport", "institution", "OpenAI", 2018),
        ("gpt-2", "techreport", "institution", "OpenAI", 2019),
        ("moe", "misc", "howpublished", "Hugging Face blog", 2023),
        ("llama-2", "misc", "eprint", "2307.09288", 2023),
        ("grounded-sam", "misc", "eprint", "2401.14159", 2024),
    ],
)
def test_the_issue_examples(exported, paper_id, kind, venue_field, venue_text, year):
    _, e = _exported_entry(exported[1], PAPERS[paper_id])
    assert e.type == kind
    assert venue_text in e.fields[venue_field]
    assert e.fields["year"] == str(year)


def test_month_is_a_macro_not_a_number():
    text = entry(PAPERS["llama-2"])
    assert "  month = jul,\n" in text
    assert parse(text).entries["touvron2023llama"].fields["month"] == "July"


@pytest.mark.parametrize("paper_id", sorted(PAPERS))
def test_year_date_and_eprint_agree(paper_id):
    """`year`/`date` are the first public version; an arXiv id encodes the month it was
    announced: the submission month, or the next for papers sent after that month's deadline."""
    paper = PAPERS[paper_id]
    if paper.date:
        assert int(paper.date[:4]) == paper.year
    if paper.venue and paper.venue.year:
        assert 0 <= paper.venue.year - paper.year <= 2  # published after the preprint
    if not paper.arxiv:
        assert not (paper.venue and paper.venue.kind == "arxiv")
        return
    yymm = paper.arxiv.split("/")[-1][:4]
    announced = (2000 + int(yymm[:2])) * 12 + int(yymm[2:]) - 1
    assert len(paper.date) >= 7, "an arXiv paper's date names its month"
    submitted = int(paper.date[:4]) * 12 + int(paper.date[5:7]) - 1
    assert announced - submitted in (0, 1), (paper.date, paper.arxiv)


def _paper(**changes) -> Paper:
    base = {
        "id": "x",
        "title": "Same Title",
        "authors": ["Ada Lovelace"],
        "year": 2021,
        "field": "general",
        "summary": "s",
    }
    return Paper(**{**base, **changes})


def test_duplicate_keys_get_letter_suffixes_that_stay_valid():
    assert [key_suffix(n) for n in (1, 2, 26, 27, 28, 52, 53, 702, 703)] == [
        "a", "b", "z", "aa", "ab", "az", "ba", "zz", "aaa",
    ]  # fmt: skip
    papers = [_paper(id=f"p{i}") for i in range(30)]
    text = bibliography(papers)
    keys = list(parse(text).entries)  # pybtex rejects duplicate keys
    assert keys[:3] == ["lovelace2021same", "lovelace2021samea", "lovelace2021sameb"]
    assert keys[26:30] == [
        "lovelace2021samez",
        "lovelace2021sameaa",
        "lovelace2021sameab",
        "lovelace2021sameac",
    ]
    assert all(KEY_RE.match(k) for k in keys)


def test_a_suffix_never_takes_another_papers_natural_key():
    # "Same A" gives lovelace2021samea naturally; the duplicate of "Same" must skip it
    papers = [_paper(id="a"), _paper(id="b"), _paper(id="c", title="Samea")]
    keys = list(parse(bibliography(papers)).entries)
    assert keys == ["lovelace2021same", "lovelace2021sameb", "lovelace2021samea"]


def test_latex_specials_and_a_truncated_list_parse_back():
    paper = _paper(
        title="Cost & Benefit: 100% of {Braces}_#1",
        authors=["Jos\u00e9 Garc\u00eda", "A. N. Other"],
        et_al=True,
        venue=Venue(kind="journal", name="J. of R&D", year=2022, volume="3"),
    )
    e = parse(entry(paper)).entries["garcia2022cost"]
    assert e.type == "article" and e.fields["journal"] == r"J. of R\&D"
    assert [str(p) for p in e.persons["author"]] == [
        "Garc\u00eda, Jos\u00e9",
        "Other, A. N.",
        "others",
    ]


# ----------------------------------------------------------------------------- truncated authors
def test_truncated_author_list_renders_et_al(runner):
    result = runner.invoke(app, ["summary", "llama-2"])
    assert result.exit_code == 0
    assert "Prajjwal Bhargava, Shruti Bhosale et al.* — arXiv preprint, 2023" in result.stdout
    assert "others" not in result.stdout
    shown = runner.invoke(app, ["show", "llama-2"]).stdout
    assert re.search(r"^authors\s+Hugo Touvron, .*Shruti Bhosale et al\.$", shown, flags=re.M)
    data = json.loads(runner.invoke(app, ["show", "llama-2", "--json"]).stdout)
    assert data["et_al"] is True and data["authors"][-1] == "Shruti Bhosale"
    assert "Shruti Bhosale and others}" in runner.invoke(app, ["bib", "llama-2"]).stdout


def test_complete_author_list_has_no_et_al(runner):
    out = runner.invoke(app, ["summary", "unet"]).stdout
    assert "*Olaf Ronneberger, Philipp Fischer, Thomas Brox* — MICCAI 2015" in out
    assert "et al." not in out


# ----------------------------------------------------------------------------- validation
VENUE_PAPER = textwrap.dedent(
    """\
    id: v
    title: T
    authors: [Ada Lovelace]
    year: 2021
    date: "2021-01"
    field: vision
    arxiv: "2101.00001"
    summary: s
    """
)


@pytest.mark.parametrize(
    ("extra", "field", "message"),
    [
        ("venue: CVPR 2021", "venue", "must be a mapping"),
        ("venue: {kind: poster}", "venue.kind", "'poster' is not one of conference"),
        ("venue: {kind: conference, name: CVPR}", "venue.year", "is required for kind conference"),
        ("venue: {kind: blog, name: B}", "venue.accessed", "is required for kind blog"),
        ("venue: {kind: arxiv, name: arXiv}", "venue", "kind arxiv takes no other keys"),
        ("venue: {kind: journal, name: J, year: 2021, issue: 3}", "venue.issue", "unknown field"),
        ("venue: {kind: journal, name: J, year: 2021, volume: [1]}", "venue.volume", "string"),
        ("et_al: yes please", "et_al", "must be true or false"),
    ],
)
def test_bad_venue_or_et_al_is_one_clear_error(tmp_path, extra, field, message):
    path = write_paper(tmp_path, "v", text=VENUE_PAPER + extra + "\n")
    with pytest.raises(RegistryError) as info:
        load_file(path)
    assert info.value.field == field and message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("old", "new", "field", "message"),
    [
        ("authors: [Ada Lovelace]", "authors: [Ada Lovelace, others]", "authors[1]", "et_al: true"),
        ("authors: [Ada Lovelace]", "authors: [Ada Lovelace, et al.]", "authors[1]", "not a name"),
        ('date: "2021-01"', 'date: "2021-05"', "date", "not when arXiv 2101.00001 appeared"),
        ('year: 2021\ndate: "2021-01"', "year: 2023", "year", "not the year of arXiv 2101.00001"),
    ],
)
def test_author_and_date_problems(tmp_path, old, new, field, message):
    path = write_paper(tmp_path, "v", text=VENUE_PAPER.replace(old, new))
    with pytest.raises(RegistryError) as info:
        load_file(path)
    assert info.value.field == field and message in str(info.value)


def test_bad_venue_exits_with_one_line_error_in_the_cli(runner, user_registry):
    write_paper(user_registry, "v", text=VENUE_PAPER + "venue: NeurIPS 2021\n")
    result = runner.invoke(app, ["bib", "v"])
    assert result.exit_code != 0
    # the broken file is skipped with a warning; asking for its paper names the problem
    lines = result.stderr.splitlines()
    assert lines[0].startswith("papercli: warning: skipped") and len(lines) == 2
    assert lines[1].startswith("papercli: error: ") and "venue" in lines[1]
    assert "Traceback" not in result.output


def test_a_valid_venue_round_trips_through_the_parse_cache(user_registry):
    path = write_paper(
        user_registry,
        "v",
        text=VENUE_PAPER + "venue: {kind: journal, name: J, short: JJ, year: 2022, volume: 7}\n",
    )
    first = load_directory(path.parent)[0]
    again = load_directory(path.parent)[0]  # second load comes from the cache
    assert (
        first.venue
        == again.venue
        == Venue(kind="journal", name="J", short="JJ", year=2022, volume="7")
    )
    assert again.venue.label == "JJ 2022"


# ----------------------------------------------------------------------------- the guide
GUIDE = (REPO / "docs" / "guide.md").read_text(encoding="utf-8")


def test_guide_bib_example_is_what_bib_prints(runner):
    shown = re.search(r"\$ papercli bib unet\n(.+?)```", GUIDE, flags=re.S).group(1)
    assert runner.invoke(app, ["bib", "unet"]).stdout == shown


def test_guide_registry_example_and_venue_examples_validate():
    import yaml

    from papercli.registry import paper_from_dict

    section = GUIDE[GUIDE.index("## The registry format") :]
    example = yaml.safe_load(re.search(r"```yaml\n(.+?)```", section, flags=re.S).group(1))
    assert paper_from_dict(example).venue.label == "MICCAI 2015"
    venues = re.findall(r"`(\{kind: [^`]+\})`", section)
    assert len(venues) == 6
    for venue in venues:
        extra = {"urls": {"blog": "https://example.org/post"}}
        paper_from_dict({**example, **extra, "venue": yaml.safe_load(venue)})
