"""The paper registry: schema, loading and validation of YAML files, lookup, filters and search.

This module never imports torch or numpy: every light command stops here.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import difflib
import functools
import math
import operator
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from papercli import paths
from papercli.errors import PapercliError, RegistryError, UnknownPaperError, preview

try:  # libyaml's C loader is ~10x faster; fall back to the pure-Python safe loader.
    _BaseLoader: type = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - depends on how PyYAML was built
    _BaseLoader = yaml.SafeLoader


def _timestamp(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> object:
    try:
        return loader.construct_yaml_timestamp(node)
    except ValueError:
        return node.value


_STR, _MAP, _SEQ, _INT, _FLOAT = (
    f"tag:yaml.org,2002:{t}" for t in ("str", "map", "seq", "int", "float")
)


class _Loader(_BaseLoader):  # type: ignore[misc, valid-type]
    """The safe loader, except that an impossible date such as 2020-13-45 stays a string, so the
    schema reports it with its line instead of the constructor failing for the whole file.

    Documents are built by a direct walk over the node tree for strings, string-keyed mappings
    and sequences (~90% of a paper file), handing every other node to the safe constructor:
    PyYAML's generic construction is pure Python and cost ~70% of parsing a file, which a first
    run over 10,000 files pays 10,000 times. Same result."""

    # libyaml calls these around every node for path resolvers, which this loader has none of
    # (asserted below): C callables that do nothing spare ~320 Python calls a file
    descend_resolver = {}.get  # (parent, index) -> index, discarded
    ascend_resolver = tuple  # () -> (), discarded

    def resolve(self, kind: type, value: str | None, implicit: tuple[bool, bool]) -> str:
        """The base's tag resolution without its generality (path resolvers, per-call list
        concatenation): libyaml calls it for every node, ~160 times per paper file."""
        if kind is yaml.ScalarNode:
            if implicit[0]:
                for tag, regexp in _IMPLICIT.get(value[:1], _WILDCARD):  # type: ignore[index]
                    if regexp.match(value):
                        return tag
            return _STR
        return _SEQ if kind is yaml.SequenceNode else _MAP

    def construct_document(self, node: yaml.Node) -> object:
        self._built: dict[yaml.Node, object] = {}
        try:
            return self._build(node)
        except _Recursive:  # an alias inside its own anchor: the safe constructor's business
            self._reset()
            return super().construct_document(node)
        finally:
            self._reset()

    def _reset(self) -> None:
        self.constructed_objects, self.recursive_objects = {}, {}
        self.state_generators, self.deep_construct = [], False

    def _build(self, node: yaml.Node) -> object:
        tag = node.tag
        if tag == _STR:
            return node.value
        if tag not in (_MAP, _SEQ):
            # a year or a claim's value, as the safe constructor reads it but without its
            # generality (signs, "_", bases; a leading zero is octal in YAML 1.1: left to it)
            value = node.value
            if tag == _INT and value.isdigit() and value.isascii() and value[0] != "0":
                return int(value)
            if tag == _FLOAT and value.replace(".", "", 1).isdigit() and value.isascii():
                return float(value)
            return self.construct_object(node, deep=True)
        # an aliased node is built once and shared, as the safe constructor does: rebuilding it
        # at every alias would let a few lines of nested aliases expand exponentially
        done = self._built.get(node, _PENDING)
        if done is _BUILDING:
            raise _Recursive
        if done is not _PENDING:
            return done
        self._built[node] = _BUILDING
        if tag == _SEQ:
            out: object = [self._build(item) for item in node.value]
        else:
            out = {}
            for key, value in node.value:
                if key.tag != _STR:  # merge keys, numbers as keys: the safe constructor's rules
                    out = self.construct_object(node, deep=True)
                    break
                out[key.value] = self._build(value)
        self._built[node] = out
        return out


class _Recursive(Exception):
    pass


_PENDING, _BUILDING = object(), object()


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp)
assert not _Loader.yaml_path_resolvers  # _Loader.resolve leaves them out
# the implicit resolvers by a scalar's first character, with those for any character after
_WILDCARD = tuple(_Loader.yaml_implicit_resolvers.get(None, ()))
_IMPLICIT = {
    first: (*resolvers, *_WILDCARD)
    for first, resolvers in _Loader.yaml_implicit_resolvers.items()
    if first is not None
}


class _Lazy:
    """A regular expression compiled on first use: `list` and `show` served from the index never
    match one, and compiling them all cost ~1 ms of every start."""

    def __init__(self, pattern: str, flags: int = 0) -> None:
        self._args = (pattern, flags)

    @functools.cached_property
    def compiled(self) -> re.Pattern[str]:
        return re.compile(*self._args)

    def __getattr__(self, name: str):  # match, fullmatch, sub, findall …
        return getattr(self.compiled, name)


FIELDS = ("language", "vision", "general")
SLUG_RE = _Lazy(r"^[a-z0-9][a-z0-9-]*$")
# arXiv identifiers (info.arxiv.org/help/arxiv_identifier): new style YYMM.NNNN from 0704 to
# 1412 and YYMM.NNNNN from 1501; old style archive(.SUB)/YYMMNNN from 9108 to 0703. `arxiv_id`
# also checks the month and the digit count of the era.
ARXIV_VERSIONED_RE = _Lazy(
    r"^(?P<id>(?P<new>\d{4})\.(?P<number>\d{4,5})"
    r"|[a-z]+(?:-[a-z]+)*(?:\.[A-Z]{2})?/(?P<old>\d{4})\d{3})(?P<version>v[1-9]\d*)?$"
)
ARXIV_EXAMPLES = "2010.11929, 2010.11929v2, hep-ex/0406020, arXiv:…, or an arxiv.org abs/pdf URL"
DOI_RE = _Lazy(r"^10\.\d{4,9}/\S+$")
CITEKEY_RE = _Lazy(r"^[A-Za-z0-9_:.+-]+$")  # what BibTeX and biber accept in a key
DATE_RE = _Lazy(r"^\d{4}-\d{2}(?:-\d{2})?$")
URL_KEYS = ("abs", "pdf", "code", "blog", "project")
CHECK_OPS = (">=", ">", "<=", "<", "==")
YEARS = (1600, dt.date.today().year + 1)  # a paper's year: no real one falls outside these
# Real paper files nest 4 levels (reproduce.checks[0].value); libyaml's composer recurses in C,
# and 100,000 levels crash the interpreter, so deeper documents are refused before composing.
MAX_DEPTH = 32
# Where a work was published; each kind maps to one BibTeX entry type (papercli.bibtex).
VENUE_KINDS = ("conference", "workshop", "journal", "techreport", "blog", "arxiv")
# Keys each kind must have beyond `kind`; `year` is the venue's (ResNet: arXiv 2015, CVPR 2016).
VENUE_REQUIRED = {
    "conference": ("name", "year"),
    "workshop": ("name", "year"),
    "journal": ("name", "year"),
    "techreport": ("name",),  # name = the institution; the year is the paper's
    "blog": ("name", "accessed"),  # name = the site; accessed = BibTeX urldate
    "arxiv": (),
}
VENUE_KEYS = (
    "kind",
    "name",
    "short",
    "year",
    "volume",
    "number",
    "pages",
    "series",
    "publisher",
    "accessed",
)
# Written instead of real names by people (and by the seed notes) for "more authors follow".
_ET_AL_NAMES = {"others", "et al", "et al.", "and others"}


# Records are NamedTuples or plain slotted classes, not dataclasses: a dataclass costs ~0.5 ms of
# start-up (it generates and execs its methods) and the light commands start afresh every time.
class Claim(NamedTuple):
    """One number the paper reports, with the setting it holds in and where the paper says it."""

    name: str
    metric: str
    value: float
    setting: str
    source: str
    unit: str = ""


class Check(NamedTuple):
    """What a reproduction run must measure for the verdict 'reproduced'."""

    metric: str
    op: str
    value: float
    why: str = ""
    scale: str = "any"  # mini | paper | any: the scales whose verdict this check decides


class Reproduce(NamedTuple):
    """Which recipe trains the paper, and the checks that decide its verdict. What each scale
    trains on which data is the recipe's own config (`papercli recipes` shows it)."""

    recipe: str  # a papercli recipe ("unet") or the dotted module of the user's own recipe
    checks: tuple[Check, ...]


