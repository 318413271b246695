"""One run at a time per run directory: an exclusive `flock` on `<run dir>/.lock`.

The kernel drops a flock when its holder dies, however it dies, so a lock left by a killed run is
recovered by simply taking it again; the file only records the holder's PID for the error message.
Torch-free: `papercli reproduce` takes the lock before it starts the training process, which
inherits the locked descriptor (so the lock outlives a killed papercli) and is told so through
PAPERCLI_RUN_LOCK_HELD; a recipe started directly takes it itself.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from papercli.errors import PapercliError

LOCK_NAME = ".lock"
HELD_ENV = "PAPERCLI_RUN_LOCK_HELD"  # the run directory whose lock a parent process holds


class RunLocked(PapercliError):
    exit_code = 1


class RunLock:
    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.path = run_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock (the directory must exist) or raise RunLocked naming the holder's PID."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise RunLocked(
                f"run directory {self.run_dir} is in use by another papercli run (PID {holder}); "
                "wait for it to finish or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    @property
    def fd(self) -> int:
        assert self._fd is not None, "the lock is not held"
        return self._fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock; the file stays (harmless, reused)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def held_by_parent(run_dir: Path) -> bool:
    held = os.environ.get(HELD_ENV)
    return held is not None and Path(held).resolve() == run_dir.resolve()
