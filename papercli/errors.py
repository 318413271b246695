"""The project's own error types. The CLI turns each into one line on stderr and an exit code."""

from __future__ import annotations

MAX_ECHO = 80  # characters of a user-given value an error message repeats
MAX_MESSAGE = 500  # a library's message (YAML, XML) is cut here: one readable line


def preview(value: object, limit: int = MAX_ECHO) -> str:
    """A value the user gave, fit to repeat in a one-line message: whitespace collapsed,
    control characters escaped, and cut at `limit` characters (a 100 KB id stays short)."""
    text = " ".join(str(value).split())
    text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)
    if len(text) > limit:
        return f"{text[:limit]}… ({len(str(value))} characters)"
    return text


class PapercliError(Exception):
    """An error the user can act on; `exit_code` is what the CLI exits with."""

    exit_code = 1


class RegistryError(PapercliError):
    """A registry file that cannot be loaded or does not follow the schema."""

    def __init__(
        self, path: object, message: str, *, field: str | None = None, line: int | None = None
    ):
        self.path = str(path)
        self.field = field
        self.line = line
        message = preview(message, MAX_MESSAGE)  # one line, whatever the YAML library printed
        if field is not None:  # a key may be long or hold control characters: keep it short
            field = preview(field.encode("unicode_escape").decode("ascii"))
            self.field = field
        self.message = message
        where = self.path + (f":{line}" if line else "")
        what = f"{field}: " if field else ""
        super().__init__(f"{where}: {what}{message}")


class UsageError(PapercliError):
    """Bad input on the command line (unknown paper, bad option value)."""

    exit_code = 2


class UnknownPaperError(UsageError):
    def __init__(self, query: str, suggestions: list[str]):
        self.query = query
        self.suggestions = suggestions
        hint = f" — did you mean: {', '.join(suggestions)}?" if suggestions else ""
        super().__init__(f"unknown paper '{preview(query)}'{hint}")
