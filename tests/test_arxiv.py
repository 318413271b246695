"""The arXiv client and the fetch/add/path/open commands against a real local HTTP server."""

from __future__ import annotations

import json
import os
import re
import stat
import time
from pathlib import Path

import pytest
import yaml
from arxiv_server import FakeArxiv, Fault, atom_feed, make_pdf

from papercli import cache
from papercli.arxiv import ArxivError, ArxivRejected, Client, Settings
from papercli.cli import app
from papercli.registry import Registry, load_file


@pytest.fixture
def server(monkeypatch):
    with FakeArxiv() as fake:
        monkeypatch.setenv("PAPERCLI_ARXIV_API_URL", f"{fake.base}/api/query")
        monkeypatch.setenv("PAPERCLI_ARXIV_PDF_URL", f"{fake.base}/pdf")
        monkeypatch.setenv("PAPERCLI_ARXIV_BACKOFF", "0.01")
        monkeypatch.setenv("PAPERCLI_ARXIV_TIMEOUT", "2")
        yield fake


def client() -> Client:
    return Client(Settings.from_env())


# ----------------------------------------------------------------------------- metadata
def test_recorded_old_format_response(server):
    found, missing = client().fetch(["1111.2011v2"])
    assert missing == []
    e = found["1111.2011v2"]
    assert e.arxiv_id == "1111.2011" and e.version == "v2"
    assert (
        e.title
        == "Quantum Criticality for Extended Nodes on a Bethe Lattice in the Large Connectivity Limit"
    )
    assert "\n" not in e.abstract and "  " not in e.abstract
    assert e.doi == "10.1103/PhysRevB.85.115117"
    assert e.journal_ref == "Phys. Rev. B 85, 115117 (2012)"
    assert e.categories == ["cond-mat.str-el", "cond-mat.stat-mech"]
    assert e.primary_category == "cond-mat.str-el"
    assert e.published.startswith("2011-11-08") and e.updated.startswith("2012-04-02")


def test_old_style_id_with_affiliation(server):
    found, _ = client().fetch(["hep-ex/0406020v1"])
    e = found["hep-ex/0406020v1"]
    assert e.arxiv_id == "hep-ex/0406020" and e.version == "v1"
    assert e.authors[0].name == "Alessia Tricomi"
    assert e.authors[0].affiliations == ["for the ATLAS and CMS Collaborations"]
    assert e.comment.startswith("Presented at XXXIX Rencontres de Moriond")


def test_missing_id_in_a_batch_is_not_found_while_others_succeed(server):
    found, missing = client().fetch(["0808.05394", "1707.08567"])
    assert missing == ["0808.05394"]
    e = found["1707.08567"]
    assert len(e.authors) == 34
    assert e.authors[0].name == "Kees A. Schouhamer Immink"
    assert e.authors[-1].name == "Hirosuke Yamamoto"
    assert "Dirk WÃ¼bben" in [a.name for a in e.authors]  # served mis-encoded; kept as served


def test_atom_error_entry_becomes_a_clear_rejection(server):
    with pytest.raises(ArxivRejected) as exc:
        client().fetch(["abc"])
    assert str(exc.value) == "arXiv rejected id 'abc': incorrect id format"
    assert exc.value.exit_code == 2


def test_batches_of_100(server):
    ids = [f"2101.{i:05d}" for i in range(230)]
    c = client()
    found, missing = c.fetch(ids)
    assert len(found) == 230 and missing == []
    assert c.api_calls == 3
    sizes = [len(r["query"]["id_list"][0].split(",")) for r in server.api_calls()]
    assert sizes == [100, 100, 30]
    assert all(r["headers"]["User-Agent"].startswith("papercli/") for r in server.requests)


def test_delay_between_calls_is_respected(server, monkeypatch):
    monkeypatch.setenv("PAPERCLI_ARXIV_DELAY", "0.3")
    c = client()
    start = time.monotonic()
    c.fetch(["2101.00001"])
    c.fetch(["2101.00002"])
    c.fetch(["2101.00003"])
    assert time.monotonic() - start >= 0.6


