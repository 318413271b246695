"""Notes on papers (Markdown, one file per paper) and the editor that `note` and `edit` open.

Notes live in $PAPERCLI_HOME/registry/notes/<id>.md, beside the user's papers folder, so that
bundled papers can have notes too and copying PAPERCLI_HOME keeps them with the registry.
"""

from __future__ import annotations

import os
from pathlib import Path

from papercli import paths
from papercli.errors import UsageError, preview
from papercli.registry import Paper


def notes_dir() -> Path:
    return paths.home() / "registry" / "notes"


def notes_path(paper_id: str) -> Path:
    return notes_dir() / f"{paper_id}.md"


def read_notes(paper_id: str) -> str | None:
    try:
        text = notes_path(paper_id).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    return text.strip() or None


def editor_command() -> list[str]:
    """PAPERCLI_EDITOR, else the config file's `editor`, else $VISUAL, $EDITOR, vi."""
    import shlex  # here and below: `show` and `summary` read notes and never start an editor

    from papercli import config

    raw = (
        config.get("editor") or os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    ).strip()
    try:
        argv = shlex.split(raw)
    except ValueError as exc:
        raise UsageError(f"editor '{preview(raw)}' cannot be parsed: {exc}") from None
    if not argv:
        raise UsageError("the editor setting is empty")
    return argv


def run_editor(path: Path) -> None:
    """Open `path` in the user's editor and wait; an editor that fails is a one-line error."""
    import subprocess

    argv = editor_command()
    try:
        code = subprocess.run([*argv, str(path)], check=False).returncode
    except OSError as exc:
        raise UsageError(
            f"cannot start editor '{preview(argv[0])}': {exc.strerror or exc}"
        ) from None
    if code != 0:
        raise UsageError(f"editor '{preview(argv[0])}' exited with status {code}; nothing changed")


def edit_notes(paper: Paper) -> tuple[Path, str]:
    """Open the paper's notes in the editor (a new file starts with the title as a heading).
    Returns the file and what happened: 'created', 'updated', 'unchanged' or 'empty'."""
    path = notes_path(paper.id)
    before = path.read_text(encoding="utf-8") if path.is_file() else None
    template = f"# {paper.title}\n\n"
    draft = notes_dir() / f".{paper.id}.editing.md"  # edit a copy: the real file changes atomically
    paths.atomic_write_text(draft, before if before is not None else template)
    try:
        run_editor(draft)
        after = draft.read_text(encoding="utf-8")
    finally:
        draft.unlink(missing_ok=True)
    if after == before or (before is None and after.strip() == template.strip()):
        return path, "unchanged"
    if not after.strip():
        path.unlink(missing_ok=True)
        return path, "empty"
    paths.atomic_write_text(path, after)
    return path, "created" if before is None else "updated"
