"""A real HTTP server on 127.0.0.1 that speaks like arXiv: the recorded API responses of
../shared/fixtures/arxiv, generated Atom feeds for other ids, PDFs with Range support, and
scripted faults (status codes, Retry-After, dropped connections, slow responses)."""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse
from xml.sax.saxutils import escape

# Copied from ../shared/fixtures/arxiv (recorded by the public `arxiv` client); see its README.
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "arxiv"


@dataclass
class Fault:
    """One scripted reply that replaces the normal one."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    drop_after: int | None = None  # send this many body bytes, then cut the connection
    delay: float = 0.0  # seconds to wait before answering
    passthrough: bool = False  # serve the normal reply, but apply drop_after/delay/no_length
    no_length: bool = False  # no Content-Length: the body ends when the connection closes


def fixture_body(name: str) -> tuple[int, bytes]:
    path = FIXTURES / name
    if path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        return data["status_code"], data["body"].encode("utf-8")
    return 200, path.read_bytes()


def make_pdf(size: int, seed: int = 0) -> bytes:
    """Exactly `size` bytes that end as a whole PDF does: a cross-reference section, then
    'startxref' with that section's offset, then '%%EOF'."""
    head = b"%PDF-1.5\n%papercli test document\n"
    xref = b"\nxref\n0 1\n0000000000 65535 f \ntrailer\n<< /Size 1 >>\nstartxref\n"
    for digits in range(1, 21):  # the offset's width changes the filler's length
        filler_len = size - len(head) - len(xref) - digits - len(b"\n%%EOF\n")
        offset = len(head) + filler_len + 1  # where 'xref' starts
        if len(str(offset)) == digits:
            break
    filler = bytes((i * 31 + seed) % 251 for i in range(filler_len))
    return head + filler + xref + str(offset).encode() + b"\n%%EOF\n"


def make_text_pdf(lines: list[str]) -> bytes:
    """A one-page PDF whose page shows `lines` in Helvetica: real text that pypdf extracts."""
    ops = "BT /F1 12 Tf 72 720 Td 14 TL " + " ".join(
        "(" + line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") + ") '"
        for line in lines
    )
    stream = ops.encode("latin-1") + b" ET"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = b"%PDF-1.4\n"
    offsets = []
    for n, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % n + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return out


def atom_feed(ids: list[str]) -> bytes:
    entries = []
    for i, asked in enumerate(ids):
        m = re.match(r"^(.+?)(v\d+)?$", asked)
        arxiv_id, version = m.group(1), m.group(2) or "v2"
        # as on arXiv, v1 appeared in the month the id encodes (2101.00042: January 2021)
        ym = re.match(r"^(\d\d)(\d\d)\.", arxiv_id)
        published = f"20{ym[1]}-{ym[2]}-22" if ym else "2020-10-22"
        entries.append(f"""  <entry>
    <id>http://arxiv.org/abs/{arxiv_id}{version}</id>
    <title>Generated paper {escape(arxiv_id)}:
  a title over
  three lines</title>
    <updated>2021-06-0{1 + i % 9}T10:00:00Z</updated>
    <link href="https://arxiv.org/abs/{arxiv_id}v2" rel="alternate" type="text/html"/>
    <link href="https://arxiv.org/pdf/{arxiv_id}v2" rel="related" type="application/pdf" title="pdf"/>
    <summary>  An abstract for {escape(arxiv_id)}
that wraps   over lines.
</summary>
    <category term="cs.CV" scheme="http://arxiv.org/schemas/atom"/>
    <category term="cs.LG" scheme="http://arxiv.org/schemas/atom"/>
    <published>{published}T17:55:59Z</published>
    <arxiv:primary_category term="cs.CV"/>
    <arxiv:comment>Fine comment</arxiv:comment>
    <author>
      <name>First Author</name>
      <arxiv:affiliation>Lab One</arxiv:affiliation>
      <arxiv:affiliation>Lab Two</arxiv:affiliation>
    </author>
    <author>
      <name>Second Author</name>
    </author>
  </entry>""")
    feed = f"""<?xml version='1.0' encoding='UTF-8'?>
<feed xmlns:opensearch="http://a9.com/-/spec/opensearch/1.1/" xmlns:arxiv="http://arxiv.org/schemas/atom" xmlns="http://www.w3.org/2005/Atom">
  <id>https://arxiv.org/api/generated</id>
  <title>arXiv Query</title>
  <updated>2026-04-12T22:09:36Z</updated>
  <opensearch:itemsPerPage>{len(ids)}</opensearch:itemsPerPage>
  <opensearch:totalResults>{len(ids)}</opensearch:totalResults>
  <opensearch:startIndex>0</opensearch:startIndex>
{chr(10).join(entries)}
</feed>
"""
    return feed.encode("utf-8")