class Venue(NamedTuple):
    """The published version of a paper: kind (VENUE_KINDS), full name, acronym and year."""

    kind: str
    name: str = ""
    short: str = ""  # the acronym people say: CVPR, NeurIPS, JMLR
    year: int | None = None
    volume: str = ""
    number: str = ""
    pages: str = ""
    series: str = ""
    publisher: str = ""
    accessed: str = ""  # blog posts: the day the page was read (YYYY-MM-DD)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in VENUE_KEYS if getattr(self, k) not in ("", None)}

    @property
    def label(self) -> str:
        """Short human form: 'CVPR 2016', 'Hugging Face blog', 'arXiv preprint'."""
        if self.kind == "arxiv":
            return "arXiv preprint"
        name = self.short or self.name
        if self.kind == "techreport":
            return f"{name} technical report"
        if self.kind == "workshop" and "workshop" not in name.lower():
            name += " workshop"
        return f"{name} {self.year}" if self.year and str(self.year) not in name else name


class Paper:
    """One registry entry, validated (see `check_file`)."""

    __slots__ = (
        "aliases",
        "arxiv",
        "arxiv_category",
        "authors",
        "citekey",
        "claims",
        "date",
        "doi",
        "et_al",
        "field",
        "id",
        "key_points",
        "reproduce",
        "source",
        "summary",
        "tags",
        "title",
        "urls",
        "venue",
        "year",
    )

    def __init__(
        self,
        id: str,
        title: str,
        authors: list[str],
        year: int,
        field: str,
        summary: str,
        date: str = "",
        venue: Venue | None = None,
        et_al: bool = False,  # the author list is truncated: shown "et al.", exported "and others"
        tags: list[str] | None = None,
        aliases: list[str] | None = None,
        arxiv: str | None = None,
        arxiv_category: str = "",
        doi: str = "",
        citekey: str = "",  # stored by add/import; empty: derived from the configured format
        urls: dict[str, str] | None = None,
        key_points: list[str] | None = None,
        claims: list[Claim] | None = None,
        reproduce: Reproduce | None = None,
        source: Path | None = None,
    ) -> None:
        self.id, self.title, self.authors, self.year = id, title, authors, year
        self.field, self.summary, self.date, self.venue = field, summary, date, venue
        self.et_al, self.tags, self.aliases = et_al, tags or [], aliases or []
        self.arxiv, self.arxiv_category, self.doi, self.citekey = (
            arxiv,
            arxiv_category,
            doi,
            citekey,
        )
        self.urls, self.key_points = urls or {}, key_points or []
        self.claims, self.reproduce, self.source = claims or [], reproduce, source

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Paper):
            return NotImplemented
        return all(getattr(self, k) == getattr(other, k) for k in self.__slots__)

    __hash__ = None  # type: ignore[assignment]  # mutable, like the dataclass it was

    def __repr__(self) -> str:
        return f"Paper(id={self.id!r}, title={self.title!r}, source={self.source!r})"

    def to_dict(self) -> dict[str, Any]:
        """Every field as plain JSON-able data (what `show --json` prints)."""
        out: dict[str, Any] = {
            "id": self.id,
            "title": self.title,
            "authors": list(self.authors),
            "et_al": self.et_al,
            "year": self.year,
            "date": self.date,
            "venue": self.venue.to_dict() if self.venue else None,
            "field": self.field,
            "tags": list(self.tags),
            "aliases": list(self.aliases),
            "arxiv": self.arxiv,
            "arxiv_category": self.arxiv_category,
            "doi": self.doi,
            "citekey": self.citekey,
            "urls": dict(self.urls),
            "summary": self.summary,
            "key_points": list(self.key_points),
            "claims": [
                {
                    "name": c.name,
                    "metric": c.metric,
                    "value": c.value,
                    "unit": c.unit,
                    "setting": c.setting,
                    "source": c.source,
                }
                for c in self.claims
            ],
            "reproduce": None,
            "source": str(self.source) if self.source else None,
        }
        if self.reproduce:
            r = self.reproduce
            out["reproduce"] = {
                "recipe": r.recipe,
                "checks": [
                    {
                        "metric": c.metric,
                        "op": c.op,
                        "value": c.value,
                        "why": c.why,
                        "scale": c.scale,
                    }
                    for c in r.checks
                ],
            }
        return out

    @classmethod
    def from_trusted_dict(cls, d: dict[str, Any]) -> Paper:
        """Rebuild from `to_dict()` output that was validated before (the parse cache)."""
        d = dict(d)
        d["claims"] = [Claim(**c) for c in d["claims"]]
        d["venue"] = Venue(**d["venue"]) if d["venue"] else None
        r = d["reproduce"]
        if r:
            d["reproduce"] = Reproduce(
                recipe=r["recipe"],
                checks=tuple(Check(**c) for c in r["checks"]),
            )
        d["source"] = Path(d["source"]) if d["source"] else None
        return cls(**d)

    @property
    def abs_url(self) -> str | None:
        if "abs" in self.urls:
            return self.urls["abs"]
        return f"https://arxiv.org/abs/{self.arxiv}" if self.arxiv else None

    @property
    def pdf_url(self) -> str | None:
        if "pdf" in self.urls:
            return self.urls["pdf"]
        return f"https://arxiv.org/pdf/{self.arxiv}" if self.arxiv else None


