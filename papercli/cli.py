"""The command line: one thin function per command (parse, call, render).

Heavy modules (requests for arXiv, torch for reproduce) are imported inside the commands that
need them, so `list`, `summary`, `show` and `search` start close to the interpreter's floor.
"""

from __future__ import annotations

import functools
import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from papercli import __version__, render
from papercli.errors import PapercliError, UsageError
from papercli.lazy_app import LazyTyper

# Commands are converted to click only when used (see lazy_app): start-up stays near the floor.
app = LazyTyper(
    name="papercli",
    help="Track machine-learning papers and reproduce their central claims.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def command(*args, **kwargs):
    """app.command, plus: a PapercliError becomes one line on stderr and its exit code."""

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*a, **k):
            try:
                return fn(*a, **k)
            except PapercliError as exc:
                render.error(str(exc))
                raise typer.Exit(exc.exit_code) from None
            except KeyboardInterrupt:
                render.error("interrupted")
                raise typer.Exit(130) from None
            except BrokenPipeError:  # `papercli list | head`
                sys.stderr.close()
                raise typer.Exit(0) from None

        return app.command(*args, **kwargs)(wrapper)

    return decorate


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"papercli {__version__}\n")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Track machine-learning papers and reproduce their central claims."""


def _registry(light: bool = False):
    """The merged registry. A broken file does not lock anyone out: it is left out with one
    warning line on stderr, and the command goes on (exit status unchanged, see the guide)."""
    from papercli.registry import Registry

    reg = Registry.load(light=light)
    for problems in reg.broken_files().values():
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        sys.stderr.write(f"papercli: warning: skipped {problems[0]}{more}\n")
    return reg


def complete_ids(incomplete: str) -> list[str]:
    """Shell completion of paper ids: the registry's ids that start with what was typed."""
    from papercli.registry import Registry

    try:
        papers = Registry.load().papers
    except Exception:  # completion must never print a traceback into the shell
        return []
    low = incomplete.lower()
    return sorted(p.id for p in papers if p.id.startswith(low))


PaperId = Annotated[
    str,
    typer.Argument(metavar="ID", help="Id, alias or arXiv id.", autocompletion=complete_ids),
]
PaperIds = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="ID...", help="Papers (ids, aliases or arXiv ids).", autocompletion=complete_ids
    ),
]


def _selected(reg, paper_ids: list[str] | None, all_papers: bool) -> list:
    """The papers named on the command line, or with --all every paper in id order."""
    if all_papers == bool(paper_ids):
        raise UsageError("give paper ids or --all (not both)")
    if all_papers:
        return sorted(reg.papers, key=lambda p: p.id)
    return [reg.get(i) for i in paper_ids or []]


def _key_format() -> str:
    """The configured citation-key format, checked (a bad one is a one-line error)."""
    from papercli import config
    from papercli.bibtex import check_key_format

    return check_key_format(config.get("citekey_format"))


class Field(StrEnum):
    language = "language"
    vision = "vision"
    general = "general"


class ExportFormat(StrEnum):
    bibtex = "bibtex"
    biblatex = "biblatex"
    csl_json = "csl-json"
    json = "json"


class SortKey(StrEnum):
    year = "year"
    title = "title"
    id = "id"


# ----------------------------------------------------------------------------- light commands
@command("list")
def list_papers(
    field: Annotated[Field | None, typer.Option("--field", "-f", help="Only this field.")] = None,
    tag: Annotated[
        str | None, typer.Option("--tag", "-t", help="Only papers with this tag.")
    ] = None,
    year: Annotated[int | None, typer.Option("--year", help="Only this year.")] = None,
    since: Annotated[int | None, typer.Option("--since", help="Only this year and later.")] = None,
    sort: Annotated[SortKey, typer.Option("--sort", help="Sort order.")] = SortKey.year,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
) -> None:
    """List the papers in the registry."""
    from papercli.registry import sort_papers

    if year is not None and since is not None:
        raise UsageError("--year and --since exclude each other")
    papers = _registry(light=True).filter(
        field=field.value if field else None, tag=tag, year=year, since=since
    )
    papers = sort_papers(papers, sort.value)
    if as_json:
        render.print_json(
            [
                {
                    "id": p.id,
                    "title": p.title,
                    "year": p.year,
                    "date": p.date,
                    "field": p.field,
                    "arxiv": p.arxiv,
                    "tags": p.tags,
                    "authors": p.authors,
                }
                for p in papers
            ]
        )
        return
    render.paper_list(papers)


