"""The workspace writer lock: one long-running writer (a training round, an import) at a time.

SQLite already serialises individual transactions; this lock is for whole commands that must not
interleave (two ``train`` runs appending rounds to one workspace). It is ``fcntl.flock`` on a lock
file: the kernel drops it when the holder dies, even by SIGKILL, so a crash never leaves a stale
lock. The holder writes its pid and command line into the file so a waiting process can say who
holds it.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from pathlib import Path

from .errors import WorkspaceError

_POLL_S = 0.05
DEFAULT_TIMEOUT_S = 10.0


def lock_timeout() -> float:
    """How long a command waits for the writer lock: ``$SEGLEARN_LOCK_TIMEOUT`` seconds, else 10."""
    raw = os.environ.get("SEGLEARN_LOCK_TIMEOUT", "").strip()
    if not raw:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value >= 0:  # also rejects nan
        raise WorkspaceError(f"SEGLEARN_LOCK_TIMEOUT={raw!r} must be a number of seconds >= 0")
    return value


def _holder(path: Path) -> tuple[str, str]:
    try:
        info = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        info = {}
    return str(info.get("pid", "unknown")), str(info.get("command", "unknown"))


class WriterLock:
    """An exclusive, re-entrant (per object) writer lock on ``lock_path``.

    acquire(timeout) polls a non-blocking ``flock`` until ``timeout`` seconds have passed, then raises
    ``WorkspaceError`` naming the workspace and the holder's pid and command.
    """

    def __init__(self, lock_path: Path, workspace: Path):
        self.path = Path(lock_path)
        self.workspace = Path(workspace)
        self._fd: int | None = None
        self._depth = 0

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, timeout: float = 10.0) -> None:
        if timeout < 0:
            raise ValueError(f"lock timeout must be >= 0 seconds, got {timeout}")
        if self._fd is not None:
            self._depth += 1
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + timeout
        told = False
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        pid, cmd = _holder(self.path)
                        raise WorkspaceError(
                            f"workspace {self.workspace} is busy: another seglearn process (pid {pid}, "
                            f"command {cmd}) holds the writer lock; wait for it to finish or stop it, "
                            f"then retry (waited {timeout:g} s)") from None
                    if not told:  # say why the command seems to hang
                        told = True
                        pid, cmd = _holder(self.path)
                        print(f"waiting up to {timeout:g} s for workspace {self.workspace}: another "
                              f"seglearn process (pid {pid}, command {cmd}) holds the writer lock",
                              file=sys.stderr, flush=True)
                    time.sleep(_POLL_S)
                except OSError as exc:  # e.g. ENOLCK on a network filesystem without flock
                    raise WorkspaceError(f"cannot lock workspace {self.workspace} ({self.path}): {exc}; "
                                         "put the workspace on a local disk") from exc
            info = {"pid": os.getpid(), "command": " ".join([Path(sys.executable).name, *sys.argv])}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode("utf-8"), 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd, self._depth = fd, 1

    def release(self) -> None:
        if self._fd is None:
            raise RuntimeError("writer lock released more often than acquired")
        self._depth -= 1
        if self._depth:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)  # the holder info is stale from here on
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


class UseLock:
    """A lock on the workspace *folder* (``flock`` on its directory fd) that says "in use".

    Every open ``Workspace`` holds it shared for its whole life, so a ``train`` that takes the
    writer lock only in short bursts still counts as using the workspace between them.
    ``seglearn init --force`` claims it exclusively (never waiting) before replacing a workspace:
    it fails while any seglearn process has the workspace open, and while it is held no process can
    open the workspace being replaced. The kernel drops it when the holder dies. On a filesystem
    without ``flock`` on folders the guard is skipped (opening a workspace must still work there).
    """

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._fd: int | None = None

    def _lock(self, mode: int) -> bool:
        fd = os.open(self.folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except OSError:  # e.g. ENOLCK: no guard here, but no failure either
            pass
        self._fd = fd
        return True

    def share(self) -> None:
        if not self._lock(fcntl.LOCK_SH):
            raise WorkspaceError(f"workspace {self.folder} is being replaced right now (`seglearn "
                                 "init --force`); run the command again when that has finished")

    def claim(self) -> None:
        if not self._lock(fcntl.LOCK_EX):
            raise WorkspaceError(f"refusing to replace workspace {self.folder}: another seglearn "
                                 "process has it open (a train, select, label ... still running); "
                                 "wait for it to finish or stop it, then retry")

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the last fd drops the flock

    __del__ = release