# ----------------------------------------------------------------------------- schema checks
class _Problem(Exception):
    """A schema problem inside one field; the loader adds the file and line."""

    def __init__(self, field: str, message: str, *, template: str | None = None):
        self.field = field
        self.message = message
        # a message with {raw}, filled with the scalar as written in the file when it is known
        self.template = template
        super().__init__(message)


def _type_name(value: object) -> str:
    return {
        str: "a string",
        int: "an integer",
        float: "a number",
        list: "a list",
        dict: "a mapping",
        bool: "a boolean",
        type(None): "empty",
    }.get(type(value), type(value).__name__)


def _str(name: str, value: object, *, empty_ok: bool = False) -> str:
    if not isinstance(value, str):
        raise _Problem(name, f"must be a string, got {_type_name(value)}")
    value = value.strip()
    if not value and not empty_ok:
        raise _Problem(name, "must not be empty")
    return value


def _str_list(name: str, value: object) -> list[str]:
    if not isinstance(value, list):
        raise _Problem(name, f"must be a list of strings, got {_type_name(value)}")
    return [_str(f"{name}[{i}]", item) for i, item in enumerate(value)]


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Problem(name, f"must be a number, got {_type_name(value)}")
    if not math.isfinite(value):  # .nan / .inf would print as invalid JSON in `show --json`
        raise _Problem(name, f"must be a finite number, got {value}")
    return value


def _mapping(
    name: str, value: object, allowed: Iterable[str], required: Iterable[str] = ()
) -> dict:
    if not isinstance(value, dict):
        raise _Problem(name, f"must be a mapping, got {_type_name(value)}")
    allowed = tuple(allowed)
    for key in value:
        if key not in allowed:
            raise _Problem(f"{name}.{key}", f"unknown field (allowed: {', '.join(allowed)})")
    for key in required:
        if key not in value:
            raise _Problem(f"{name}.{key}", "is required")
    return value


def _slug(name: str, value: object) -> str:
    text = _str(name, value)
    if not SLUG_RE.match(text):
        raise _Problem(name, f"'{preview(text)}' is not a slug (lowercase letters, digits and '-')")
    return text


def arxiv_id(text: str) -> tuple[str, str | None] | None:
    """('2010.11929', 'v2') for a well-formed bare arXiv id with optional version, else None."""
    m = ARXIV_VERSIONED_RE.match(text)
    if not m:
        return None
    yymm = m.group("new") or m.group("old")
    if not 1 <= int(yymm[2:]) <= 12:
        return None
    if m.group("new"):  # 4 digits from 0704 to 1412, 5 digits from 1501
        if not ("0704" <= yymm <= "1412" and len(m.group("number")) == 4) and not (
            yymm >= "1501" and len(m.group("number")) == 5
        ):
            return None
    elif "0703" < yymm < "9108":  # old style ran from August 1991 to March 2007
        return None
    return m.group("id"), m.group("version")


def _arxiv(name: str, value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, float | int):
        template = "must be a quoted string (YAML read it as a number: write '{raw}' in quotes)"
        raise _Problem(name, template.format(raw=value), template=template)
    text = _str(name, value)
    norm = arxiv_id(text)
    if norm is None or norm[1]:
        raise _Problem(
            name,
            f"'{preview(text)}' is not an arXiv id without version (e.g. 2010.11929, "
            "hep-ex/0406020)",
        )
    return text


def _date(name: str, value: object) -> str:
    if isinstance(value, dt.date):  # YAML turns an unquoted 2020-10-22 into a date
        return value.isoformat()
    text = _str(name, value)
    try:  # the pattern checks the shape, the calendar checks 2020-13-45
        ok = bool(DATE_RE.match(text)) and bool(dt.date.fromisoformat(f"{text}-01"[:10]))
    except ValueError:
        ok = False
    if not ok:
        raise _Problem(name, f"'{preview(text)}' is not a date (YYYY-MM or YYYY-MM-DD)")
    return text


def _claim(name: str, value: object) -> Claim:
    data = _mapping(
        name,
        value,
        ("name", "metric", "value", "unit", "setting", "source"),
        ("name", "metric", "value", "setting", "source"),
    )
    return Claim(
        name=_str(f"{name}.name", data["name"]),
        metric=_str(f"{name}.metric", data["metric"]),
        value=_number(f"{name}.value", data["value"]),
        unit=_str(f"{name}.unit", data.get("unit", ""), empty_ok=True),
        setting=_str(f"{name}.setting", data["setting"]),
        source=_str(f"{name}.source", data["source"]),
    )


def _check(name: str, value: object) -> Check:
    data = _mapping(
        name, value, ("metric", "op", "value", "why", "scale"), ("metric", "op", "value")
    )
    op = _str(f"{name}.op", data["op"])
    if op not in CHECK_OPS:
        raise _Problem(f"{name}.op", f"'{preview(op)}' is not one of {', '.join(CHECK_OPS)}")
    return Check(
        metric=_str(f"{name}.metric", data["metric"]),
        op=op,
        value=_number(f"{name}.value", data["value"]),
        why=_str(f"{name}.why", data.get("why", ""), empty_ok=True),
        scale=_choice(f"{name}.scale", data.get("scale", "any"), ("mini", "paper", "any")),
    )


def _str_map(name: str, value: object, allowed: Iterable[str]) -> dict[str, str]:
    data = _mapping(name, value, allowed)
    return {k: _str(f"{name}.{k}", v) for k, v in data.items()}


MODULE_PATH_RE = _Lazy(  # a user recipe module: mylab.recipes.x
    r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+"
)


def _recipe_name(name: str, value: object) -> str:
    if isinstance(value, str) and MODULE_PATH_RE.fullmatch(value):
        return value  # the user's own recipe module
    return _slug(name, value).replace("-", "_")


def _reproduce(name: str, value: object) -> Reproduce:
    data = _mapping(name, value, ("recipe", "checks"), ("recipe", "checks"))
    checks = data["checks"]
    if not isinstance(checks, list) or not checks:
        raise _Problem(f"{name}.checks", "must be a non-empty list")
    return Reproduce(
        recipe=_recipe_name(f"{name}.recipe", data["recipe"]),
        checks=tuple(_check(f"{name}.checks[{i}]", c) for i, c in enumerate(checks)),
    )


