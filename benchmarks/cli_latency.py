"""Cold-start latency of the light commands, and listing a 10,000-paper registry.

Usage: python benchmarks/cli_latency.py [--runs 15] [--papers 10000]

Compares `papercli list` (a fresh interpreter each run, output piped as a script would see it)
with the floor `python -c "import typer, rich, yaml"`, reporting medians and their ratio, then
times `papercli list` over a generated registry of N papers. Targets: ratio <= 1.3, N=10,000 < 1 s.
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


def papercli_cmd() -> list[str]:
    exe = shutil.which("papercli")
    return [exe] if exe else [sys.executable, "-m", "papercli"]


def median_seconds(cmd: list[str], runs: int, env: dict[str, str]) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(
            cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True
        )
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def generate_registry(directory: Path, count: int) -> None:
    """Copies of a real registry file under new ids (each a valid, distinct paper)."""
    template = (REPO / "registry" / "papers" / "vit.yaml").read_text(encoding="utf-8")
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        text = template.replace("id: vit\n", f"id: gen-{i:05d}\n", 1)
        text = text.replace(
            'arxiv: "2010.11929"', f'arxiv: "2{1 + i // 100_000:03d}.{i % 100_000:05d}"', 1
        )
        text = text.replace(
            "aliases: [ViT, 16x16, vision-transformer, image-is-worth-16x16-words]",
            f"aliases: [gen{i}]",
            1,
        )
        (directory / f"gen-{i:05d}.yaml").write_text(text, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--papers", type=int, default=10_000)
    args = parser.parse_args()

    # Installed packages carry compiled bytecode; an editable checkout only does once Python may
    # write it. With PYTHONDONTWRITEBYTECODE set (as on this project's machines) every run would
    # recompile papercli from source while typer/rich/yaml load from .pyc — compile first.
    import compileall

    compileall.compile_dir(str(REPO / "papercli"), quiet=1)

    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PAPERCLI_HOME": str(Path(tmp) / "home")}
        floor = median_seconds([sys.executable, "-c", "import typer, rich, yaml"], args.runs, env)
        cli = median_seconds([*papercli_cmd(), "list"], args.runs, env)
        print(
            f"floor  python -c 'import typer, rich, yaml'  median {floor * 1000:7.1f} ms  ({args.runs} runs)"
        )
        print(
            f"papercli list (bundled registry)             median {cli * 1000:7.1f} ms  ({args.runs} runs)"
        )
        print(f"ratio                                        {cli / floor:7.2f}  (target <= 1.3)")
        for name in ("summary vit", "show vit", "search attention"):
            t = median_seconds([*papercli_cmd(), *name.split()], args.runs, env)
            print(
                f"papercli {name:<20}                 median {t * 1000:7.1f} ms  ratio {t / floor:.2f}"
            )

        big_home = Path(tmp) / "big"
        generate_registry(big_home / "registry" / "papers", args.papers)
        big_env = {**os.environ, "PAPERCLI_HOME": str(big_home)}
        cold = median_seconds([*papercli_cmd(), "list"], 1, big_env)  # first run: nothing cached
        warm = median_seconds([*papercli_cmd(), "list"], max(3, args.runs // 3), big_env)
        print(f"papercli list, {args.papers} papers, first run            {cold * 1000:7.1f} ms")
        print(
            f"papercli list, {args.papers} papers, median later runs    {warm * 1000:7.1f} ms  (target < 1000 ms)"
        )


if __name__ == "__main__":
    main()