def _local_extras(paper) -> dict[str, str]:
    """What `fetch` cached for this paper (the arXiv abstract, the PDF's path) and its notes."""
    from papercli import cache
    from papercli.notes import read_notes

    extras = cache.extras_for(paper)
    notes = read_notes(paper.id)
    if notes:
        extras["Notes"] = notes
    return extras


@command("summary")
def summary(paper_id: PaperId) -> None:
    """Show a paper's summary, key points and claims."""
    from papercli.registry import full_paper

    paper = full_paper(_registry(light=True).get(paper_id))
    render.paper_summary(paper, _local_extras(paper))


@command("show")
def show(
    paper_id: PaperId,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show every field of a paper."""
    from papercli.registry import full_paper

    paper = full_paper(_registry(light=True).get(paper_id))
    extras = _local_extras(paper)
    if as_json:
        data = paper.to_dict()
        data["local"] = extras
        render.print_json(data)
        return
    render.paper_detail(paper, extras)


@command("search")
def search(
    query: Annotated[
        list[str],
        typer.Argument(
            help='Words (bm25-ranked), "a phrase", prefix*, filters author:he title:… tag:… '
            "field:… year:2017..2020 arxiv:…; a leading - negates one (then put the "
            "query after --: search -- gan -tag:gan).",
        ),
    ],
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="Most results shown.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Search titles, authors, abstracts, summaries, tags and the text of fetched PDFs."""
    from papercli.search import search as run_search

    text = " ".join(query)
    hits = run_search(_registry(light=True), text, limit=limit)
    if as_json:
        render.print_json([h.to_dict() for h in hits])
        return
    if not hits:
        render.error(f"no paper matches '{text}'")
        raise typer.Exit(1)
    render.search_results(hits)


@command("bib")
def bib(
    paper_ids: PaperIds = None,
    all_papers: Annotated[bool, typer.Option("--all", help="Export every paper.")] = False,
) -> None:
    """Print BibTeX entries."""
    from papercli.bibtex import bibliography

    reg = _registry()
    papers = _selected(reg, paper_ids, all_papers)
    sys.stdout.write(bibliography(papers, _key_format()))


@command("validate")
def validate(
    path: Annotated[
        Path | None, typer.Argument(help="A registry folder or file (default: all registries).")
    ] = None,
) -> None:
    """Check registry files: schema, unknown fields, duplicates, file names, recipes.

    Without PATH: the bundled and your own registry, merged as every command reads them. With
    PATH: that folder or file layered over the bundled registry, as if it were your own."""
    from papercli import paths
    from papercli.registry import load_layers
    from papercli.reproduce.catalog import recipe_names

    bundled = paths.bundled_registry()
    if path is None:
        layers = [bundled, paths.user_registry()]
    elif not path.exists():
        raise UsageError(f"no such file or folder: {path}")
    elif bundled.resolve() in (path.resolve(), path.resolve().parent):
        layers = [path]  # the bundled registry (or a file of it) checked on its own
    else:
        layers = [bundled, path]
    loaded = load_layers(layers, recipe_names())
    problems = loaded.problems
    checked = sum(loaded.files) if path is None else loaded.files[-1]
    for problem in problems:
        sys.stdout.write(f"{problem}\n")
    if problems:
        render.error(f"{len(problems)} problem(s) in {checked} file(s)")
        raise typer.Exit(1)
    render.info(f"ok: {checked} file(s) valid")


# ----------------------------------------------------------------------------- arXiv
@command("fetch")
def fetch(
    paper_ids: Annotated[
        list[str] | None, typer.Argument(metavar="ID...", help="Papers to fetch.")
    ] = None,
    all_papers: Annotated[bool, typer.Option("--all", help="Every paper in the registry.")] = False,
    pdf: Annotated[bool, typer.Option("--pdf/--no-pdf", help="Download PDFs too.")] = True,
    force: Annotated[
        bool, typer.Option("--force", help="Download PDFs again even if present.")
    ] = False,
) -> None:
    """Refresh arXiv metadata (batched) and download PDFs into $PAPERCLI_HOME."""
    from papercli.arxiv import Client
    from papercli.library import fetch_papers

    reg = _registry()
    papers = _selected(reg, paper_ids, all_papers)
    client = Client()
    with render.download_progress() as progress:
        results = fetch_papers(papers, client, pdf=pdf, force=force, progress=progress)
    render.table(
        ("id", "metadata", "pdf"),
        [(r.paper.id, r.metadata, r.pdf) for r in results],
        styles=("cyan", None, None),
    )
    failed = [r for r in results if not r.ok]
    render.info(
        f"{len(results) - len(failed)} ok, {len(failed)} failed; {client.api_calls} arXiv API call(s)"
    )
    if failed:
        raise typer.Exit(1)


@command("add")
def add(
    arxiv_id: Annotated[
        str | None,
        typer.Argument(metavar="[ARXIV_ID_OR_URL]", help="2010.11929, arXiv:…, an abs/pdf URL."),
    ] = None,
    doi: Annotated[
        str | None, typer.Option("--doi", help="Add by DOI from Crossref instead of arXiv.")
    ] = None,
    field: Annotated[
        Field | None,
        typer.Option("--field", "-f", help="Field (default: from the arXiv category)."),
    ] = None,
    slug: Annotated[
        str | None, typer.Option("--id", help="Paper id (default: from the title).")
    ] = None,
    tags: Annotated[
        list[str] | None, typer.Option("--tag", "-t", help="A tag; repeat for more.")
    ] = None,
) -> None:
    """Add a paper from arXiv (or Crossref, with --doi) to your own registry."""
    if (arxiv_id is None) == (doi is None):
        raise UsageError("give an arXiv id or --doi (one of them)")
    _key_format()
    reg = _registry()
    if doi is not None:
        from papercli import crossref
        from papercli.library import create_paper

        norm = crossref.normalize_doi(doi)
        for p in reg.papers:
            if p.doi and p.doi.lower() == norm:
                raise UsageError(f"DOI {norm} is already in the registry as '{p.id}'")
        work = crossref.fetch_work(norm)
        data = crossref.registry_data(work, field=field.value if field else None, tags=tags or [])
        header = f"# Added by papercli from Crossref, DOI {norm}; edit freely.\n"
        path = create_paper(
            data, reg, slug=slug, header=header, what=f"Crossref's record for {norm}"
        )
    else:
        from papercli.arxiv import Client
        from papercli.library import add_from_arxiv

        path = add_from_arxiv(
            arxiv_id,
            Client(),
            reg,
            field=field.value if field else None,
            slug=slug,
            tags=tags or [],
        )
    render.info(f"added {path.stem}: {path}")


@command("import")
def import_bibtex(
    bib_file: Annotated[Path, typer.Argument(metavar="FILE.bib", help="A BibTeX file.")],
    field: Annotated[
        Field, typer.Option("--field", "-f", help="Field of the papers added.")
    ] = Field.general,
    tags: Annotated[
        list[str] | None, typer.Option("--tag", "-t", help="A tag for every paper added.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Import a BibTeX file: arXiv ids recognised, duplicates merged, a report of what happened."""
    from papercli.bibimport import import_bib

    _key_format()
    report = import_bib(bib_file, _registry(), field_name=field.value, tags=tags or [])
    if as_json:
        render.print_json(report.to_dict())
        return
    rows = [("added", a["key"], a["id"]) for a in report.added]
    rows += [("merged", m["key"], f"into {m['into']} ({m['why']})") for m in report.merged]
    rows += [("skipped", s["key"], s["why"]) for s in report.skipped]
    render.table(("result", "entry", "detail"), rows, styles=("bold", "cyan", None))
    render.info(
        f"{len(report.added)} added, {len(report.merged)} merged, {len(report.skipped)} skipped"
    )


# ----------------------------------------------------------------------------- your library
@command("tag", context_settings={"ignore_unknown_options": True})
def tag(
    paper_id: PaperId,
    changes: Annotated[
        list[str], typer.Argument(metavar="+TAG|-TAG...", help="+a adds, -b removes.")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print the tags as JSON.")] = False,
) -> None:
    """Add and remove tags: `papercli tag resnet +read -todo`."""
    from papercli.edits import change_tags, parse_tag_changes

    add_tags, remove_tags = parse_tag_changes(changes)
    paper = _registry().get(paper_id)
    new, path, override = change_tags(paper, add_tags, remove_tags)
    if as_json:
        render.print_json({"id": new.id, "tags": new.tags, "file": str(path), "override": override})
        return
    if override:
        render.info(f"'{new.id}' is a bundled paper: copied it to {path} as your override")
    render.info(f"{new.id}: tags {', '.join(new.tags) or '(none)'}")


@command("note")
def note(paper_id: PaperId) -> None:
    """Open the paper's Markdown notes in your editor; `show` and `summary` print them."""
    from papercli.notes import edit_notes

    path, what = edit_notes(_registry().get(paper_id))
    render.info(f"notes {what}: {path}" if what != "empty" else f"notes removed (empty): {path}")


@command("edit")
def edit(paper_id: PaperId) -> None:
    """Open the paper's YAML in your editor; saved only if it still validates."""
    from papercli.edits import edit_file
    from papercli.notes import run_editor

    path, what = edit_file(_registry().get(paper_id), run_editor)
    render.info(f"{what}: {path}")


@command("rm")
def remove(
    paper_id: PaperId,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print what was removed as JSON.")
    ] = False,
) -> None:
    """Remove a paper of your own registry (bundled papers cannot be removed)."""
    from papercli.edits import remove as remove_paper

    reg = _registry()
    paper = reg.get(paper_id)
    path = remove_paper(paper)
    bundled = _bundled_file(paper.id)  # removing an override brings the bundled paper back
    if as_json:
        render.print_json(
            {"id": paper.id, "removed": str(path), "bundled": str(bundled) if bundled else None}
        )
        return
    render.info(f"removed {paper.id}: {path}")
    if bundled:
        render.info(f"that was your override: the bundled '{paper.id}' ({bundled}) is back")


def _bundled_file(paper_id: str) -> Path | None:
    from papercli import paths

    path = paths.bundled_registry() / f"{paper_id}.yaml"
    return path if path.is_file() else None


@command("export")
def export_papers(
    paper_ids: PaperIds = None,
    all_papers: Annotated[bool, typer.Option("--all", help="Export every paper.")] = False,
    fmt: Annotated[
        ExportFormat, typer.Option("--format", "-F", help="Output format.")
    ] = ExportFormat.bibtex,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file (atomically).")
    ] = None,
) -> None:
    """Export papers as BibTeX, BibLaTeX, CSL-JSON or JSON."""
    from papercli.export import export
    from papercli.paths import atomic_write_text

    reg = _registry()
    papers = _selected(reg, paper_ids, all_papers)
    text = export(papers, fmt.value, _key_format())
    if output is None:
        sys.stdout.write(text)
        return
    try:
        atomic_write_text(output, text)
    except OSError as exc:
        raise UsageError(f"cannot write {output}: {exc.strerror or exc}") from None
    render.info(f"wrote {len(papers)} paper(s) to {output}")


@command("config")
def show_config(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Where the config file is, and every setting with where its value comes from."""
    from papercli import config

    path = config.config_path()
    values = config.effective()
    if as_json:
        render.print_json({"file": str(path), "exists": path.is_file(), "settings": values})
        return
    render.info(f"config file: {path}" + ("" if path.is_file() else " (not created yet)"))
    render.table(
        ("setting", "value", "from"),
        [(k, v["value"], v["source"]) for k, v in values.items()],
        styles=("cyan", None, "dim"),
    )


@command("path")
def pdf_path(
    paper_id: Annotated[str, typer.Argument(metavar="ID")],
    fetch_first: Annotated[
        bool, typer.Option("--fetch", help="Download the PDF if it is missing.")
    ] = False,
) -> None:
    """Print the local PDF's path (exit 1 if it has not been fetched)."""
    from papercli import cache

    paper = _registry().get(paper_id)
    path = cache.pdf_path(paper.id)
    if not path.is_file():
        if not fetch_first:
            render.error(
                f"no PDF for '{paper.id}' yet: run `papercli fetch {paper.id}` (or pass --fetch)"
            )
            raise typer.Exit(1)
        from papercli.arxiv import Client
        from papercli.library import ensure_pdf

        path = ensure_pdf(paper, Client())
    sys.stdout.write(f"{path}\n")


@command("open")
def open_pdf(paper_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Open the paper's PDF in the system viewer, fetching it first if needed."""
    from papercli.arxiv import Client
    from papercli.library import ensure_pdf
    from papercli.opener import open_file

    paper = _registry().get(paper_id)
    with render.download_progress() as progress:
        path = ensure_pdf(paper, Client(), progress)
    open_file(path)
    render.info(f"opened {path}")


# ----------------------------------------------------------------------------- reproduce
def _reproduce(
    ctx: typer.Context,
    paper_id: Annotated[str, typer.Argument(metavar="ID", help="Paper id, alias or arXiv id.")],
    **values,
) -> None:
    """Train a paper's recipe and check the paper's claim (exit 0: reproduced, 1: not)."""
    from papercli.reproduce import dispatch
    from papercli.reproduce.options import RunOptions

    def explicit(name: str) -> bool:  # typer vendors click: compare the source by name
        source = ctx.get_parameter_source(name)
        return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT", "PROMPT")

    given = {name for name in values if explicit(name)}
    opts = RunOptions.make(
        {name: values[name] or [] if name == "sets" else values[name] for name in given}
    )
    reg = _registry()
    paper = reg.get(paper_id)
    if opts.dry_run:
        dispatch.require_training_extras()
        command_line = dispatch.build_command(
            dispatch.recipe_module(paper, reg), paper.id, opts, None
        )
        plan = dispatch.dry_run(command_line)
        render.print_json(plan) if opts.json else render.plan_table(plan)
        return
    started = time.time()
    code, run_dir = dispatch.reproduce(paper, reg, opts)
    from papercli.reproduce.claims import read_result

    result = read_result(run_dir) if run_dir is not None else None
    fresh = result is not None and (run_dir / "result.json").stat().st_mtime >= started
    if code in (0, 1) and fresh and not opts.json:
        render.result_table(paper, result)
    raise typer.Exit(code)


class _WithRunOptions:
    """`fn` with one keyword parameter per RunOptions field (the options are declared once).
    The signature is built when Typer first asks for it — only when `reproduce` itself runs or
    shows its help — so other commands never import the options module."""

    def __init__(self, fn):
        functools.update_wrapper(self, fn)
        self._fn = fn

    def __call__(self, *args, **kwargs):
        return self._fn(*args, **kwargs)

    @functools.cached_property
    def __signature__(self):
        import inspect

        from papercli.reproduce.options import RunOptions

        signature = inspect.signature(self._fn, eval_str=True)
        fixed = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
        return signature.replace(parameters=fixed + RunOptions.typer_parameters())


reproduce = command("reproduce")(_WithRunOptions(_reproduce))


@command("recipes")
def recipes(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Papers that have a recipe, their scales, setups and the data each needs."""
    from papercli.reproduce import catalog, dispatch

    dispatch.require_training_extras()
    rows = catalog.describe(_registry())
    if as_json:
        render.print_json(rows)
        return
    render.table(
        ("paper", "scale", "setup", "data"),
        [
            (r["paper"] if r["scale"] == "mini" else "", r["scale"], r["setup"], r["data"])
            for r in rows
        ],
        styles=("cyan", "magenta", None, "dim"),
    )


@command("runs")
def runs(
    paper_id: Annotated[
        str | None, typer.Argument(metavar="[ID]", help="Only runs of this paper.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List past reproduction runs with their verdicts."""
    from papercli.reproduce.runs import list_runs

    paper = _registry().get(paper_id).id if paper_id else None
    found = list_runs(paper)
    if as_json:
        render.print_json(found)
        return
    rows = [
        (r["name"], r["paper"], r["scale"], r["device"], r["steps"], r["seconds"], r["verdict"])
        for r in found
    ]
    render.table(
        ("run", "paper", "scale", "device", "steps", "seconds", "verdict"),
        rows,
        styles=("cyan", None, "magenta", None, None, None, "bold"),
    )


@command("doctor")
def doctor() -> None:
    """Report torch, CUDA devices, torchrun, and the data sets each recipe needs."""
    from papercli.reproduce.doctor import report

    rows, ok = report(_registry())
    render.table(("check", "status", "detail"), rows, styles=("cyan", None, "dim"))
    if not ok:
        raise typer.Exit(1)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
