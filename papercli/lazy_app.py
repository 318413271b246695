"""A Typer app whose commands become click commands only when one is used.

Typer turns every command's signature into click parameters when the app starts; for papercli
that cost more than `papercli list` itself. `LazyTyper` keeps each command as Typer's own record
(`CommandInfo`) and its group converts a command on first access, so running a command converts
that one only. `--help` and shell completion list names and short help from the records, and
"No such command … Did you mean …" sees every name. Use it as `typer.Typer`; the app must have a
callback (`@app.callback()`), which makes Typer build a group.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup
from typer.main import get_command_from_info, get_command_name
from typer.models import CommandInfo


class LazyCommands(MutableMapping[str, Any]):
    """name -> click command, converted from its CommandInfo the first time it is looked up."""

    def __init__(self, convert: Callable[[CommandInfo], Any]) -> None:
        self._entries: dict[str, CommandInfo | Any] = {}
        self._convert = convert
        self._summaries = False

    def add(self, info: CommandInfo) -> None:
        self._entries[info.name or get_command_name(info.callback.__name__)] = info

    def converted(self) -> list[str]:
        return [n for n, e in self._entries.items() if not isinstance(e, CommandInfo)]

    @contextmanager
    def summaries(self) -> Iterator[None]:
        """While listing commands, answer unconverted ones with a help-only stand-in."""
        self._summaries = True
        try:
            yield
        finally:
            self._summaries = False

    def __getitem__(self, name: str) -> Any:
        entry = self._entries[name]
        if not isinstance(entry, CommandInfo):
            return entry
        if self._summaries:
            return _summary(name, entry)
        command = self._entries[name] = self._convert(entry)
        return command

    def __setitem__(self, name: str, command: Any) -> None:
        self._entries[name] = command

    def __delitem__(self, name: str) -> None:
        del self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


def _summary(name: str, info: CommandInfo) -> TyperCommand:
    """What a command listing reads (name, help, short help, hidden, deprecated); no parameters."""
    help_text = inspect.cleandoc(info.help) if info.help else inspect.getdoc(info.callback)
    return TyperCommand(
        name=name,
        help=help_text,
        short_help=info.short_help,
        hidden=info.hidden,
        deprecated=info.deprecated,
    )


class LazyGroup(TyperGroup):
    app: LazyTyper  # set on the per-app subclass that LazyTyper makes

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        app = self.app
        commands = LazyCommands(
            lambda info: get_command_from_info(
                info,
                pretty_exceptions_short=app.pretty_exceptions_short,
                rich_markup_mode=app.rich_markup_mode,
            )
        )
        for info in app.lazy_commands:
            commands.add(info)
        commands.update(self.commands)  # anything Typer built itself (sub-apps)
        self.commands = commands

    def list_commands(self, ctx: Any) -> list[str]:
        return list(self.commands)  # names only: Typer's own version converts every command

    def format_help(self, ctx: Any, formatter: Any) -> None:
        with self.commands.summaries():
            super().format_help(ctx, formatter)

    def shell_complete(self, ctx: Any, incomplete: str) -> list[Any]:
        with self.commands.summaries():
            return super().shell_complete(ctx, incomplete)


class LazyTyper(typer.Typer):
    """typer.Typer whose `command` decorator records the command for LazyGroup to convert later."""

    def __init__(self, **kwargs: Any) -> None:
        self.lazy_commands: list[CommandInfo] = []
        group = type("LazyGroup", (LazyGroup,), {"app": self})
        super().__init__(cls=group, **kwargs)

    def command(self, *args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], Any]:
        register = super().command(*args, **kwargs)

        def decorator(f: Callable[..., Any]) -> Any:
            result = register(f)
            # Typer appended the record; keep it out of the eager conversion in get_group_from_info
            self.lazy_commands.append(self.registered_commands.pop())
            return result

        return decorator