def _venue(name: str, value: object) -> Venue:
    if isinstance(value, str):
        raise _Problem(
            name, f"'{value}' must be a mapping, e.g. {{kind: conference, name: …, year: 2016}}"
        )
    data = _mapping(name, value, VENUE_KEYS, ("kind",))
    kind = _choice(f"{name}.kind", data["kind"], VENUE_KINDS)
    for key in VENUE_REQUIRED[kind]:
        if data.get(key) in (None, ""):
            raise _Problem(f"{name}.{key}", f"is required for kind {kind}")
    if kind == "arxiv" and len(data) > 1:
        raise _Problem(name, "kind arxiv takes no other keys (the paper's arxiv id says it all)")
    out: dict[str, Any] = {"kind": kind}
    for key, raw in data.items():
        if key == "year":
            out[key] = _int(f"{name}.year", raw)
        elif key == "accessed":
            out[key] = _date(f"{name}.accessed", raw)
        elif key != "kind":
            # YAML reads `volume: 21` as a number; BibTeX wants text
            number = isinstance(raw, int) and not isinstance(raw, bool)
            out[key] = _str(f"{name}.{key}", str(raw) if number else raw)
    return Venue(**out)


def _authors(name: str, value: object) -> list[str]:
    authors = _str_list(name, value)
    for i, author in enumerate(authors):
        if author.lower() in _ET_AL_NAMES:
            raise _Problem(
                f"{name}[{i}]",
                f"'{author}' is not a name: list the known authors and set et_al: true",
            )
    if not authors:
        raise _Problem(name, "must name at least one author")
    return authors


def _list_of(name: str, value: object, item: Callable[[str, object], Any]) -> list:
    if not isinstance(value, list):
        raise _Problem(name, f"must be a list, got {_type_name(value)}")
    return [item(f"{name}[{i}]", v) for i, v in enumerate(value)]


# name -> (required, parser). The order is the order `show` prints and `add` writes.
SCHEMA: dict[str, tuple[bool, Callable[[str, object], Any]]] = {
    "id": (True, _slug),
    "title": (True, _str),
    "authors": (True, _authors),
    "et_al": (False, lambda n, v: _bool(n, v)),
    "year": (True, lambda n, v: _year(n, v)),
    "date": (False, _date),
    "venue": (False, _venue),
    "field": (True, lambda n, v: _choice(n, v, FIELDS)),
    "tags": (False, lambda n, v: [t.lower() for t in _str_list(n, v)]),
    "aliases": (False, _str_list),
    "arxiv": (False, _arxiv),
    "arxiv_category": (False, _str),
    "doi": (False, lambda n, v: _pattern(n, v, DOI_RE, "a DOI (10.NNNN/…)")),
    "citekey": (
        False,
        lambda n, v: _pattern(n, v, CITEKEY_RE, "a citation key ([A-Za-z0-9_:.+-])"),
    ),
    "urls": (False, lambda n, v: _str_map(n, v, URL_KEYS)),
    "summary": (True, _str),
    "key_points": (False, _str_list),
    "claims": (False, lambda n, v: _list_of(n, v, _claim)),
    "reproduce": (False, _reproduce),
}


def _pattern(name: str, value: object, pattern: re.Pattern[str], what: str) -> str:
    text = _str(name, value).strip()
    if not pattern.match(text):
        raise _Problem(name, f"'{preview(text)}' is not {what}")
    return text


def _int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Problem(name, f"must be an integer, got {_type_name(value)}")
    return value


def _year(name: str, value: object) -> int:
    year = _int(name, value)
    if not YEARS[0] <= year <= YEARS[1]:
        raise _Problem(name, f"{preview(year)} is not a year between {YEARS[0]} and {YEARS[1]}")
    return year


def _bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise _Problem(name, f"must be true or false, got {_type_name(value)}")
    return value


def _choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    text = _str(name, value)
    if text not in choices:
        raise _Problem(name, f"'{preview(text)}' is not one of {', '.join(choices)}")
    return text


def _check_dict(data: object, source: Path | None = None) -> tuple[Paper | None, list[_Problem]]:
    """Validate one parsed document: the Paper, or every problem of every top-level field."""
    if not isinstance(data, dict):
        return None, [
            _Problem("", f"the file must hold a mapping of fields, got {_type_name(data)}")
        ]
    problems: list[_Problem] = []
    for key in data:
        if key not in SCHEMA:
            name = str(key)
            near = difflib.get_close_matches(name, SCHEMA, n=1) if len(name) < 64 else []
            hint = f" (did you mean '{near[0]}'?)" if near else ""
            problems.append(_Problem(name, f"unknown field{hint}"))
    values: dict[str, Any] = {}
    for name, (required, parse) in SCHEMA.items():
        if name not in data or data[name] is None:
            if required:
                problems.append(_Problem(name, "is required"))
            continue
        try:
            values[name] = parse(name, data[name])
        except _Problem as p:
            problems.append(p)
    date, year = values.get("date", ""), values.get("year")
    if date and year is not None and int(date[:4]) != year:
        problems.append(_Problem("date", f"year {date[:4]} does not match year {year}"))
    elif year is not None:
        for check in (
            lambda: _check_eprint_date(values.get("arxiv"), date, year),
            lambda: _check_venue_needs(values),
        ):
            try:
                check()
            except _Problem as p:
                problems.append(p)
    if problems:
        return None, problems
    return Paper(source=source, **values), []


def paper_from_dict(data: object, source: Path | None = None) -> Paper:
    """Validate one parsed document and build a Paper; raises _Problem on the first bad field."""
    paper, problems = _check_dict(data, source)
    if problems:
        raise problems[0]
    assert paper is not None
    return paper


def arxiv_year_month(arxiv_id: str) -> tuple[int, int]:
    """The submission year and month an arXiv id encodes: 1512.03385 and hep-ex/0406020 (YYMM)."""
    yymm = arxiv_id.rsplit("/", 1)[-1][:4]
    yy = int(yymm[:2])
    return (1900 + yy if yy >= 91 else 2000 + yy), int(yymm[2:])  # arXiv began in 1991


