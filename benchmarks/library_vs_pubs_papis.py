"""papercli's library side next to pubs and papis, on the same papers.

    python benchmarks/library_vs_pubs_papis.py                   # 53 and 10,053 papers
    python benchmarks/library_vs_pubs_papis.py --sizes 53 --runs 9 --venv /tmp/cmp

Installs pubs (with `bibtexparser<2`, which pubs 0.9 needs) and papis into a throw-away virtual
environment (or reuses `--venv DIR`), then builds each tool's library from the same papers:
papercli's registry (the 53 bundled papers plus generated copies of a real entry, as in
cli_latency.py), exported once as BibTeX for `pubs import` and as JSON for papis's one folder
with an info.yaml per document. Each size then reports, in seconds:
  - the first `list` with no cache or index (papercli's SQLite index and papis's database
    deleted; pubs keeps none),
  - the median of later `list` runs and of a one-word search, interleaved round by round so
    that load from other processes hits the three tools alike (warm page cache).
Commands: `papercli list` / `pubs list` / `papis list --all`, and the same field query for each,
`papercli search title:residual` / `pubs list title:residual` / `papis list --all title:residual`. Needs the package registry (pip) once.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cli_latency import generate_registry, papercli_cmd

BUNDLED = 53


def sh(cmd: list[str], env: dict[str, str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, check=True, capture_output=True, text=True, **kw)


def seconds(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def make_venv(path: Path) -> Path:
    """pubs and papis in their own environment, so neither touches papercli's."""
    bin_dir = path / "bin"
    if not (bin_dir / "pubs").exists() or not (bin_dir / "papis").exists():
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
        subprocess.run(
            [str(bin_dir / "pip"), "install", "-q", "pubs", "bibtexparser<2", "papis"],
            check=True,
        )
    return bin_dir


def papis_library(papers: list[dict], directory: Path) -> None:
    """One folder per paper with papis's info.yaml (title, authors, year, ref, eprint)."""
    import yaml

    for p in papers:
        folder = directory / p["citekey"]
        folder.mkdir(parents=True, exist_ok=True)
        info = {
            "ref": p["citekey"],
            "type": "article",
            "title": p["title"],
            "author": " and ".join(p["authors"]),
            "author_list": [
                {"family": a.split()[-1], "given": " ".join(a.split()[:-1])} for a in p["authors"]
            ],
            "year": p["year"],
            "eprint": p.get("arxiv"),
            "tags": p.get("tags", []),
        }
        (folder / "info.yaml").write_text(
            yaml.safe_dump(info, allow_unicode=True), encoding="utf-8"
        )


def libraries(root: Path, extra: int, bin_dir: Path) -> dict[str, dict]:
    """Build the three libraries of BUNDLED + extra papers; return each tool's env and commands."""
    home = root / "papercli-home"
    if extra:
        generate_registry(home / "registry" / "papers", extra)
    env = {**os.environ, "PAPERCLI_HOME": str(home), "XDG_CONFIG_HOME": str(root / "config"),
           "XDG_CACHE_HOME": str(root / "cache")}  # fmt: skip
    pc = papercli_cmd()
    exported = json.loads(sh([*pc, "export", "--all", "--format", "json"], env).stdout)
    bib = root / "refs.bib"
    sh([*pc, "export", "--all", "--format", "bibtex", "--output", str(bib)], env)

    pubsrc = root / "pubsrc"
    sh([str(bin_dir / "pubs"), "-c", str(pubsrc), "init", "-p", str(root / "pubs")], env)
    sh([str(bin_dir / "pubs"), "-c", str(pubsrc), "import", str(bib)], env)

    papis_dir = root / "papis"
    papis_library(exported, papis_dir)
    cfg = root / "config" / "papis" / "config"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(f"[settings]\ndefault-library = bench\n\n[bench]\ndir = {papis_dir}\n")
    pubs, papis = [str(bin_dir / "pubs"), "-c", str(pubsrc)], [str(bin_dir / "papis")]
    return {
        "env": env,
        "list": {"papercli": [*pc, "list"], "pubs": [*pubs, "list"], "papis": [*papis, "list", "--all"]},
        "search": {
            "papercli": [*pc, "search", "title:residual"],
            "pubs": [*pubs, "list", "title:residual"],
            "papis": [*papis, "list", "--all", "title:residual"],
        },
        "count": len(exported),
        "caches": {"papercli": home / "cache" / "index.sqlite3", "papis": root / "cache" / "papis"},
    }  # fmt: skip


def first_runs(lib: dict) -> dict[str, float]:
    """`list` with nothing cached: papercli's index and papis's database removed first."""
    out = {}
    for tool, cmd in lib["list"].items():
        cache = lib["caches"].get(tool)
        if cache is not None:
            for path in Path(cache).parent.glob(Path(cache).name + "*"):
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        out[tool] = seconds(cmd, lib["env"])
    return out


def medians(cmds: dict[str, list[str]], env: dict[str, str], runs: int) -> dict[str, float]:
    times: dict[str, list[float]] = {tool: [] for tool in cmds}
    for _ in range(runs):
        for tool, cmd in cmds.items():
            times[tool].append(seconds(cmd, env))
    return {tool: statistics.median(t) for tool, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[BUNDLED, BUNDLED + 10_000])
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--venv", type=Path, help="reuse (or create) this environment")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bin_dir = make_venv(args.venv or Path(tmp) / "venv")
        print(f"{'papers':>7}  {'what':<22} {'papercli':>9} {'pubs':>9} {'papis':>9}  (seconds)")
        for size in args.sizes:
            root = Path(tmp) / f"n{size}"
            lib = libraries(root, max(0, size - BUNDLED), bin_dir)
            rows = {"first list (no cache)": first_runs(lib)}
            for cmd in lib["list"].values():  # warm every cache before timing
                seconds(cmd, lib["env"])
            rows["list, median"] = medians(lib["list"], lib["env"], args.runs)
            rows["search, median"] = medians(lib["search"], lib["env"], args.runs)
            for what, t in rows.items():
                print(
                    f"{lib['count']:>7}  {what:<22} {t['papercli']:9.3f} {t['pubs']:9.3f} "
                    f"{t['papis']:9.3f}"
                )


if __name__ == "__main__":
    main()
