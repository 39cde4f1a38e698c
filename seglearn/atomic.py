"""Atomic file output: every file seglearn writes goes through here.

``write_bytes(path, data)`` writes ``data`` to a temp file in ``path``'s folder (so the rename
cannot cross filesystems), fsyncs it, ``os.replace``s it over ``path`` and fsyncs the folder, so
a reader (or a crash) sees the old file or the new one, never half of one. On *every* failure path
(an error, Ctrl-C, a full disk) the temp file is removed: a failed write never leaves a multi-MB
``*.tmp`` that keeps the disk full. A full disk or exhausted quota (``ENOSPC``/``EDQUOT``, raised
by the write, the fsync or the close) becomes :class:`DiskFullError`, whose message names the
device and the file: "no space left on /dev/sda1 (mounted at /data) while writing /data/ws/...".

``output(path)`` is the same for writers that want a file object (zipfile, csv, matplotlib,
torch.save): they write into memory, and the bytes go through ``write_bytes`` when the block ends
without an error. The outputs seglearn writes (checkpoints, models, masks, reports) are a few MB,
so holding one in memory costs little and keeps a single write path.

Standard library only: the integer runtime (``seglearn.runtime``) imports it too.
"""

from __future__ import annotations

import errno
import io
import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

_FULL = {errno.ENOSPC: "no space left", getattr(errno, "EDQUOT", -1): "disk quota exceeded"}
_CHUNK = 1 << 20


class DiskFullError(OSError):
    """The disk (or the user's quota) filled up while writing a file; nothing was replaced."""

    def __init__(self, message: str, code: int = errno.ENOSPC):
        super().__init__(message)
        self.errno = code  # still an ENOSPC/EDQUOT OSError for code that checks errno


def device_of(folder: str | os.PathLike) -> str:
    """How to name the filesystem holding ``folder``: ``"/dev/sda1 (mounted at /data)"``.

    The mount point is the highest ancestor on the same device (``st_dev``); its source comes from
    ``/proc/self/mounts`` where there is one, else the device number is given.
    """
    p = Path(folder).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        dev = p.stat().st_dev
        mount = p
        while mount != mount.parent and mount.parent.stat().st_dev == dev:
            mount = mount.parent
    except OSError:
        return f"the filesystem of {folder}"
    source = None
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) >= 2 and parts[1].replace("\\040", " ") == str(mount):
                    source = parts[0]  # the last match is the mount on top
    except OSError:
        pass
    if source is None:
        source = f"device {os.major(dev)}:{os.minor(dev)}"
    return f"{source} (mounted at {mount})"


def full_error(exc: OSError, path: str | os.PathLike) -> DiskFullError | None:
    """``DiskFullError`` for an ENOSPC/EDQUOT ``exc`` met while writing ``path``, else None."""
    what = _FULL.get(exc.errno)
    if what is None:
        return None
    path = Path(path)
    return DiskFullError(f"{what} on {device_of(path.parent)} while writing {path}; the partial file "
                         "was removed and nothing was replaced: free some space and run the "
                         "command again", exc.errno)


def fsync_dir(folder: str | os.PathLike) -> None:
    """fsync a folder, so the renames in it survive a power cut."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_name(path: Path) -> Path:
    """The temp file ``write_bytes`` uses for ``path``: hidden, beside it, unique per call."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")


def write_bytes(path: str | os.PathLike, data: bytes, sync_dir: bool = True) -> Path:
    """Atomically replace ``path`` with ``data`` (temp + fsync + rename); returns ``path``.

    ``sync_dir=False`` leaves the folder fsync to the caller (one fsync after many files).
    Raises DiskFullError when the disk is full; the temp file never survives a failure.
    """
    path = Path(path)
    if path.is_dir():  # os.replace would fail only after the whole file was written
        raise IsADirectoryError(errno.EISDIR, "is a folder, not a file name", str(path))
    tmp = temp_name(path)
    view = memoryview(data).cast("B")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            for start in range(0, len(view), _CHUNK):
                chunk = view[start:start + _CHUNK]
                while chunk:  # os.write may write less than asked
                    chunk = chunk[os.write(fd, chunk):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        if sync_dir:
            fsync_dir(path.parent)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError):
            full = full_error(exc, path)
            if full is not None:
                raise full from exc
        raise
    return path


def write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """``write_bytes`` of ``text`` encoded."""
    return write_bytes(path, text.encode(encoding))


@contextmanager
def output(path: str | os.PathLike, sync_dir: bool = True) -> Iterator[io.BytesIO]:
    """``with output(p) as fh: writer(fh)``: the bytes written to ``fh`` replace ``p`` atomically
    when the block ends without an error (an error leaves ``p`` and its folder as they were)."""
    buf = io.BytesIO()
    yield buf
    write_bytes(path, buf.getbuffer(), sync_dir=sync_dir)