def _check_eprint_date(arxiv: str | None, date: str, year: int) -> None:
    """`year` and `date` are when the work first appeared; for an arXiv paper, its v1.

    An id carries the month arXiv announced it, which is the submission month, or the next one for
    papers sent after the month's last deadline (CLIP: sent 2021-02-26, id 2103.00020)."""
    if not arxiv:
        return
    a_year, a_month = arxiv_year_month(arxiv)
    announced = a_year * 12 + a_month - 1
    if date and len(date) >= 7:
        submitted = int(date[:4]) * 12 + int(date[5:7]) - 1
        if announced - submitted not in (0, 1):
            raise _Problem(
                "date", f"'{date}' is not when arXiv {arxiv} appeared ({a_year}-{a_month:02d})"
            )
    elif year not in (a_year, (announced - 1) // 12):
        raise _Problem("year", f"{year} is not the year of arXiv {arxiv} ({a_year})")


def _check_venue_needs(values: dict[str, Any]) -> None:
    venue: Venue | None = values.get("venue")
    if venue is None:
        return
    urls = values.get("urls", {})
    if venue.kind == "arxiv" and not values.get("arxiv"):
        raise _Problem("venue.kind", "is arxiv but the paper has no arxiv id")
    if venue.kind == "blog" and not (urls.get("blog") or urls.get("abs")):
        raise _Problem("urls.blog", "is required for a blog post (BibTeX url)")


def _locate(root: yaml.Node | None, field_path: str) -> tuple[int | None, yaml.Node | None]:
    """1-based line and node of a problem, following 'claims[0].value' down the composed tree."""
    line, node = None, root
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", field_path):
        if isinstance(node, yaml.MappingNode) and not part.startswith("["):
            match = next(((k, v) for k, v in node.value if k.value == part), None)
            if match is None:
                return line, None
            line, node = match[0].start_mark.line + 1, match[1]
        elif isinstance(node, yaml.SequenceNode) and part.startswith("["):
            index = int(part[1:-1])
            if index >= len(node.value):
                return line, None
            node = node.value[index]
            line = node.start_mark.line + 1
        else:
            return line, None
    return line, node


@functools.cache
def _line_opening(length: int) -> re.Pattern[str]:
    """A line that opens with a run of `length` or more spaces and block indicators."""
    return re.compile(rf"^[ \t?:-]{{{length},}}", re.M)


def _surely_shallow(text: str) -> bool:
    """Whether `text` cannot nest deeper than MAX_DEPTH, by a cheap upper bound (~10 us for a
    paper file). Every flow collection opens with '[' or '{'. A block collection nested in
    another starts further right, or (a sequence under a mapping key) in the same column, and
    never right of a line's opening run of spaces and indicators ('- ', '? ', ': '): so at most
    2 levels per column of the longest such run, which must stay short of `room`."""
    room = (MAX_DEPTH - text.count("[") - text.count("{")) // 2
    return room > 0 and _line_opening(room).search(text) is None


def _too_deep_line(text: str) -> int | None:
    """The line where nesting passes MAX_DEPTH, or None. libyaml's parser is a loop over events
    (only its composer recurses), so this walk is safe at any depth; it stops at the excess."""
    if _surely_shallow(text):
        return None
    depth = 0
    try:
        for event in yaml.parse(text, Loader=_Loader):
            if isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    return event.start_mark.line + 1
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.YAMLError:
        pass  # malformed before it got too deep: the loader reports it with its own line
    return None


def _parse(text: str, path: Path) -> object:
    """The YAML document in `text`; every failure is a RegistryError with the line when known."""
    too_deep = _too_deep_line(text)
    if too_deep is not None:
        raise RegistryError(
            path, f"nested deeper than {MAX_DEPTH} levels (a paper file needs 4)", line=too_deep
        )
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or exc.context or "malformed YAML"
        raise RegistryError(path, f"malformed YAML: {problem}", line=line) from None
    except yaml.YAMLError as exc:
        raise RegistryError(path, f"malformed YAML: {exc}") from None
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise RegistryError(path, f"malformed YAML: {type(exc).__name__}: {exc}") from None


def check_text(text: str, path: Path) -> tuple[Paper | None, list[RegistryError]]:
    """Validate the text of registry file `path`: the Paper, or every problem found (each with
    file, line when known, and field). The one check behind loading, `validate` and `add`."""
    try:
        data = _parse(text, path)
    except RegistryError as exc:
        return None, [exc]
    paper, problems = _check_dict(data, source=path)
    raw_id = data.get("id") if isinstance(data, dict) else None
    if isinstance(raw_id, str) and SLUG_RE.match(raw_id.strip()) and raw_id.strip() != path.stem:
        problems.append(
            _Problem("id", f"id '{raw_id.strip()}' does not match the file name '{path.stem}'")
        )
    if not problems:
        return paper, []
    root = yaml.compose(text, Loader=_Loader)  # only on the error path: loading stays fast
    errors = []
    for p in problems:
        line, node = _locate(root, p.field)
        message = p.message
        if p.template and isinstance(node, yaml.ScalarNode):
            message = p.template.format(raw=preview(node.value))
        errors.append(RegistryError(path, message, field=p.field or None, line=line))
    return None, errors


def check_file(path: Path) -> tuple[Paper | None, list[RegistryError]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, [RegistryError(path, f"cannot read: {exc}")]
    return check_text(text, path)


def load_file(path: Path) -> Paper:
    """Load and validate one registry file. Every failure is a RegistryError naming the file."""
    paper, problems = check_file(path)
    if problems:
        raise problems[0]
    assert paper is not None
    return paper


# ----------------------------------------------------------------------------- the registry
_SUFFIXES = (".yaml", ".yml")


def _is_registry_file(name: str) -> bool:
    return name.endswith(_SUFFIXES) and not name.startswith(".")


# Parsing YAML costs ~250 us a file; the SQLite index (papercli.index) keeps each valid file's
# paper, checked against the file's (mtime, size, hash). Bump when Paper.to_dict changes.
_CACHE_FORMAT = 9  # 8: doi, citekey; 9: the SQLite index replaces the marshal file


_INDEXES: dict[Path, Any] = {}


def open_index():
    """This process's connection to the index of the current PAPERCLI_HOME (None if none)."""
    from papercli import index

    where = index.index_path()
    if where not in _INDEXES:
        idx = _INDEXES[where] = index.Index.open(_CACHE_FORMAT, where)
        if idx is not None:
            import atexit

            # closed, the last connection checkpoints and deletes the write-ahead log; left
            # open at exit, the log stays and every later process re-reads all of it on
            # opening the index (~30 ms after a first run over 10,000 papers)
            atexit.register(idx.close)
    return _INDEXES[where]


def drop_index() -> None:
    """Forget this process's connection and delete the index file (it is rebuilt on use)."""
    from papercli import index

    where = index.index_path()
    idx = _INDEXES.pop(where, None)
    if idx is not None:
        idx.close()
    for suffix in ("", "-wal", "-shm"):
        try:
            where.with_name(where.name + suffix).unlink(missing_ok=True)
        except OSError:
            pass  # no cache folder to hold one


class Listed(NamedTuple):
    """What `list` needs of a paper, read from the index without building the whole Paper
    (claims, checks, venue: ~90% of the cost). Only `Registry.load(light=True)` makes these."""

    id: str
    title: str
    authors: list[str]
    year: int
    date: str
    field: str
    tags: list[str]
    aliases: list[str]
    arxiv: str | None
    source: str  # the file's path; a str, as building 10,000 Paths costs more than the rest


def _check_for_index(
    where: str | Path, content: bytes | None
) -> tuple[tuple[bytes, bytes] | None, list]:
    """What the index stores of one file: its validated paper marshalled in full and light
    (the fields of Listed, in order), or its problems."""
    import marshal

    path = Path(where)
    try:
        if content is None:  # no index, or its read failed: check_file says why it fails
            content = path.read_bytes()
        text = content.decode("utf-8")
    except OSError:
        return None, check_file(path)[1]
    except UnicodeDecodeError as exc:
        return None, [RegistryError(path, f"cannot read: {exc}")]
    paper, problems = check_text(text, path)
    if paper is None:
        return None, problems
    light = (*(getattr(paper, name) for name in Listed._fields[:-1]), str(path))
    return (marshal.dumps(paper.to_dict()), marshal.dumps(light)), problems


def registry_entries(directory: Path) -> list[os.DirEntry]:
    """The registry files of one folder, by name (none when it is not a folder)."""
    try:  # _is_registry_file inlined, and attrgetter: no Python call per file (10,000 of them)
        found = [
            e
            for e in os.scandir(directory)
            if e.name.endswith(_SUFFIXES) and e.name[0] != "." and e.is_file()
        ]
    except OSError:
        return []
    found.sort(key=operator.attrgetter("name"))
    return found


def scan_directory(
    directory: Path, light: bool = False, entries: list[os.DirEntry] | None = None
) -> tuple[list[Paper], list[RegistryError], int]:
    """The valid papers of one registry folder (Listed ones with `light`), every problem of
    its broken files, and the number of files. Valid files come from the index when
    unchanged; broken ones are never stored, so they are read (and reported) every time."""
    import marshal

    if not directory.is_dir():
        return [], [], 0
    if entries is None:
        entries = registry_entries(directory)
    import sqlite3  # already loaded by the index; here for its exception

    idx = open_index()
    try:
        if idx is None:
            raise sqlite3.OperationalError("no index")
        blobs, problems = idx.sync_directory(directory, entries, _check_for_index, light=light)
    except sqlite3.OperationalError:  # no writable home, or locked: parse, as the index would
        found = [_check_for_index(e.path, None) for e in entries]
        blobs = [pair[light] for pair, _ in found if pair is not None]
        problems = [p for _, ps in found for p in ps]
    except sqlite3.DatabaseError:  # damaged under us: it holds nothing the YAML lacks
        drop_index()
        return scan_directory(directory, light)
    if light:
        # tuple.__new__: the records as they are stored, without NamedTuple's argument parsing
        make = tuple.__new__
        return [make(Listed, marshal.loads(b)) for b in blobs], problems, len(entries)  # type: ignore[misc]
    papers = [Paper.from_trusted_dict(marshal.loads(blob)) for blob in blobs]
    return papers, problems, len(entries)


def load_directory(directory: Path) -> list[Paper]:
    """All papers of one registry folder, validated; raises RegistryError on the first bad file."""
    papers, problems, _ = scan_directory(directory)
    if problems:
        raise problems[0]
    return papers


def _scan(
    path: Path, light: bool = False, entries: list[os.DirEntry] | None = None
) -> tuple[list[Paper], list[RegistryError], int]:
    """A registry layer: a folder, or (for `validate FILE`) one file."""
    if path.is_file():
        paper, problems = check_file(path)
        return ([paper] if paper else []), problems, 1
    return scan_directory(path, light, entries)


def _line_in(path: Path | None, field_name: str) -> int | None:
    """The line of a top-level field, for problems found after loading (only on the error path)."""
    try:
        text = path.read_text(encoding="utf-8")  # type: ignore[union-attr]
        if _too_deep_line(text) is not None:  # edited since it was loaded: never compose it
            return None
        return _locate(yaml.compose(text, Loader=_Loader), field_name)[0]
    except (OSError, ValueError, AttributeError, yaml.YAMLError):
        return None


def duplicate_problems(papers: Iterable[Paper]) -> list[tuple[Paper, RegistryError]]:
    """Ids, aliases and arXiv ids must each name one paper: the later paper gets the problem."""
    problems: list[tuple[Paper, RegistryError]] = []
    seen: dict[str, Paper] = {}
    seen_arxiv: dict[str, Paper] = {}

    def clash(paper: Paper, field_name: str, message: str) -> None:
        where = _line_in(Path(paper.source) if paper.source else None, field_name)
        problems.append((paper, RegistryError(paper.source, message, field=field_name, line=where)))

    for paper in papers:
        keys = [("id", paper.id)] + [("aliases", a) for a in paper.aliases]
        for field_name, key in keys:
            norm = key.lower()
            other = seen.get(norm)
            if other is not None and other is not paper:
                clash(paper, field_name, f"'{preview(key)}' is already used by {other.source}")
            seen.setdefault(norm, paper)
        if paper.arxiv:
            other = seen_arxiv.get(paper.arxiv)
            if other is not None:
                clash(paper, "arxiv", f"arXiv id {paper.arxiv} is already used by {other.source}")
            seen_arxiv.setdefault(paper.arxiv, paper)
    return problems


class Loaded(NamedTuple):
    """The merged registry of some layers: the papers served, every problem, files per layer."""

    papers: list[Paper]
    problems: list[RegistryError]
    files: list[int]
    rowids: list[int] | None = None  # the papers' rows in the index, where a snapshot knew them
    signature: bytes | None = None  # of the folders' files: equal ones serve equal papers


def load_layers(
    layers: Iterable[Path], known_recipes: Iterable[str] | None = None, *, light: bool = False
) -> Loaded:
    """Merge registry layers (a later layer's file wins by id) exactly as every command sees
    them, and collect every problem: `validate` prints them, the loader warns and serves the
    rest. A file with a problem is left out as if it were not there; a paper that clashes
    with another (id, alias, arXiv id) is left out too, and the merge is redone without it.

    A light load of unchanged folders comes whole from the index's snapshot of the last one
    (see `_Snapshot`): at 10,000 papers that skips most of the work of `list` and `search`."""
    layers = list(layers)
    snapshot = _Snapshot.of(layers) if light and known_recipes is None else None
    if snapshot is not None:
        hit = snapshot.load()
        if hit is not None:
            return hit
    with _collector_paused():
        scanned = [
            _scan(layer, light, snapshot.entries[i] if snapshot else None)
            for i, layer in enumerate(layers)
        ]
    problems = [p for _, found, _ in scanned for p in found]
    left_out: set[Path | None] = set()
    while True:
        by_id: dict[str, Paper] = {}
        for papers, _, _ in scanned:
            for paper in papers:
                if paper.source not in left_out:
                    by_id.pop(paper.id, None)  # an override sorts last, so it is the one blamed
                    by_id[paper.id] = paper
        merged = list(by_id.values())
        clashes = duplicate_problems(merged)
        if not clashes:
            break
        problems += [error for _, error in clashes]
        left_out |= {paper.source for paper, _ in clashes}
    if known_recipes is not None:
        known = set(known_recipes)
        for p in merged:  # a dotted name is the user's own module, found when it runs
            if p.reproduce and p.reproduce.recipe not in known and "." not in p.reproduce.recipe:
                where = _line_in(p.source, "reproduce")
                problems.append(
                    RegistryError(
                        p.source,
                        f"unknown recipe '{p.reproduce.recipe}'",
                        field="reproduce.recipe",
                        line=where,
                    )
                )
    loaded = Loaded(merged, problems, [n for _, _, n in scanned])
    if snapshot is not None and not problems:
        snapshot.store(loaded)  # with problems, broken files are read (and reported) every run
        return loaded._replace(signature=snapshot.signature)
    return loaded


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Build many records without the cyclic garbage collector, then freeze them out of its
    sight. Each ~700 new containers trigger a collection, and the older generations are
    traversed again and again as 10,000 papers' records (~150,000 objects) pile up: that cost
    more than building them. The records live as long as the command, and hold no cycles."""
    import gc

    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


class _Snapshot:
    """The result of a light `load_layers` over folders, stored whole in the index and served
    again while every folder holds the same files with the same (mtime, size): one read and
    one unmarshal instead of a row per file, the merge and the duplicate checks. It follows
    the index's rules for trust: a file changed within RACY_NS of the snapshot voids it."""

    def __init__(self, name: str, entries: list[list[os.DirEntry]]):
        self.name = name
        self.entries = entries
        self.signature = b""
        self.newest_ns = 0

    @classmethod
    def of(cls, layers: list[Path]) -> _Snapshot | None:
        if any(layer.is_file() for layer in layers):
            return None  # `validate FILE` reads the file itself
        import hashlib
        import marshal

        entries = [registry_entries(layer) for layer in layers]
        snap = cls("light:" + "\n".join(str(layer) for layer in layers), entries)
        # the names, mtimes and sizes of every file, a list of each (a tuple per file cost a
        # third more at 10,000); DirEntry keeps its stat for the scan that may follow
        digest = hashlib.blake2b(snap.name.encode("utf-8", "surrogateescape"), digest_size=16)
        for found in entries:
            stats = [e.stat() for e in found]
            mtimes = [st.st_mtime_ns for st in stats]
            sizes = [st.st_size for st in stats]
            digest.update(marshal.dumps(([e.name for e in found], mtimes, sizes)))
            snap.newest_ns = max(snap.newest_ns, max(mtimes, default=0))
        snap.signature = digest.digest()
        return snap

    def load(self) -> Loaded | None:
        import marshal

        idx = open_index()
        blob = idx.snapshot(self.name, self.signature) if idx else None
        if blob is None:
            return None
        with _collector_paused():  # and frozen: what this command keeps is never traversed
            files, rowids = marshal.loads(blob)
        stored = StoredRecords(self, rowids)
        return Loaded(stored, [], files, rowids, self.signature)  # type: ignore[arg-type]

    def part(self, suffix: str) -> object | None:
        """A second part stored with this snapshot (None if another process replaced it)."""
        import marshal

        idx = open_index()
        blob = idx.snapshot(self.name + suffix, self.signature) if idx else None
        if blob is None:
            return None
        with _collector_paused():
            return marshal.loads(blob)

    def store(self, loaded: Loaded) -> None:
        import marshal

        idx = open_index()
        if idx is None:
            return
        papers = loaded.papers
        rows = idx.rowids([str(p.source) for p in papers])
        if rows is None:
            return  # a file without a row (no index home when it was read): nothing to serve
        parts = {
            self.name: marshal.dumps((loaded.files, rows)),
            self.name + ":records": marshal.dumps([tuple(p) for p in papers]),
            self.name + ":names": marshal.dumps(_names_years_ids(papers)),
        }
        idx.store_snapshot(parts, self.signature, self.newest_ns)


class StoredRecords(Sequence):
    """A snapshot's Listed records, built when first asked for, in parts that each command
    reads only if it needs them: every paper's names, year and id (`show` looks one up, `search`
    ranks by row); single records from the index's rows (`show` and `search` build only those
    they print, a handful of 10,000); all of them at once (`list`)."""

    def __init__(self, snapshot: _Snapshot, rowids: list[int]):
        self.snapshot = snapshot
        self.rowids = rowids
        self._built: dict[int, Listed] = {}  # one object per record, so `is` holds
        self._all: list[Listed] | None = None

    @functools.cached_property
    def _names_years_ids(self) -> tuple[dict[str, int], list[int], list[str]]:
        found = self.snapshot.part(":names")
        return found if found is not None else _names_years_ids(self.all())  # type: ignore[return-value]

    @property
    def names(self) -> dict[str, int]:
        """As Registry._index: each name a paper answers to -> the paper's position."""
        return self._names_years_ids[0]

    @property
    def years(self) -> list[int]:
        return self._names_years_ids[1]

    @property
    def ids(self) -> list[str]:
        return self._names_years_ids[2]

    def __len__(self) -> int:
        return len(self.rowids)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice) or self._all is not None:
            return self.all()[i]
        if i not in self._built:
            import marshal

            idx = open_index()
            blob = idx.light_records([self.rowids[i]]).get(self.rowids[i]) if idx else None
            if blob is None:  # the index went away under us
                return self.all()[i]
            self._built[i] = tuple.__new__(Listed, marshal.loads(blob))
        return self._built[i]

    def __iter__(self) -> Iterator[Listed]:
        return iter(self.all())

    def all(self) -> list[Listed]:
        if self._all is not None:
            return self._all
        import marshal

        records = self.snapshot.part(":records")
        make, built = tuple.__new__, self._built  # as scan_directory does
        with _collector_paused():
            if records is None:  # replaced by another process's newer snapshot: the rows hold them
                idx = open_index()
                rows = idx.light_records(self.rowids) if idx else {}
                if len(rows) != len(self.rowids):
                    raise PapercliError(
                        "the index changed while it was read: run the command again"
                    )
                records = [marshal.loads(rows[r]) for r in self.rowids]
            self._all = [built.get(i) or make(Listed, r) for i, r in enumerate(records)]
        return self._all


def _names_years_ids(papers: list) -> tuple[dict[str, int], list[int], list[str]]:
    return _names(papers), [p.year for p in papers], [p.id for p in papers]


def _names(papers: Iterable[Paper | Listed]) -> dict[str, int]:
    """Every name a paper answers to (id, aliases, squashed forms, arXiv id) -> its position;
    the first paper with a name keeps it."""
    names: dict[str, int] = {}
    for i, paper in enumerate(papers):
        for key in (paper.id, *paper.aliases):
            names.setdefault(key.lower(), i)
            names.setdefault(_squash(key), i)
        if paper.arxiv:
            names.setdefault(paper.arxiv.lower(), i)
    return names


def validate_directory(
    directory: Path, known_recipes: Iterable[str] | None = None
) -> tuple[int, list[RegistryError]]:
    """Check every file of one registry directory on its own; return (files checked, problems)."""
    loaded = load_layers([directory], known_recipes)
    return loaded.files[0], loaded.problems


_NOT_ALNUM = _Lazy(r"[^a-z0-9]")


def _squash(text: str) -> str:
    """'Flash-Attention 2' and 'flashattention2' meet here."""
    return _NOT_ALNUM.sub("", text.lower())


def normalize_arxiv(text: str) -> tuple[str, str | None] | None:
    """'arXiv:2010.11929v2' or an abs/pdf URL -> ('2010.11929', 'v2'); None if it is no arXiv id."""
    t = text.strip()
    t = re.sub(r"^(?:https?://)?(?:www\.|export\.)?arxiv\.org/(?:abs|pdf)/", "", t, flags=re.I)
    t = re.sub(r"^arxiv:", "", t, flags=re.I)
    t = re.sub(r"\.pdf$", "", t, flags=re.I).strip("/")
    return arxiv_id(t)


def full_paper(paper: Paper | Listed) -> Paper:
    """The whole Paper behind a listing record: its stored dict in the index (current, since the
    load that made the record synced its file), else its file parsed again. `show` and `summary`
    load the light registry and this one paper instead of building every Paper."""
    if isinstance(paper, Paper):
        return paper
    import marshal

    idx = open_index()
    blob = idx.paper_data(paper.source) if idx is not None else None
    if blob:
        return Paper.from_trusted_dict(marshal.loads(blob))
    return load_file(Path(paper.source))


class Registry:
    """The bundled registry with the user's own layered over it (a user file wins by id)."""

    def __init__(
        self,
        papers: list[Paper],
        problems: Iterable[RegistryError] = (),
        rowids: list[int] | None = None,
        signature: bytes | None = None,
    ):
        # a snapshot's records are built when first asked for (see StoredRecords)
        self.stored = papers if isinstance(papers, StoredRecords) else None
        self._papers = papers
        self.problems = list(problems)  # of files left out; read commands warn about them
        self.rowids = rowids  # see Loaded: search reads documents by these
        self.signature = signature

    @property
    def papers(self) -> list[Paper]:
        if isinstance(self._papers, StoredRecords):
            self._papers = self._papers.all()  # type: ignore[assignment]
        return self._papers  # type: ignore[return-value]

    @functools.cached_property
    def _index(self) -> dict[str, Paper]:
        """Every name a paper answers to (id, aliases, squashed forms, arXiv id). Built on the
        first lookup: `list` never needs it, and at 10,000 papers it costs more than the rest."""
        papers = self.papers
        return {name: papers[i] for name, i in _names(papers).items()}

    @classmethod
    def load(cls, directories: Iterable[Path] | None = None, *, light: bool = False) -> Registry:
        """The merged registry. Broken files do not lock anyone out: they are left out and
        listed in `problems` (see `broken_files`). With `light`, the papers are Listed
        records: enough to list, filter and look up, ~10x cheaper to load."""
        if directories is None:
            directories = (paths.bundled_registry(), paths.user_registry())
        loaded = load_layers(directories, light=light)
        return cls(loaded.papers, loaded.problems, loaded.rowids, loaded.signature)

    def broken_files(self) -> dict[str, list[RegistryError]]:
        """Problems grouped by file, in the order found."""
        out: dict[str, list[RegistryError]] = {}
        for problem in self.problems:
            out.setdefault(problem.path, []).append(problem)
        return out

    def _lookup(self, *keys: str) -> Paper | None:
        """The paper that `_index` holds for the first of `keys` it has. Without the index
        built, one pass over the papers finds it: a command that looks up one name (show,
        summary, search's named paper) does not pay for indexing every name of a 10,000-paper
        library, and each name is lowered once for all the keys."""
        keys = tuple(dict.fromkeys(k for k in keys if k))
        if not keys:
            return None
        if self.stored is not None:  # the snapshot stored every name
            i = self._stored_position(keys)
            return None if i is None else self.stored[i]
        if "_index" in self.__dict__ or len(self.papers) < 200:
            return next((self._index[k] for k in keys if k in self._index), None)
        # a squashed name holds letters and digits only; its first letter must be in the name
        squashable = [(k, k[0]) for k in keys if k.isalnum()]
        found: dict[str, Paper] = {}
        for paper in self.papers:  # the first paper with a key wins, as in _index
            for name in (paper.id, *paper.aliases):
                low = name.lower()
                if low in keys:
                    found.setdefault(low, paper)
                for key, first in squashable:
                    if first in low and key not in found and _squash(low) == key:
                        found[key] = paper
            if paper.arxiv and paper.arxiv.lower() in keys:
                found.setdefault(paper.arxiv.lower(), paper)
            if keys[0] in found:
                return found[keys[0]]
        return next((found[k] for k in keys if k in found), None)

    def _stored_position(self, keys: Iterable[str]) -> int | None:
        names = self.stored.names  # type: ignore[union-attr]
        return next((names[k] for k in keys if k in names), None)

    def position(self, name: str) -> int | None:
        """Where the paper `find(name)` gives sits among a snapshot's records (see `stored`);
        None when there is no such paper or no snapshot."""
        if self.stored is None:
            return None
        return self._stored_position((name.strip().lower(), _squash(name)))

    def find(self, name: str) -> Paper | None:
        """The paper whose id or alias is `name` (case, spaces and dashes aside), if any."""
        return self._lookup(name.strip().lower(), _squash(name))

    def get(self, query: str) -> Paper:
        q = query.strip()
        arxiv = normalize_arxiv(q)
        candidates = [q.lower(), _squash(q)] + ([arxiv[0].lower()] if arxiv else [])
        found = self._lookup(*candidates)
        if found is not None:
            return found
        for problem in self.problems:  # the paper asked for is in a file that was left out
            if Path(problem.path).stem == q.lower():
                raise problem
        names = sorted(
            {p.id for p in self.papers} | {a.lower() for p in self.papers for a in p.aliases}
        )
        near = difflib.get_close_matches(q.lower(), names, n=3, cutoff=0.6)
        # report ids, not aliases, so the suggestion can be typed back as is
        suggestions = list(
            dict.fromkeys(self._index[n].id if n in self._index else n for n in near)
        )
        raise UnknownPaperError(query, suggestions)

    def filter(
        self,
        *,
        field: str | None = None,
        tag: str | None = None,
        year: int | None = None,
        since: int | None = None,
    ) -> list[Paper]:
        out = self.papers
        if field:
            out = [p for p in out if p.field == field]
        if tag:
            t = tag.lower()
            out = [p for p in out if t in p.tags]
        if year is not None:
            out = [p for p in out if p.year == year]
        if since is not None:
            out = [p for p in out if p.year >= since]
        return out


def sort_papers(papers: list[Paper], key: str) -> list[Paper]:
    if key == "year":  # attrgetter: no Python frame per paper (10,000 of them at scale)
        return sorted(papers, key=operator.attrgetter("year", "date", "id"))
    if key == "title":
        return sorted(papers, key=lambda p: p.title.lower())
    return sorted(papers, key=operator.attrgetter("id"))
