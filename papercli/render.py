"""Output for people: Rich tables and panels on a terminal, plain aligned text when piped.

Rich's console machinery is imported only when stdout is a terminal, which keeps piped
commands (scripts, `| grep`) fast and free of colour codes and box characters.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: `papercli --help` need not load the registry module
    from papercli.registry import Paper


def fancy() -> bool:
    """Rich output only on a real terminal that is not 'dumb'."""
    return sys.stdout.isatty() and os.environ.get("TERM") != "dumb"


def _console(stderr: bool = False):
    from rich.console import Console

    # Rich itself honours NO_COLOR (no colour, boxes stay on a terminal).
    return Console(stderr=stderr, highlight=False)


def _dumps(data: Any, **options: Any) -> str:
    import json  # imported on use: plain listings start without it

    return json.dumps(data, **options)


def print_json(data: Any) -> None:
    sys.stdout.write(_dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def error(message: str) -> None:
    """One line on stderr: 'papercli: error: …'."""
    sys.stderr.write(f"papercli: error: {message}\n")


def info(message: str) -> None:
    if fancy():
        _console().print(message)
    else:
        sys.stdout.write(_strip_markup(message) + "\n")


def _strip_markup(text: str) -> str:
    import re

    return re.sub(r"\[/?[a-z #0-9_.]*\]", "", text)


def table(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    title: str | None = None,
    styles: Sequence[str | None] | None = None,
) -> None:
    """A table: Rich on a terminal, tab-free aligned columns otherwise (easy to cut/awk)."""
    cells = [["" if v is None else str(v) for v in row] for row in rows]
    if fancy():
        from rich.table import Table

        t = Table(title=title, title_justify="left", header_style="bold")
        for i, col in enumerate(columns):
            style = styles[i] if styles and i < len(styles) else None
            t.add_column(col, style=style, overflow="fold")
        for row in cells:
            t.add_row(*row)
        _console().print(t)
        return
    out = sys.stdout
    if title:
        out.write(title + "\n")
    # one format string for every row: at 10,000 papers a join of ljust()s per cell costs ~4x
    by_column = list(zip(*cells, strict=True)) or [() for _ in columns]
    widths = [
        max([len(c), *map(len, col)]) for c, col in zip(columns[:-1], by_column, strict=False)
    ]
    line = "  ".join([*(f"{{:<{w}}}" for w in widths), "{}"]).format
    lines = [line(*(c.upper() for c in columns)).rstrip()]
    lines += [line(*row).rstrip() for row in cells]
    out.write("\n".join(lines) + "\n")


def paper_list(papers: Sequence[Paper]) -> None:
    rows = [(p.id, p.year, p.field, p.arxiv or "-", p.title) for p in papers]
    table(
        ("id", "year", "field", "arxiv", "title"),
        rows,
        styles=("cyan", None, "magenta", "green", None),
    )
    if fancy():
        _console().print(f"[dim]{len(papers)} papers[/dim]")


def search_results(hits: Sequence[Any]) -> None:
    """Ranked hits, each with its snippet; matched words bold on a terminal, *starred* in pipes."""
    from papercli.index import HIT_END, HIT_START

    if fancy():
        from rich.markup import escape

        def mark(s: str) -> str:
            text = escape(s).replace(HIT_START, "[bold yellow]").replace(HIT_END, "[/]")
            return f"[dim]{text}[/dim]"

    else:

        def mark(s: str) -> str:
            return s.replace(HIT_START, "*").replace(HIT_END, "*")

    table(
        ("score", "id", "year", "title"),
        [(f"{h.score:.1f}", h.paper.id, h.paper.year, h.paper.title) for h in hits],
        styles=("dim", "cyan", None, None),
    )
    for h in hits:
        if h.snippet:
            info(f"  {h.paper.id}: {mark(h.snippet)}")


def claims_table(paper: Paper) -> None:
    if not paper.claims:
        return
    rows = [
        (
            c.name,
            c.metric,
            f"{_fmt(c.value)}{(' ' + c.unit) if c.unit else ''}",
            c.setting,
            c.source,
        )
        for c in paper.claims
    ]
    table(
        ("claim", "metric", "value", "setting", "source"),
        rows,
        title="Claims",
        styles=(None, "cyan", "bold green", None, "dim"),
    )


def _fmt(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def authors_text(paper: Paper) -> str:
    """'A, B, C' or, for a truncated list, 'A, B, C et al.'."""
    names = ", ".join(paper.authors)
    return f"{names} et al." if paper.et_al else names


def venue_text(paper: Paper) -> str:
    """'CVPR 2016' for a published paper; the year alone for one without a venue."""
    if paper.venue is None:
        return str(paper.year)
    if paper.venue.kind == "arxiv":
        return f"arXiv preprint, {paper.year}"
    return paper.venue.label


def _summary_markdown(paper: Paper, extra: dict[str, str] | None) -> str:
    lines = [
        f"**{paper.title}**",
        "",
        f"*{authors_text(paper)}* — {venue_text(paper)}",
        "",
    ]
    lines.append(paper.summary.strip())
    if paper.key_points:
        lines += ["", "**Key points**", ""] + [f"- {kp}" for kp in paper.key_points]
    for label, value in (extra or {}).items():
        lines += ["", f"**{label}**", "", value]
    return "\n".join(lines)


def paper_summary(paper: Paper, extra: dict[str, str] | None = None) -> None:
    """Summary, key points and claims; `extra` adds sections such as the cached abstract."""
    text = _summary_markdown(paper, extra)
    if fancy():
        from rich.markdown import Markdown
        from rich.panel import Panel

        _console().print(
            Panel(Markdown(text), title=f"[bold]{paper.id}[/bold]", title_align="left")
        )
    else:
        sys.stdout.write(f"# {paper.id}\n\n{text}\n\n")
    claims_table(paper)


def paper_detail(paper: Paper, extra: dict[str, str] | None = None) -> None:
    """Every field of a paper, one per line, followed by the claims."""
    d = paper.to_dict()
    d["authors"] = authors_text(paper)  # "et al." instead of a bare flag
    d["venue"] = venue_text(paper) if paper.venue else None
    rows: list[tuple[str, str]] = []
    for key, value in d.items():
        if key in ("claims", "summary", "key_points", "et_al") or value in (None, "", [], {}):
            continue
        if isinstance(value, list):
            value = ", ".join(map(str, value))
        elif isinstance(value, dict):
            value = "\n".join(
                f"{k}: {v}" for k, v in value.items() if not isinstance(v, list | dict)
            ) or _dumps(value)
        rows.append((key, str(value)))
    for label, value in (extra or {}).items():
        rows.append((label, value))
    table(("field", "value"), rows, title=paper.title, styles=("bold cyan", None))
    body = paper.summary + (
        "\n\n" + "\n".join(f"- {k}" for k in paper.key_points) if paper.key_points else ""
    )
    if fancy():
        from rich.markdown import Markdown

        _console().print(Markdown(body))
    else:
        sys.stdout.write("\n" + body + "\n\n")
    claims_table(paper)
    if paper.reproduce:
        checks = [(c.metric, c.op, _fmt(c.value), c.why) for c in paper.reproduce.checks]
        table(
            ("metric", "op", "target", "why"),
            checks,
            title=f"Reproduce checks (recipe {paper.reproduce.recipe})",
        )


@contextmanager
def download_progress() -> Iterator[Callable[[str], Callable[[int, int | None], None]] | None]:
    """A Rich progress bar (bytes, speed, ETA) per download on a terminal; nothing otherwise."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=_console(stderr=True)) as bar:

        def factory(name: str) -> Callable[[int, int | None], None]:
            task = bar.add_task(name, total=None)
            return lambda done, total: bar.update(task, completed=done, total=total)

        yield factory


