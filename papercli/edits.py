"""Changing papers in the user registry: tags, whole-file edits, removal, and writing a new entry.

YAML files stay the source of truth and keep their comments and layout: a field is changed by
replacing the span of its value in the text (found with yaml.compose), not by dumping the file
again. Every write is validated first (`check_text`, the one check behind `validate`) and atomic.
A bundled paper is first copied into the user registry as an override, and the caller says so.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from papercli import paths
from papercli.errors import RegistryError, UsageError, preview
from papercli.registry import Paper, check_text


def is_user_paper(paper: Paper) -> bool:
    if paper.source is None:
        return False
    user = paths.user_registry().resolve()
    return paper.source.resolve().parent == user


def user_copy_text(paper: Paper) -> tuple[Path, str, bool]:
    """(the user registry's file for this paper, its text now, whether it is a new override)."""
    if paper.source is None:
        raise UsageError(f"'{paper.id}' has no registry file")
    text = paper.source.read_text(encoding="utf-8")
    target = paths.user_registry() / f"{paper.id}.yaml"
    return target, text, not is_user_paper(paper)


def write_checked(target: Path, text: str) -> Paper:
    """Validate `text` as the registry file `target`, then write it atomically. A text that
    fails is not written: the first problem is raised (one line, with file and line)."""
    paper, problems = check_text(text, target)
    if problems:
        raise problems[0]
    assert paper is not None
    paths.atomic_write_text(target, text)
    return paper


def set_field(text: str, key: str, value: object) -> str:
    """`text` with top-level `key` set to `value` (a flow-style YAML scalar or list); the rest
    of the file, comments included, is left as it was. A missing key is appended."""
    dumped = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=1 << 20)
    dumped = dumped.removesuffix("\n").removesuffix("\n...")  # a scalar ends its document
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if isinstance(root, yaml.MappingNode):
        for key_node, value_node in root.value:
            if key_node.value == key:
                start, end = value_node.start_mark.index, value_node.end_mark.index
                tail = "\n" if text[start:end].endswith("\n") else ""  # block lists eat it
                return text[:start] + dumped + tail + text[end:]
    return text.rstrip("\n") + f"\n{key}: {dumped}\n"


def change_tags(paper: Paper, add: list[str], remove: list[str]) -> tuple[Paper, Path, bool]:
    """Add and remove tags; returns the new paper, its file, and whether an override was made."""
    target, text, override = user_copy_text(paper)
    unknown = [t for t in remove if t not in paper.tags]
    if unknown:
        raise UsageError(f"'{paper.id}' has no tag {', '.join(map(preview, unknown))}")
    tags = [t for t in paper.tags if t not in remove]
    tags += [t for t in dict.fromkeys(add) if t not in tags]
    if tags == paper.tags:
        return paper, paper.source or target, False
    return write_checked(target, set_field(text, "tags", tags)), target, override


def parse_tag_changes(changes: list[str]) -> tuple[list[str], list[str]]:
    """'+a -b c' -> (['a', 'c'], ['b']); tags are lowercase, as the registry stores them."""
    add: list[str] = []
    remove: list[str] = []
    for change in changes:
        sign, name = (change[0], change[1:]) if change[:1] in "+-" else ("+", change)
        name = name.strip().lower()
        if not name or any(c.isspace() or c == "," for c in name):
            raise UsageError(f"'{preview(change)}' is not a tag change (use +tag or -tag)")
        (add if sign == "+" else remove).append(name)
    if not add and not remove:
        raise UsageError("give tag changes: +tag to add, -tag to remove")
    return add, remove


def edit_file(paper: Paper, run_editor) -> tuple[Path, str]:
    """Open a copy of the paper's YAML in the editor; if the result validates, it replaces the
    file (a bundled paper gets a user override); if not, the old file is kept, the edited copy
    is saved for the user, and the error names it. Returns (file, 'updated'|'unchanged'|…)."""
    target, text, override = user_copy_text(paper)
    draft = paths.home() / "edits" / f"{paper.id}.yaml"  # outside the registry: never loaded
    paths.atomic_write_text(draft, text)
    run_editor(draft)
    edited = draft.read_text(encoding="utf-8")
    if edited == text:
        draft.unlink()
        return target, "unchanged"
    try:
        write_checked(target, edited)
    except RegistryError as exc:
        where = f"line {exc.line}: " if exc.line else ""
        field = f"{exc.field}: " if exc.field else ""
        raise UsageError(
            f"not saved, {where}{field}{exc.message}; the old file is kept, your edit is in {draft}"
        ) from None
    draft.unlink()
    return target, "created override" if override else "updated"


def remove(paper: Paper) -> Path:
    """Delete a user paper's file. Bundled papers are refused: they ship with papercli."""
    if not is_user_paper(paper):
        raise UsageError(
            f"'{paper.id}' is a bundled paper and cannot be removed; "
            "`papercli rm` removes papers of your own registry only"
        )
    assert paper.source is not None
    paper.source.unlink()
    return paper.source
