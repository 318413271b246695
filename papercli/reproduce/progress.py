"""Training progress: a Rich bar on a terminal, plain periodic lines otherwise (logs, CI)."""

from __future__ import annotations

import sys


class Progress:
    def __init__(self, total: int, start: int, enabled: bool, log_every: int, unit: str):
        self.total, self.enabled, self.log_every, self.unit = (
            total,
            enabled,
            max(1, log_every),
            unit,
        )
        self._bar = None
        if enabled and sys.stderr.isatty():
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("[bold]train"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                transient=False,
            )
            self._task = self._bar.add_task("train", total=total, completed=start, info="")
            self._bar.start()

    def update(self, step: int, loss: float, throughput: float, eta: float) -> None:
        if not self.enabled:
            return
        info = f"loss {loss:.4f}  {throughput:.1f} {self.unit}/s"
        if self._bar is not None:
            self._bar.update(self._task, completed=step, info=info)
        elif step % self.log_every == 0 or step == self.total:
            print(f"step {step}/{self.total}  {info}  eta {eta:.0f}s", file=sys.stderr, flush=True)

    def note(self, text: str) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.console.print(text)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
