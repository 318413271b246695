"""The project's own error types. The CLI turns each into one line on stderr and an exit code."""

from __future__ import annotations


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
        message = " ".join(message.split())  # one line, whatever the YAML library printed
        if field is not None:  # a key may hold newlines or control characters: show them escaped
            field = field.encode("unicode_escape").decode("ascii")
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
        super().__init__(f"unknown paper '{query}'{hint}")
