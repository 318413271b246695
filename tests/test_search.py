"""The SQLite index and `search`: real registry files, a real index file, the real CLI, and PDFs
served by the local arXiv server. Each search test runs on FTS5 and on the plain fallback."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time

import pytest
from arxiv_server import FakeArxiv, make_text_pdf
from conftest import REPO, write_paper

from papercli.cli import app
from papercli.index import index_path
from papercli.registry import Registry, drop_index, load_directory


@pytest.fixture(params=["fts5", "plain"], autouse=True)
def engine(request, monkeypatch):
    drop_index()  # one connection per process: start each test on its own index file
    monkeypatch.setenv("PAPERCLI_INDEX_FTS", "1" if request.param == "fts5" else "0")
    yield request.param
    drop_index()


def ids(runner, *query: str) -> list[str]:
    result = runner.invoke(app, ["search", "--json", *query])
    assert result.exit_code == 0, result.output
    return [hit["id"] for hit in json.loads(result.stdout)]


def test_search_kaiming_finds_resnet_in_a_real_process(engine, papercli_home):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "papercli", "search", "Kaiming", "--json"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    hits = {h["id"]: h for h in json.loads(proc.stdout)}
    assert "resnet" in hits and "mask-rcnn" in hits
    assert hits["resnet"]["highlights"] == ["Kaiming"]
    assert "Kaiming He" in hits["resnet"]["snippet"]
    with sqlite3.connect(index_path()) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = conn.execute("SELECT sql FROM sqlite_master WHERE name='docs'").fetchone()[0]
    assert ("fts5" in tables.lower()) == (engine == "fts5")


def test_filters_phrases_and_negation(runner):
    by_he = ids(runner, "author:he")
    assert {"resnet", "mask-rcnn", "mae"} <= set(by_he)
    assert ids(runner, "--", "author:he", "-tag:detection") == [
        i for i in by_he if i not in ids(runner, "tag:detection")
    ]
    assert ids(runner, "author:kaiming he", "title:residual") == ["resnet"]
    assert set(ids(runner, "year:2017..2018", "attention")) >= {"transformer"}
    assert all(
        2017 <= h["year"] <= 2018
        for h in json.loads(runner.invoke(app, ["search", "year:2017..2018", "--json"]).stdout)
    )
    assert ids(runner, "arxiv:1512.03385") == ["resnet"]
    assert "resnet" not in ids(runner, "field:language")
    assert ids(runner, '"segment anything"')[0] == "sam"
    assert "sam" not in ids(runner, "--", "segment", "-anything")
    assert ids(runner, "flash", "attention")[:2] == ["flash-attention", "flash-attention-2"]


def test_fallback_and_fts5_rank_alike(runner, monkeypatch):
    queries = [("diffusion",), ("kaiming",), ("residual", "learning"), ("trans*",)]
    first = {q: ids(runner, *q) for q in queries}
    drop_index()
    other = "0" if os.environ["PAPERCLI_INDEX_FTS"] == "1" else "1"
    monkeypatch.setenv("PAPERCLI_INDEX_FTS", other)
    for q in queries:  # same hits, best first; bm25 ties may break differently
        again = ids(runner, *q)
        assert set(again) == set(first[q]) and again[0] == first[q][0], q


def test_bad_queries_are_one_line_errors(runner):
    for query in (["year:abc"], ["tag:"], ["..."]):
        result = runner.invoke(app, ["search", *query])
        assert result.exit_code == 2 and result.stderr.startswith("papercli: error: ")
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.output
    none = runner.invoke(app, ["search", "zzzqqq"])
    assert none.exit_code == 1 and "no paper matches" in none.stderr


def test_fetched_pdf_text_and_abstract_are_searchable(runner, monkeypatch):
    with FakeArxiv() as fake:
        monkeypatch.setenv("PAPERCLI_ARXIV_API_URL", f"{fake.base}/api/query")
        monkeypatch.setenv("PAPERCLI_ARXIV_PDF_URL", f"{fake.base}/pdf")
        fake.default_pdf = make_text_pdf(["Appendix: the quokkasort ablation", "more text"])
        assert runner.invoke(app, ["search", "quokkasort"]).exit_code == 1
        result = runner.invoke(app, ["fetch", "vit"])
        assert result.exit_code == 0, result.output
    hits = json.loads(runner.invoke(app, ["search", "quokkasort", "--json"]).stdout)
    assert [h["id"] for h in hits] == ["vit"] and hits[0]["highlights"] == ["quokkasort"]
    # the cached arXiv abstract of the local server is indexed too
    assert "vit" in ids(runner, '"wraps over lines"')
    plain = runner.invoke(app, ["search", "quokkasort"])
    assert "*quokkasort*" in plain.stdout and "vit" in plain.stdout


def test_index_follows_edits_touches_and_same_size_rewrites(user_registry, runner):
    path = write_paper(user_registry, "indexed")
    assert load_directory(user_registry)[0].title.startswith("A Test Paper")

    def rowid() -> int:
        with sqlite3.connect(index_path()) as conn:
            return conn.execute("SELECT rowid FROM files WHERE path=?", (str(path),)).fetchone()[0]

    before = rowid()
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))  # touch: same content
    load_directory(user_registry)
    assert rowid() == before  # the hash matched: not parsed and stored again
    # a same-size edit that keeps the mtime: only the content hash can tell
    st = path.stat()
    path.write_text(path.read_text().replace("A Test Paper", "A Zorb Paper"))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size
    assert load_directory(user_registry)[0].title.startswith("A Zorb Paper")
    assert ids(runner, "zorb") == ["indexed"]
    # deleting the index loses nothing: it is rebuilt from the YAML files
    drop_index()
    assert not index_path().exists()
    assert ids(runner, "zorb") == ["indexed"]
    path.unlink()
    assert ids(runner, "zorb") == []


def test_light_listing_agrees_with_full_papers(user_registry):
    write_paper(user_registry, "listed-paper")
    (user_registry / "broken.yaml").write_text("id: [broken\n")
    for _ in range(2):  # first from the YAML files, then from the index
        light, full = Registry.load(light=True), Registry.load()
        fields = ("id", "title", "authors", "year", "date", "field", "tags", "aliases", "arxiv")
        assert [[getattr(p, f) for f in fields] for p in light.papers] == [
            [getattr(p, f) for f in fields] for p in full.papers
        ]
        assert [str(p.source) for p in light.papers] == [str(p.source) for p in full.papers]
        assert (
            list(light.broken_files())
            == list(full.broken_files())
            == [str(user_registry / "broken.yaml")]
        )


def test_a_snapshot_serves_unchanged_folders_and_never_a_changed_one(user_registry):
    from papercli.registry import _Snapshot

    layers = [user_registry]

    def age(*files) -> None:  # older than the index's racy window
        old = time.time_ns() - 10_000_000_000
        for f in files:
            os.utime(f, ns=(old, old))

    def listed() -> list[tuple[str, str]]:
        return [(p.id, p.title) for p in Registry.load(layers, light=True).papers]

    a = write_paper(user_registry, "snap-a", alias="SA", arxiv="2101.00011")
    b = write_paper(user_registry, "snap-b", alias="SB", arxiv="2101.00012")
    age(a, b)
    first = listed()
    served = _Snapshot.of(layers).load()  # stored by that load: served while nothing changes
    assert served is not None and served.files == [2] and served.problems == []
    assert [(p.id, p.title) for p in served.papers] == first
    full = Registry.load(layers).papers  # what the YAML files say, parsed in full
    assert [(p.id, p.title, p.authors, p.tags, str(p.source)) for p in served.papers] == [
        (p.id, p.title, p.authors, p.tags, str(p.source)) for p in full
    ]

    # an edit (a new mtime, within the racy window) is read from the file, and not snapshotted
    a.write_text(a.read_text().replace("A Test Paper", "A Zorb Paper"))
    assert listed()[0] == ("snap-a", "A Zorb Paper & Its {Braces}")
    assert _Snapshot.of(layers).load() is None
    age(a)
    listed()
    assert _Snapshot.of(layers).load().papers[0].title == "A Zorb Paper & Its {Braces}"

    # a broken file is reported on every load, so a folder holding one is never snapshotted
    broken = user_registry / "broken.yaml"
    broken.write_text("id: [broken\n")
    age(broken)
    for _ in range(2):
        reg = Registry.load(layers, light=True)
        assert list(reg.broken_files()) == [str(broken)]
        assert _Snapshot.of(layers).load() is None
    broken.unlink()
    b.unlink()
    assert [i for i, _ in listed()] == ["snap-a"]


def test_a_snapshot_search_ranks_as_a_full_load_and_builds_only_what_it_shows(user_registry):
    """Served from a snapshot, a query of words ranks by row with each paper's year and id from
    the snapshot, and builds only the records it returns; the hits, scores and snippets are
    those of the same search over fully built records. A named paper still leads."""
    from papercli.registry import open_index
    from papercli.search import search

    old = time.time_ns() - 10_000_000_000  # older than the index's racy window
    for i in range(12):  # equal documents but for their names: ties go to the newer, then id
        f = write_paper(user_registry, f"snap-{i:02d}", alias=f"SN{i}", arxiv=f"2101.{100 + i:05d}")
        year = 2015 + i % 4
        f.write_text(f.read_text().replace("2021", str(year)).replace("2101.", f"{year % 100}01."))
        os.utime(f, ns=(old, old))
    Registry.load(light=True)  # reads the files and stores the snapshot
    queries = ["attention", "testing", "test paper", "sn3", "paper -attention", "residual learning"]
    for query in queries:
        search(Registry.load(light=True), query, limit=5)  # the first search syncs documents
        served = Registry.load(light=True)
        assert served.stored is not None
        fast = search(served, query, limit=5)
        assert served.stored._all is None and len(served.stored._built) == len(fast)
        full = Registry.load(light=True)
        built = Registry(list(full.papers), full.problems, full.rowids, full.signature)
        slow = search(built, query, limit=5)
        assert fast, query
        assert [(h.paper, h.score, h.snippet) for h in fast] == [
            (h.paper, h.score, h.snippet) for h in slow
        ]
    assert search(Registry.load(light=True), "sn3", limit=5)[0].paper.id == "snap-03"
    assert Registry.load(light=True).get("SN7").id == "snap-07"  # names from the snapshot

    # parts gone (another process replaced the snapshot): the rows still serve them
    expected = Registry.load(light=True).papers
    open_index().conn.execute("DELETE FROM snapshots WHERE name LIKE '%:names'")
    assert Registry.load(light=True).get("SN7").id == "snap-07"
    open_index().conn.execute("DELETE FROM snapshots WHERE name LIKE '%:records'")
    served = Registry.load(light=True)
    assert served.stored is not None and served.papers == expected
    assert served.get("SN7") is served.papers[[p.id for p in expected].index("snap-07")]


def test_without_a_usable_index_everything_still_works(papercli_home, runner):
    papercli_home.mkdir(parents=True, exist_ok=True)
    (papercli_home / "cache").write_text("a file where the cache folder should be")
    listed = runner.invoke(app, ["list", "--json"])
    assert listed.exit_code == 0 and len(json.loads(listed.stdout)) > 50
    assert "resnet" in ids(runner, "kaiming")
    assert ids(runner, "author:he", "title:residual") == ["resnet"]


def list_ids() -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "papercli", "list", "--json"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return [p["id"] for p in json.loads(proc.stdout)]


def test_a_crash_mid_update_and_a_busy_writer_lose_nothing(user_registry):
    path = write_paper(user_registry, "survivor")
    served = list_ids()
    assert "survivor" in served
    with sqlite3.connect(index_path()) as conn:
        rows = conn.execute("SELECT rowid, path FROM files ORDER BY rowid").fetchall()
    # a process dies in the middle of a transaction that emptied the index
    crash = (
        "import os, sqlite3, sys; c = sqlite3.connect(sys.argv[1], isolation_level=None);"
        "c.execute('BEGIN IMMEDIATE'); c.execute('DELETE FROM files'); os._exit(1)"
    )
    assert subprocess.run([sys.executable, "-c", crash, str(index_path())]).returncode == 1
    with sqlite3.connect(index_path()) as conn:
        assert conn.execute("SELECT rowid, path FROM files ORDER BY rowid").fetchall() == rows
    # another process holds the write lock: readers still get every paper, edits included
    writer = sqlite3.connect(index_path(), isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    try:
        assert list_ids() == served
        path.write_text(path.read_text().replace("id: survivor", "id: survivor\n# edited"))
        assert list_ids() == served  # could not store the edit: served from the file instead
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert index_path().is_file() and list_ids() == served
