"""Shared fixtures: every test gets its own PAPERCLI_HOME, so nothing touches the user's files."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parent.parent
SEEDS = REPO.parent / "shared" / "seeds"
ARXIV_FIXTURES = REPO.parent / "shared" / "fixtures" / "arxiv"

# what every result.json holds (design: the run record)
RESULT_KEYS = {
    "paper",
    "recipe",
    "scale",
    "device",
    "seconds",
    "params",
    "metrics",
    "checks",
    "verdict",
}

VALID_PAPER = textwrap.dedent(
    """\
    id: {id}
    title: "A Test Paper & Its {{Braces}}"
    authors: [Ada Lovelace, Alan Turing]
    year: 2021
    date: "2021-01"
    field: vision
    tags: [testing]
    aliases: [{alias}]
    arxiv: "{arxiv}"
    summary: A paper that exists only in the tests.
    key_points: [first point]
    claims:
      - {{name: accuracy, metric: top-1, value: 90.5, unit: "%", setting: toy, source: Table 1}}
    """
)


@pytest.fixture(autouse=True)
def papercli_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("PAPERCLI_HOME", str(home))
    monkeypatch.setenv("PAPERCLI_ARXIV_DELAY", "0")
    return home


@pytest.fixture
def user_registry(papercli_home: Path) -> Path:
    d = papercli_home / "registry" / "papers"
    d.mkdir(parents=True)
    return d


def write_paper(
    directory: Path,
    paper_id: str = "test-paper",
    *,
    alias: str = "TP1",
    arxiv: str = "2101.00001",
    text: str | None = None,
) -> Path:
    path = directory / f"{paper_id}.yaml"
    path.write_text(
        text if text is not None else VALID_PAPER.format(id=paper_id, alias=alias, arxiv=arxiv),
        encoding="utf-8",
    )
    return path


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def wait_for(predicate, timeout: float = 60.0) -> None:
    """Poll until `predicate()` holds (a background run reached a point), or fail."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise TimeoutError
        time.sleep(0.05)


def run_script(
    script: Path, out: Path, *args: str, check: bool = True
) -> subprocess.CompletedProcess:
    """Run a test recipe script (`python tests/tiny_recipe.py --out OUT …`) to its end."""
    proc = subprocess.run(
        [sys.executable, str(script), "--out", str(out), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    if check:
        assert proc.returncode in (0, 1), proc.stderr
    return proc


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """`python -m papercli ARGS` in a subprocess that imports this checkout's papercli."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "papercli", *args],
        capture_output=True, text=True, env=env, cwd=REPO, check=False,
    )  # fmt: skip


@contextmanager
def serve_folder(folder: Path) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 serving `folder`'s files; yields its base URL."""

    class Quiet(SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(folder), **k)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def two_step_control(runner: CliRunner, paper: str, out: Path, *settings: str) -> set[str]:
    """Run `paper` for 2 steps (with `--set` settings) through the CLI: it must exit 1 with the
    verdict "not reproduced". Returns the metrics of the checks that failed."""
    import json

    from papercli.cli import app

    args = ["reproduce", paper, "--steps", "2", "--out", str(out)]
    for s in settings:
        args += ["--set", s]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    record = json.loads((out / "result.json").read_text())
    assert record["verdict"] == "not reproduced"
    return {c["metric"] for c in record["checks"] if not c["passed"]}


def tiny_run(
    runner: CliRunner, paper: str, out: Path, *settings: str, steps: int = 4, batch: int = 16
) -> tuple[dict, list[dict]]:
    """Train `paper` for a few real steps through the CLI (with `--set` settings); returns its
    result.json record and its metrics.jsonl rows."""
    import json

    from papercli.cli import app

    args = [
        "reproduce",
        paper,
        "--steps",
        str(steps),
        "--batch-size",
        str(batch),
        "--out",
        str(out),
    ]
    for s in settings:
        args += ["--set", s]
    result = runner.invoke(app, args)
    assert result.exit_code in (0, 1), result.output
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return json.loads((out / "result.json").read_text()), rows


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (`-n auto`), split the cores between the workers: each worker and the
    CLI processes it starts use cores / workers threads, instead of every torch process taking
    all of them and thrashing."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        threads = max(1, (os.cpu_count() or 1) // int(workers))
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