def plan_table(plan: dict[str, Any]) -> None:
    """What `reproduce --dry-run` would do."""
    import shlex

    rows = [
        (k, plan[k])
        for k in ("paper", "recipe", "scale", "device", "world_size", "data")
        if k in plan
    ]
    rows.append(
        (
            "batch",
            f"{plan.get('global_batch')} global = {plan.get('world_size')} process(es) × "
            f"{plan.get('accum_steps')} accumulation × {plan.get('micro_batch')}",
        )
    )
    rows.append(
        (
            "params",
            f"{plan['params']:,} ({plan.get('trainable_params', plan['params']):,} trainable)",
        )
    )
    for arm, counts in (plan.get("arm_params") or {}).items():
        rows.append((f"params.{arm}", f"{counts['total']:,}"))
    rows += [(f"config.{k}", v) for k, v in plan.get("config", {}).items()]
    rows.append(("command", shlex.join(plan["command"])))
    table(("field", "value"), rows, title="Dry run (nothing trained)", styles=("bold cyan", None))


def result_table(paper: Paper, result: dict[str, Any]) -> None:
    """The paper's claims next to the mini-scale checks and what this run measured."""
    claims = {c.metric: c for c in paper.claims}
    rows = []
    for check in result.get("checks", []):
        measured = check.get("measured")
        shown = (
            "-"
            if measured is None
            else (f"{measured:.4g}" if isinstance(measured, float) else str(measured))
        )
        claim = claims.get(check["metric"])
        paper_says = check.get("why") or (
            f"{claim.name}: {_fmt(claim.value)}{claim.unit}" if claim else ""
        )
        rows.append(
            (
                paper_says,
                f"{check['metric']} {check['op']} {_fmt(check['target'])}",
                shown,
                "pass" if check.get("passed") else "FAIL",
            )
        )
    title = (
        f"{paper.id}: {result.get('verdict', '?').upper()} — {result.get('scale')} scale on "
        f"{result.get('device')}, {result.get('seconds')} s, {result.get('params') or 0:,} parameters"
    )
    table(
        ("the paper's claim", "check", "measured", "result"),
        rows,
        title=title,
        styles=(None, "cyan", "bold", "bold"),
    )
    if result.get("error"):
        error(result["error"])