def test_retries_503_then_succeeds(server):
    server.faults["api"] = [Fault(status=503), Fault(status=502)]
    found, _ = client().fetch(["2101.00001"])
    assert "2101.00001" in found
    assert len(server.api_calls()) == 3


def test_429_retry_after_is_honoured(server):
    server.faults["api"] = [Fault(status=429, headers={"Retry-After": "1"})]
    start = time.monotonic()
    found, _ = client().fetch(["2101.00001"])
    assert "2101.00001" in found
    assert time.monotonic() - start >= 1.0


def test_gives_up_after_retries(server, monkeypatch):
    monkeypatch.setenv("PAPERCLI_ARXIV_RETRIES", "2")
    server.faults["api"] = [Fault(status=500)] * 5
    with pytest.raises(ArxivError, match="failed after 3 attempts: HTTP 500"):
        client().fetch(["2101.00001"])
    assert len(server.api_calls()) == 3


def test_slow_server_hits_the_timeout(server, monkeypatch):
    monkeypatch.setenv("PAPERCLI_ARXIV_TIMEOUT", "0.3")
    monkeypatch.setenv("PAPERCLI_ARXIV_RETRIES", "1")
    server.faults["api"] = [Fault(delay=1.0, passthrough=True)] * 2
    with pytest.raises(ArxivError, match=r"timed out after 0\.3 s"):
        client().fetch(["2101.00001"])


# ----------------------------------------------------------------------------- PDFs
def test_download_then_second_call_does_nothing(server, tmp_path):
    dest = tmp_path / "p.pdf"
    c = client()
    seen = []
    assert (
        c.download(f"{server.base}/pdf/2101.00001", dest, progress=lambda d, t: seen.append((d, t)))
        == "downloaded"
    )
    assert dest.read_bytes() == server.default_pdf
    assert seen[-1] == (len(server.default_pdf), len(server.default_pdf))
    assert c.download(f"{server.base}/pdf/2101.00001", dest) == "cached"
    assert len(server.pdf_calls()) == 1
    assert not (tmp_path / "p.pdf.part").exists()


def test_dropped_connection_resumes_with_range(server, tmp_path):
    dest = tmp_path / "p.pdf"
    server.faults["pdf"] = [Fault(drop_after=100_000, passthrough=True)]
    assert client().download(f"{server.base}/pdf/2101.00001", dest) == "downloaded"
    assert dest.read_bytes() == server.default_pdf
    calls = server.pdf_calls()
    assert len(calls) == 2
    # resumes from what was written (a chunk cut mid-read is re-fetched, never half-kept)
    offset = int(calls[1]["headers"]["Range"].removeprefix("bytes=").rstrip("-"))
    assert 0 < offset <= 100_000


def test_interrupted_download_leaves_only_a_part_file_then_resumes(server, tmp_path, monkeypatch):
    monkeypatch.setenv("PAPERCLI_ARXIV_RETRIES", "0")
    dest = tmp_path / "p.pdf"
    server.faults["pdf"] = [Fault(drop_after=150_000, passthrough=True)]
    with pytest.raises(ArxivError):
        client().download(f"{server.base}/pdf/2101.00001", dest)
    assert not dest.exists()
    kept = (tmp_path / "p.pdf.part").read_bytes()
    assert 0 < len(kept) <= 150_000 and server.default_pdf.startswith(kept)
    assert client().download(f"{server.base}/pdf/2101.00001", dest) == "downloaded"
    assert dest.read_bytes() == server.default_pdf
    assert server.pdf_calls()[-1]["headers"]["Range"] == f"bytes={len(kept)}-"


def test_html_instead_of_pdf_is_rejected_and_nothing_kept(server, tmp_path):
    server.html_instead.add("2101.00001")
    dest = tmp_path / "p.pdf"
    with pytest.raises(
        ArxivError, match=r"did not return a PDF \(got text/html\); nothing was saved"
    ):
        client().download(f"{server.base}/pdf/2101.00001", dest)
    assert not dest.exists() and not (tmp_path / "p.pdf.part").exists()


def test_http_error_for_pdf(server, tmp_path):
    server.faults["pdf"] = [Fault(status=404, body=b"not found")]
    with pytest.raises(ArxivError, match="HTTP 404"):
        client().download(f"{server.base}/pdf/2101.00001", tmp_path / "p.pdf")
    assert not (tmp_path / "p.pdf").exists()


