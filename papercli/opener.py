"""Open a file with the system's viewer. PAPERCLI_OPENER overrides the command (tests, odd desktops)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from papercli.errors import PapercliError


def open_file(path: Path) -> None:
    override = os.environ.get("PAPERCLI_OPENER")
    if override:
        command = [*shlex.split(override), str(path)]
    elif sys.platform == "darwin":
        command = ["open", str(path)]
    elif sys.platform == "win32":  # pragma: no cover - not run in CI
        os.startfile(path)  # type: ignore[attr-defined]
        return
    else:
        opener = shutil.which("xdg-open")
        if opener is None:
            raise PapercliError(f"no PDF viewer found (xdg-open is missing); the PDF is at {path}")
        command = [opener, str(path)]
    try:
        completed = subprocess.run(
            command, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
    except OSError as exc:
        raise PapercliError(
            f"cannot start '{command[0]}': {exc.strerror}; the PDF is at {path}"
        ) from None
    if completed.returncode != 0:
        raise PapercliError(
            f"'{command[0]}' exited with {completed.returncode}; the PDF is at {path}"
        )