# id_list (as sent) -> recorded fixture
RECORDED = {
    "1111.2011v2": "id_list=1111.2011v2.xml",
    "hep-ex/0406020v1": "id_hep-ex_0406020v1.json",
    "hep-ex/0406020": "id_hep-ex_0406020v1.json",
    "0808.05394,1707.08567": "id_0808.05394_1707.08567.json",
    "abc": "id_abc.json",
}


class FakeArxiv:
    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.faults: dict[str, list[Fault]] = {"api": [], "pdf": []}
        self.missing: set[str] = set()
        self.pdfs: dict[str, bytes] = {}
        self.default_pdf = make_pdf(300_000)
        self.html_instead: set[str] = set()
        handler = self._handler()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def api_calls(self) -> list[dict]:
        return [r for r in self.requests if r["path"] == "/api/query"]

    def pdf_calls(self) -> list[dict]:
        return [r for r in self.requests if r["path"].startswith("/pdf/")]

    def __enter__(self) -> FakeArxiv:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep pytest output clean
                pass

            def do_GET(self) -> None:
                url = urlparse(self.path)
                fake.requests.append(
                    {"path": url.path, "query": parse_qs(url.query), "headers": dict(self.headers)}
                )
                kind = "api" if url.path == "/api/query" else "pdf"
                fault = fake.faults[kind].pop(0) if fake.faults[kind] else None
                if fault and fault.delay:
                    time.sleep(fault.delay)
                if fault and not fault.passthrough:
                    self._send(fault.status, fault.body, fault.headers, fault)
                    return
                if kind == "api":
                    self._api(parse_qs(url.query), fault)
                else:
                    self._pdf(url.path[len("/pdf/") :], fault)

            def _api(self, query: dict, fault: Fault | None) -> None:
                id_list = query.get("id_list", [""])[0]
                if id_list in RECORDED:
                    status, body = fixture_body(RECORDED[id_list])
                else:
                    ids = [i for i in id_list.split(",") if i and i not in fake.missing]
                    status, body = 200, atom_feed(ids)
                self._send(
                    status, body, {"Content-Type": "application/atom+xml; charset=utf-8"}, fault
                )

            def _pdf(self, name: str, fault: Fault | None) -> None:
                if name in fake.html_instead:
                    self._send(
                        200,
                        b"<!DOCTYPE html><html><body>Slow down!</body></html>",
                        {"Content-Type": "text/html"},
                        None,
                    )
                    return
                data = fake.pdfs.get(name, fake.default_pdf)
                rng = self.headers.get("Range")
                if rng and rng.startswith("bytes="):
                    start = int(rng[len("bytes=") :].split("-")[0])
                    if start >= len(data):
                        self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"}, None)
                        return
                    headers = {
                        "Content-Type": "application/pdf",
                        "Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}",
                    }
                    self._send(206, data[start:], headers, fault)
                    return
                self._send(200, data, {"Content-Type": "application/pdf"}, fault)

            def _send(self, status: int, body: bytes, headers: dict, fault: Fault | None) -> None:
                drop = fault.drop_after if fault else None
                no_length = fault is not None and fault.no_length
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                if not no_length:
                    self.send_header("Content-Length", str(len(body)))
                if drop is not None or no_length:
                    self.send_header("Connection", "close")
                self.end_headers()
                if drop is None and not no_length:
                    self.wfile.write(body)
                    return
                self.wfile.write(body[:drop])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)

        return Handler
