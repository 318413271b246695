"""The user's settings: a small TOML file, overridden key by key by environment variables.

Where: $PAPERCLI_CONFIG, else `config.toml` in platformdirs' user_config_dir("papercli").
Read with the standard library's tomllib; a missing file means every default. Only the few
settings that need a home live here (docs/guide.md, "Settings"):

    citekey_format = "{author}{year}{title_word}"
    editor = "nano"
    arxiv_api_url = "https://export.arxiv.org/api/query"
    arxiv_pdf_url = "https://arxiv.org/pdf"
    crossref_url = "https://api.crossref.org/works"
    mailto = "you@example.org"     # sent to Crossref in the User-Agent (its "polite pool")
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from papercli.errors import UsageError, preview


@dataclass(frozen=True)
class Setting:
    key: str
    env: str  # the environment variable that overrides the file
    default: str
    help: str


SETTINGS = (
    Setting(
        "citekey_format",
        "PAPERCLI_CITEKEY_FORMAT",
        "{author}{year}{title_word}",
        "citation keys stored by add/import",
    ),
    Setting("editor", "PAPERCLI_EDITOR", "", "editor for note/edit (else $VISUAL, $EDITOR, vi)"),
    Setting(
        "arxiv_api_url",
        "PAPERCLI_ARXIV_API_URL",
        "https://export.arxiv.org/api/query",
        "arXiv API endpoint",
    ),
    Setting("arxiv_pdf_url", "PAPERCLI_ARXIV_PDF_URL", "https://arxiv.org/pdf", "arXiv PDFs"),
    Setting(
        "crossref_url",
        "PAPERCLI_CROSSREF_URL",
        "https://api.crossref.org/works",
        "Crossref REST API works endpoint (add --doi)",
    ),
    Setting("mailto", "PAPERCLI_MAILTO", "", "contact address sent to Crossref"),
)
_BY_KEY = {s.key: s for s in SETTINGS}


def config_path() -> Path:
    env = os.environ.get("PAPERCLI_CONFIG")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_config_dir

    return Path(user_config_dir("papercli", appauthor=False)) / "config.toml"


def read_file(path: Path | None = None) -> dict[str, str]:
    """The settings the file sets. Unknown keys and non-string values are errors, one line."""
    import tomllib

    path = path or config_path()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise UsageError(f"cannot read config {path}: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"config {path}: {preview(exc, 200)}") from None
    for key, value in data.items():
        if key not in _BY_KEY:
            known = ", ".join(_BY_KEY)
            raise UsageError(f"config {path}: unknown setting '{preview(key)}' (known: {known})")
        if not isinstance(value, str):
            raise UsageError(f"config {path}: {key} must be a string")
    return data


def effective() -> dict[str, dict[str, str]]:
    """Every setting with its value and where it came from: env, file or default."""
    from_file = read_file()
    out = {}
    for s in SETTINGS:
        if os.environ.get(s.env):
            out[s.key] = {"value": os.environ[s.env], "source": f"env {s.env}"}
        elif s.key in from_file:
            out[s.key] = {"value": from_file[s.key], "source": "file"}
        else:
            out[s.key] = {"value": s.default, "source": "default"}
    return out


def get(key: str) -> str:
    """One setting: its environment variable, else the file, else the default."""
    setting = _BY_KEY[key]
    env = os.environ.get(setting.env)
    if env:
        return env
    return read_file().get(key, setting.default)