# ----------------------------------------------------------------------------- commands
def test_fetch_all_uses_one_api_call_per_100_ids(server, runner, papercli_home):
    server.missing.add("2304.03442")  # arXiv answers without this one
    result = runner.invoke(app, ["fetch", "--all", "--no-pdf"])
    assert result.exit_code == 1, result.output  # one paper was not found
    n_arxiv = sum(1 for p in Registry.load().papers if p.arxiv)
    assert len(server.api_calls()) == (n_arxiv + 99) // 100 == 1
    assert "generative-agents" in result.stdout and "not found on arXiv" in result.stdout
    meta = cache.read_metadata("vit")
    assert meta["version"] == "v2" and meta["authors"][0]["affiliations"] == ["Lab One", "Lab Two"]
    assert meta["title"] == "Generated paper 2010.11929: a title over three lines"


def test_fetch_downloads_pdfs_and_show_displays_them(server, runner, papercli_home):
    result = runner.invoke(app, ["fetch", "vit", "unet"])
    assert result.exit_code == 0, result.output
    assert result.stdout.count("downloaded") == 2
    pdf = cache.pdf_path("vit")
    assert pdf.read_bytes().startswith(b"%PDF-")
    again = runner.invoke(app, ["fetch", "vit"])
    assert "cached" in again.stdout
    assert len(server.pdf_calls()) == 2
    shown = json.loads(runner.invoke(app, ["show", "vit", "--json"]).stdout)
    assert shown["local"]["PDF"] == str(pdf)
    assert "An abstract for 2010.11929 that wraps over lines." in shown["local"]["Abstract (arXiv)"]
    summary = runner.invoke(app, ["summary", "vit"]).stdout
    assert "Abstract (arXiv)" in summary and str(pdf) in summary
    path = runner.invoke(app, ["path", "vit"])
    assert path.exit_code == 0 and path.stdout.strip() == str(pdf)


def write_report(user_registry: Path, paper_id: str, pdf_url: str) -> None:
    """A paper that is not on arXiv, only at `pdf_url`."""
    (user_registry / f"{paper_id}.yaml").write_text(
        yaml.safe_dump(
            {
                "id": paper_id,
                "title": "A Report",
                "authors": ["A. Person"],
                "year": 2019,
                "field": "language",
                "summary": "Not on arXiv.",
                "urls": {"pdf": pdf_url},
            }
        )
    )


def test_fetch_direct_pdf_url_for_non_arxiv_paper(server, runner, user_registry):
    write_report(user_registry, "my-report", f"{server.base}/pdf/report")
    result = runner.invoke(app, ["fetch", "my-report"])
    assert result.exit_code == 0, result.output
    assert "not on arXiv" in result.stdout and "downloaded" in result.stdout
    assert server.api_calls() == []


def test_path_without_pdf_fails_and_fetch_flag_downloads(server, runner):
    missing = runner.invoke(app, ["path", "unet"])
    assert missing.exit_code == 1 and "papercli fetch unet" in missing.stderr
    fetched = runner.invoke(app, ["path", "unet", "--fetch"])
    assert fetched.exit_code == 0 and Path(fetched.stdout.strip()).is_file()


