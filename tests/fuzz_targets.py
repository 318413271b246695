"""Fuzz targets for test_fuzz.py, which runs this file in a child interpreter: a crash of the
interpreter itself (SIGSEGV in a C parser, an abort) then fails a test instead of killing pytest.

    python tests/fuzz_targets.py atom|registry [examples]

Each target feeds hostile input to one parser and lets only papercli's own errors through; any
other exception makes Hypothesis print the falsifying input and this script exit non-zero. On
success it prints one JSON line counting how the inputs ended (parsed / refused)."""

from __future__ import annotations

import json
import sys
import tempfile
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))
from arxiv_server import FIXTURES, atom_feed, fixture_body
from conftest import VALID_PAPER

from papercli.arxiv import parse_feed
from papercli.errors import PapercliError
from papercli.registry import Registry, load_file

outcomes: Counter[str] = Counter()


def _splice(seed: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    """Overwrite, cut or insert bytes of a well-formed document at a few places."""
    out = seed
    for at, cut, insert in edits:
        at %= len(out) + 1
        out = out[:at] + insert + out[at + cut :]
    return out


# ----------------------------------------------------------------------------- Atom
SEEDS = [
    fixture_body(p.name)[1] for p in sorted(FIXTURES.iterdir()) if p.suffix in (".json", ".xml")
]
SEEDS.append(atom_feed(["2101.00001", "hep-ex/0406020v1"]))
edits = st.lists(
    st.tuples(st.integers(0, 1 << 16), st.integers(0, 64), st.binary(max_size=24)), max_size=6
)
xml_bits = st.sampled_from(
    [b"<feed xmlns='http://www.w3.org/2005/Atom'>", b"</feed>", b"<entry>", b"</entry>",
     b"<id>", b"</id>", b"http://arxiv.org/abs/", b"/api/errors#x", b"<title>", b"</title>",
     b"<author><name>", b"</name></author>", b"<!DOCTYPE x [<!ENTITY a 'aaaa'>]>", b"&a;",
     b"<![CDATA[", b"]]>", b"<?xml version='1.0'?>", b"\x00", b"\xff\xfe", b"&#0;", b"<html>"]
)  # fmt: skip
bodies = st.one_of(
    st.binary(max_size=4096),
    st.builds(_splice, st.sampled_from(SEEDS), edits),
    st.lists(xml_bits, max_size=40).map(b"".join),
)


def atom(examples: int) -> None:
    @settings(max_examples=examples, deadline=None, database=None)
    @given(body=bodies, status=st.one_of(st.just(200), st.sampled_from([400, 404, 503])))
    @example(body=b"<a>" * 50_000 + b"</a>" * 50_000, status=200)  # deep XML
    @example(body=b"<!DOCTYPE html><html>Rate exceeded</html>", status=200)
    def run(body: bytes, status: int) -> None:
        try:
            parse_feed(body, status)
        except PapercliError as exc:
            assert "\n" not in str(exc), str(exc)
            outcomes[type(exc).__name__] += 1
        else:
            outcomes["parsed"] += 1

    run()


# ----------------------------------------------------------------------------- registry
nest = st.sampled_from(
    ["[", "{", "- ", "? ", "a: ", "{a: ", "[a, ", "&x ", "*x ", "!!seq ", "!!map "]
)
yaml_bits = st.sampled_from(
    ["[", "]", "{", "}", "- ", "? ", ": ", ", ", "\n", "  ", "\t", "a", "1", "'", '"', "#", "&x ",
     "*x", "!!str ", "!!binary ", "|\n", ">-\n", "---\n", "...\n", "%YAML 1.1\n", "<<: *x\n",
     "2020-13-45", "1e999", ".nan", "0x", "~", "\\u0000", "\x85", "\ufeff"]
)  # fmt: skip
VALID = VALID_PAPER.format(id="fuzz", alias="F1", arxiv="2101.00001")
texts = st.one_of(
    # deep: up to 100,000 openers of one kind, then anything (what crashed libyaml's composer)
    st.builds(lambda n, o, tail: o * n + tail, st.integers(0, 100_000), nest, st.text(max_size=40)),
    # deep by indentation
    st.builds(lambda n: "".join(" " * i + "a:\n" for i in range(n)), st.integers(0, 600)),
    st.lists(yaml_bits, max_size=200).map("".join),
    st.builds(
        lambda e: _splice(VALID.encode(), e).decode("utf-8", "replace"), edits
    ),  # a valid paper, damaged
    st.text(max_size=300),
)


def registry(examples: int) -> None:
    folder = Path(tempfile.mkdtemp()) / "papers"
    folder.mkdir()
    path = folder / "fuzz.yaml"

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
    @given(text=texts)
    @example(text="[" * 100_000)  # the file that crashed every command with SIGSEGV
    @example(text="- " * 50_000 + "x")
    @example(text="{a: " * 50_000)
    @example(text="".join(" " * i + "a:\n" for i in range(2_000)))
    def run(text: str) -> None:
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            load_file(path)
        except PapercliError as exc:
            assert "\n" not in str(exc) and len(str(exc)) < 1000, str(exc)[:2000]
            outcomes[type(exc).__name__] += 1
        else:
            outcomes["parsed"] += 1
        reg = Registry.load([folder])  # the loader serves or skips it, never raises
        assert len(reg.papers) + len(reg.broken_files()) == 1

    run()


if __name__ == "__main__":
    target = {"atom": atom, "registry": registry}[sys.argv[1]]
    target(int(sys.argv[2]) if len(sys.argv) > 2 else 300)
    print(json.dumps(dict(outcomes)))
