"""Cold-start latency of the light commands, and listing a 10,000-paper registry.

Usage: python benchmarks/cli_latency.py [--runs 21] [--papers 10000]   (--papers 0: skip that part)

Runs the floor `python -c "import typer, rich, yaml"` and `papercli list`, `summary`, `show`,
`search` and `--help` (a fresh interpreter each run, output piped as a script would see it)
interleaved, one of each per round, so that load from other processes hits all of them alike;
reports each median and its ratio to the floor's. Then times `papercli list` over a generated
registry of N papers, first run (no index; median of 3) and later, and `search` over it. Targets:
list/summary/show/search <= 1.15x the floor, --help <= 1.2x; at N=10,000 on 2 cores: first list
< 2.5 s, later lists < 0.3 s, search < 0.2 s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# (command, the most its median may be as a multiple of the floor's)
TARGETS = [
    ("list", 1.15),
    ("summary vit", 1.15),
    ("show vit", 1.15),
    ("search attention", 1.15),
    ("--help", 1.2),
]


def papercli_cmd() -> list[str]:
    exe = shutil.which("papercli")
    return [exe] if exe else [sys.executable, "-m", "papercli"]


def seconds(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def interleaved_medians(
    cmds: dict[str, list[str]], runs: int, env: dict[str, str]
) -> dict[str, float]:
    """Median seconds of each command over `runs` rounds; each round runs every command once."""
    times: dict[str, list[float]] = {name: [] for name in cmds}
    for _ in range(runs):
        for name, cmd in cmds.items():
            times[name].append(seconds(cmd, env))
    return {name: statistics.median(t) for name, t in times.items()}


def generate_registry(directory: Path, count: int) -> None:
    """Copies of a real registry file under new ids (each a valid, distinct paper; up to 49,999)."""
    template = (REPO / "registry" / "papers" / "vit.yaml").read_text(encoding="utf-8")
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        text = template.replace("id: vit\n", f"id: gen-{i:05d}\n", 1)
        # arXiv ids of October 2020 (the template's date), clear of ViT's own 2010.11929
        text = text.replace('arxiv: "2010.11929"', f'arxiv: "2010.{50_000 + i:05d}"', 1)
        text = text.replace(
            "aliases: [ViT, 16x16, vision-transformer, image-is-worth-16x16-words]",
            f"aliases: [gen{i}]",
            1,
        )
        (directory / f"gen-{i:05d}.yaml").write_text(text, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--papers", type=int, default=10_000)
    args = parser.parse_args()

    # Installed packages carry compiled bytecode; an editable checkout only does once Python may
    # write it. With PYTHONDONTWRITEBYTECODE set (as on this project's machines) every run would
    # recompile papercli from source while typer/rich/yaml load from .pyc — compile first.
    import compileall

    compileall.compile_dir(str(REPO / "papercli"), quiet=1)

    floor_cmd = [sys.executable, "-c", "import typer, rich, yaml"]
    cmds = {"floor": floor_cmd} | {
        f"papercli {name}": [*papercli_cmd(), *name.split()] for name, _ in TARGETS
    }
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PAPERCLI_HOME": str(Path(tmp) / "home")}
        for cmd in cmds.values():  # warm the page cache and papercli's registry cache
            seconds(cmd, env)
        medians = interleaved_medians(cmds, args.runs, env)
        floor = medians["floor"]
        print(
            f"{args.runs} interleaved runs each, medians; floor = python -c 'import typer, rich, yaml'"
        )
        print(f"{'floor':<28} {floor * 1000:7.1f} ms")
        for name, target in TARGETS:
            t = medians[f"papercli {name}"]
            verdict = "ok" if t / floor <= target else "ABOVE TARGET"
            print(
                f"{'papercli ' + name:<28} {t * 1000:7.1f} ms  ratio {t / floor:.3f}"
                f"  (target <= {target})  {verdict}"
            )

        if args.papers <= 0:
            return
        big_home = Path(tmp) / "big"
        generate_registry(big_home / "registry" / "papers", args.papers)
        big_env = {**os.environ, "PAPERCLI_HOME": str(big_home)}
        runs = max(3, args.runs // 3)
        colds = []  # first runs: no index yet (deleted before each)
        for _ in range(3):
            shutil.rmtree(big_home / "cache", ignore_errors=True)
            colds.append(seconds([*papercli_cmd(), "list"], big_env))
        cold = statistics.median(colds)
        warm = statistics.median(seconds([*papercli_cmd(), "list"], big_env) for _ in range(runs))
        search = [*papercli_cmd(), "search", "attention"]
        first_search = seconds(search, big_env)  # builds the full-text documents
        warm_search = statistics.median(seconds(search, big_env) for _ in range(runs))
        n = args.papers
        print(
            f"papercli list, {n} papers, first run (no index)   {cold * 1000:7.1f} ms  (target < 2500 ms;"
            f" median of 3: {', '.join(f'{c * 1000:.0f}' for c in colds)})"
        )
        print(
            f"papercli list, {n} papers, median later runs      {warm * 1000:7.1f} ms  (target < 300 ms)"
        )
        print(f"papercli search, {n} papers, first run           {first_search * 1000:7.1f} ms")
        print(
            f"papercli search, {n} papers, median later runs    {warm_search * 1000:7.1f} ms  (target < 200 ms)"
        )


if __name__ == "__main__":
    main()