def test_open_uses_the_system_opener(server, runner, tmp_path, monkeypatch):
    record = tmp_path / "opened.txt"
    script = tmp_path / "fake-viewer"
    script.write_text(f'#!/bin/sh\necho "$1" > {record}\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PAPERCLI_OPENER", str(script))
    result = runner.invoke(app, ["open", "resnet"])
    assert result.exit_code == 0, result.output
    assert record.read_text().strip() == str(cache.pdf_path("resnet"))
    monkeypatch.setenv("PAPERCLI_OPENER", "false")
    failed = runner.invoke(app, ["open", "resnet"])
    assert failed.exit_code == 1 and "the PDF is at" in failed.stderr


@pytest.mark.parametrize(
    "form",
    [
        "2101.00042",
        "2101.00042v2",
        "arXiv:2101.00042",
        "https://arxiv.org/abs/2101.00042",
        "https://arxiv.org/pdf/2101.00042v2.pdf",
    ],
)
def test_add_accepts_every_id_form(form, server, runner, papercli_home):
    result = runner.invoke(app, ["add", form, "--tag", "Test", "--tag", "vision"])
    assert result.exit_code == 0, result.output
    path = papercli_home / "registry" / "papers" / "generated-paper-2101-00042.yaml"
    paper = load_file(path)
    assert (
        paper.arxiv == "2101.00042" and paper.field == "vision" and paper.tags == ["test", "vision"]
    )
    assert paper.title == "Generated paper 2101.00042: a title over three lines"
    assert paper.authors == ["First Author", "Second Author"]
    assert runner.invoke(app, ["validate"]).exit_code == 0
    assert runner.invoke(app, ["show", "2101.00042"]).exit_code == 0


def test_add_old_style_and_explicit_id(server, runner, papercli_home):
    result = runner.invoke(
        app, ["add", "hep-ex/0406020", "--id", "sparticles", "--field", "general"]
    )
    assert result.exit_code == 0, result.output
    paper = load_file(papercli_home / "registry" / "papers" / "sparticles.yaml")
    assert (
        paper.arxiv == "hep-ex/0406020" and paper.arxiv_category == "hep-ex" and paper.year == 2004
    )


def test_add_refuses_collisions_and_bad_ids(server, runner, papercli_home):
    dup = runner.invoke(app, ["add", "2010.11929"])
    assert dup.exit_code == 2 and "already in the registry as 'vit'" in dup.stderr
    taken = runner.invoke(app, ["add", "2101.00042", "--id", "vit"])
    assert taken.exit_code == 2 and "id 'vit' is already used" in taken.stderr
    bad = runner.invoke(app, ["add", "2101.00042", "--id", "Bad Slug"])
    assert bad.exit_code == 2 and "is not a slug" in bad.stderr
    calls = len(server.api_calls())
    rejected = runner.invoke(app, ["add", "abc"])  # refused locally now (see test_add_checks_…)
    assert rejected.exit_code == 2 and "'abc' is not an arXiv id" in rejected.stderr
    assert len(server.api_calls()) == calls
    server.missing.add("2101.00043")
    gone = runner.invoke(app, ["add", "2101.00043"])
    assert gone.exit_code == 2 and "arXiv has no paper with id '2101.00043'" in gone.stderr
    user_dir = papercli_home / "registry" / "papers"
    assert not user_dir.exists() or list(user_dir.iterdir()) == []


def test_network_failure_is_one_line(server, runner, monkeypatch):
    monkeypatch.setenv("PAPERCLI_ARXIV_API_URL", "http://127.0.0.1:9/api/query")  # nothing listens
    monkeypatch.setenv("PAPERCLI_ARXIV_RETRIES", "1")
    result = runner.invoke(app, ["add", "2101.00042"])
    assert result.exit_code == 1
    assert result.stderr.startswith(
        "papercli: error: arXiv API failed after 2 attempts: connection failed"
    )
    assert len(result.stderr.strip().splitlines()) == 1


def test_bad_setting_is_a_usage_error(runner, monkeypatch):
    monkeypatch.setenv("PAPERCLI_ARXIV_DELAY", "soon")
    result = runner.invoke(app, ["fetch", "vit"])
    assert result.exit_code == 2 and "PAPERCLI_ARXIV_DELAY must be a number" in result.stderr


def test_no_network_access_in_tests():
    # the suite's endpoints all point at 127.0.0.1; make sure the defaults were not used
    assert "arxiv.org" not in os.environ.get("PAPERCLI_ARXIV_API_URL", "127.0.0.1")


def test_make_pdf_is_a_pdf():
    assert make_pdf(1000).startswith(b"%PDF-") and len(make_pdf(1000)) == 1000


# ----------------------------------------------------------------------------- hostile input
def test_pdf_cut_off_without_content_length_is_kept_as_part_then_resumed(
    server, tmp_path, monkeypatch
):
    monkeypatch.setenv("PAPERCLI_ARXIV_RETRIES", "0")
    dest = tmp_path / "p.pdf"
    # the server sends half the file with no Content-Length and closes: a clean end of body
    server.faults["pdf"] = [Fault(drop_after=150_000, no_length=True, passthrough=True)]
    with pytest.raises(ArxivError, match=r"incomplete PDF \(150000 bytes with no length given"):
        client().download(f"{server.base}/pdf/2101.00001", dest)
    assert not dest.exists()
    assert (tmp_path / "p.pdf.part").read_bytes() == server.default_pdf[:150_000]
    assert client().download(f"{server.base}/pdf/2101.00001", dest) == "downloaded"
    assert dest.read_bytes() == server.default_pdf
    assert server.pdf_calls()[-1]["headers"]["Range"] == "bytes=150000-"


def test_half_pdf_is_never_reported_as_cached(server, runner, monkeypatch):
    monkeypatch.setenv("PAPERCLI_ARXIV_RETRIES", "0")
    server.faults["pdf"] = [Fault(drop_after=100_000, no_length=True, passthrough=True)]
    first = runner.invoke(app, ["fetch", "vit"])
    assert first.exit_code == 1 and "incomplete PDF" in first.stdout
    assert not cache.pdf_path("vit").exists()
    assert runner.invoke(app, ["path", "vit"]).exit_code == 1  # no half file under the name
    second = runner.invoke(app, ["fetch", "vit"])
    assert second.exit_code == 0 and "downloaded" in second.stdout
    assert cache.pdf_path("vit").read_bytes() == server.default_pdf
    assert "cached" in runner.invoke(app, ["fetch", "vit"]).stdout


def test_whole_pdf_without_content_length_is_complete_by_its_trailer(server, tmp_path):
    server.faults["pdf"] = [Fault(no_length=True, passthrough=True)]
    dest = tmp_path / "p.pdf"
    assert client().download(f"{server.base}/pdf/2101.00001", dest) == "downloaded"
    assert dest.read_bytes() == server.default_pdf and len(server.pdf_calls()) == 1


def test_pdf_without_trailer_is_complete_only_when_its_length_is_known(
    server, tmp_path, monkeypatch
):
    monkeypatch.setenv("PAPERCLI_ARXIV_RETRIES", "0")
    server.pdfs["odd"] = b"%PDF-1.4\n" + bytes(range(256)) * 40  # no %%EOF, no startxref
    dest = tmp_path / "odd.pdf"
    assert client().download(f"{server.base}/pdf/odd", dest) == "downloaded"  # length matched
    other = tmp_path / "other.pdf"
    server.faults["pdf"] = [Fault(no_length=True, passthrough=True)]
    with pytest.raises(ArxivError, match="failed after 1 attempts: incomplete PDF"):
        client().download(f"{server.base}/pdf/odd", other)
    assert not other.exists() and (tmp_path / "other.pdf.part").exists()
    # resuming asks for the rest; the server's 416 names the total, which the .part matches
    assert client().download(f"{server.base}/pdf/odd", other) == "downloaded"
    assert other.read_bytes() == server.pdfs["odd"]
    assert server.pdf_calls()[-1]["headers"]["Range"] == f"bytes={len(server.pdfs['odd'])}-"


def test_truncated_pdf_already_in_place_is_resumed_not_cached(server, tmp_path):
    dest = tmp_path / "p.pdf"
    dest.write_bytes(server.default_pdf[:100_000])  # saved whole by an older papercli
    assert client().download(f"{server.base}/pdf/2101.00001", dest) == "downloaded"
    assert dest.read_bytes() == server.default_pdf
    assert server.pdf_calls()[0]["headers"]["Range"] == "bytes=100000-"


@pytest.mark.parametrize(
    "bad",
    [
        "abc",
        "1234.5",
        "2013.12345",  # month 13
        "0808.05394",  # 5 digits before 2015
        "1501.0001",  # 4 digits from 2015
        "2010.11929v0",
        "hep-ex/040602",
        "https://example.org/abs/2010.11929",
        "x" * 100_000,
    ],
)
def test_add_checks_the_id_syntax_before_any_network_call(bad, server, runner, monkeypatch):
    monkeypatch.setenv("PAPERCLI_ARXIV_API_URL", "http://127.0.0.1:9/api/query")  # offline
    monkeypatch.setenv("PAPERCLI_ARXIV_BACKOFF", "2")
    start = time.monotonic()
    result = runner.invoke(app, ["add", bad])
    assert time.monotonic() - start < 2  # was 31 s of retries offline
    assert result.exit_code == 2
    assert "is not an arXiv id (use 2010.11929, 2010.11929v2, hep-ex/0406020" in result.stderr
    assert len(result.stderr.splitlines()) == 1 and len(result.stderr) < 300
    assert server.requests == []


@pytest.mark.parametrize(
    ("body", "what"),
    [
        (b"<!DOCTYPE html><html><body>Rate exceeded.</body></html>", "an HTML page"),
        (b"\x00\xffgarbage<<", "malformed XML"),
        (b"<rss><channel/></rss>", "XML <rss>, not an Atom feed"),
        (b"", "an empty response"),
    ],
)
def test_non_atom_api_response_is_unreadable_not_missing_and_retried(
    body, what, server, monkeypatch
):
    server.faults["api"] = [Fault(status=200, body=body)]
    found, missing = client().fetch(["2101.00001"])  # retried like a 5xx, then served
    assert "2101.00001" in found and missing == [] and len(server.api_calls()) == 2
    monkeypatch.setenv("PAPERCLI_ARXIV_RETRIES", "2")
    server.faults["api"] = [Fault(status=200, body=body)] * 3
    with pytest.raises(ArxivError) as exc:
        client().fetch(["2101.00001"])
    assert str(exc.value).startswith(
        "arXiv API failed after 3 attempts: arXiv returned something papercli could not read ("
        + what
    )
    assert len(server.api_calls()) == 2 + 3


def test_fetch_says_unreadable_instead_of_not_found(server, runner, monkeypatch):
    monkeypatch.setenv("PAPERCLI_ARXIV_RETRIES", "1")
    server.faults["api"] = [Fault(status=200, body=b"<html>oops</html>")] * 2
    result = runner.invoke(app, ["fetch", "vit", "--no-pdf"])
    assert result.exit_code == 1
    assert result.stderr == (
        "papercli: error: arXiv API failed after 2 attempts: arXiv returned something papercli"
        " could not read (an HTML page)\n"
    )
    assert "not found" not in result.output


def test_add_writes_nothing_when_the_record_does_not_validate(server, runner, papercli_home):
    feed = re.sub(
        rb"<title>Generated.*?</title>", b"<title>  </title>", atom_feed(["2101.00042"]), flags=re.S
    )
    server.faults["api"] = [Fault(status=200, body=feed)]
    result = runner.invoke(app, ["add", "2101.00042"])
    assert result.exit_code == 1
    assert result.stderr == (
        "papercli: error: arXiv's record for 2101.00042 does not make a valid registry entry"
        " (title: must not be empty); nothing was written\n"
    )
    user_dir = papercli_home / "registry" / "papers"
    assert not user_dir.exists() or list(user_dir.iterdir()) == []
    listed = runner.invoke(app, ["list"])
    assert listed.exit_code == 0 and listed.stderr == ""


@pytest.mark.parametrize("variable", ["PAPERCLI_ARXIV_API_URL", "PAPERCLI_ARXIV_PDF_URL"])
@pytest.mark.parametrize("value", ["notaurl", "file:///etc/passwd", "http://", "ftp://host/x"])
def test_endpoint_settings_must_be_http_urls(variable, value, server, runner, monkeypatch):
    monkeypatch.setenv(variable, value)
    for argv in (["add", "2101.00042"], ["fetch", "vit"], ["path", "vit", "--fetch"]):
        result = runner.invoke(app, argv)
        assert result.exit_code == 2, (argv, result.output)
        assert result.stderr == (
            f"papercli: error: {variable} must be an http:// or https:// URL, got '{value}'\n"
        )
    assert server.requests == []


def test_registry_pdf_url_with_another_scheme_fails_in_one_line(server, runner, user_registry):
    write_report(user_registry, "local-file", "file:///etc/passwd")
    result = runner.invoke(app, ["fetch", "local-file"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "failed: PDF download file:///etc/passwd: No connection adapters" in result.stdout
