"""The one error type the data layer raises, and a safe way to print any file name in it."""

from __future__ import annotations

import os
from pathlib import Path


class DataError(ValueError):
    """Bad or unreadable input data. The message names the file and the problem in one paragraph."""


def display_path(path: str | os.PathLike) -> str:
    """``path`` as printable text, even when its bytes are not valid UTF-8.

    On POSIX, undecodable bytes of a file name arrive as lone surrogates (PEP 383 surrogateescape);
    printing or storing such a str in SQLite raises UnicodeEncodeError, so they are shown as ``\\xNN``.
    """
    raw = os.fsencode(os.fspath(path))
    return raw.decode("utf-8", errors="backslashreplace")


def display_name(path: str | os.PathLike) -> str:
    """The file name (no folders) of ``path``, printable like :func:`display_path`."""
    return display_path(Path(os.fspath(path)).name)


def files_ending(folder: str | os.PathLike, endings: tuple[str, ...], what: str,
                 none_found: str) -> list[Path]:
    """The regular, non-hidden files directly in ``folder`` whose lower-case name ends with one of
    ``endings``, sorted. DataError naming the folder when it is missing, not a folder, or has none
    (``"<what> folder F contains no <none_found>"``)."""
    folder = Path(os.fspath(folder))
    where = display_path(folder)
    if not folder.is_dir():
        raise DataError(f"{what} folder {where} "
                        f"{'is not a folder' if folder.exists() else 'does not exist'}")
    found = sorted(p for p in folder.iterdir()
                   if p.is_file() and not p.name.startswith(".")
                   and p.name.lower().endswith(endings))
    if not found:
        raise DataError(f"{what} folder {where} contains no {none_found}")
    return found
