"""SHA-256 of bytes and files: the one hashing helper of seglearn (images at ``init``, label files,
the v2 checksum backfill).

``file_digest`` also returns the file's size and ``st_mtime_ns`` taken from the same open file
descriptor, before and after reading: if either changed while it was being hashed, the file is
hashed again, so the (size, mtime) stamp stored next to a hash always describes the bytes that were
hashed. The stamp lets a later read skip the hash when neither changed (``Workspace.image_file``).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

CHUNK = 1 << 20
_RETRIES = 3


@dataclass(frozen=True)
class FileDigest:
    sha256: str
    size: int
    mtime_ns: int


def bytes_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_digest(path: str | os.PathLike) -> FileDigest:
    """SHA-256, size and mtime_ns of one file (OSError if it cannot be read).

    Retried (up to 3 times) while a writer is changing the file under us; after that the last
    hash is returned with the stamp seen *before* it, which can only cause an extra hash later.
    """
    with open(path, "rb") as f:
        for _ in range(_RETRIES):
            before = os.fstat(f.fileno())
            f.seek(0)
            h = hashlib.sha256()
            for chunk in iter(lambda: f.read(CHUNK), b""):
                h.update(chunk)
            after = os.fstat(f.fileno())
            if (before.st_size, before.st_mtime_ns) == (after.st_size, after.st_mtime_ns):
                break
    return FileDigest(h.hexdigest(), int(before.st_size), int(before.st_mtime_ns))


def file_sha256(path: str | os.PathLike) -> str:
    return file_digest(path).sha256
