"""Damage to ``seglearn.db``: detect it, name it, never write into it, and back the database up.

SQLite only notices a damaged page when it reads that page, so random bytes over a page the
current command does not touch go unnoticed, and a write could then commit on top of the damage.
Hence:

* ``quick_check`` (``PRAGMA quick_check``: every page's b-tree structure and record format, O(N),
  but no index-versus-table cross-check) runs before the first write of every ``Workspace``, and
  before a schema migration; ``status --check`` runs the full ``PRAGMA integrity_check``;
* every SQLite error meaning "this file is damaged" (SQLITE_CORRUPT, SQLITE_NOTADB), wherever a
  query hits it, becomes a ``DamagedDatabaseError`` whose message names the file and says how to
  recover (``damaged_message``), instead of a bare "database disk image is malformed";
* ``backup`` copies the live database with SQLite's online backup API (``Connection.backup``: a
  consistent snapshot, WAL content included, even while other processes write).

Recovery, as the message says: restore a backup made by ``seglearn backup`` (label files are never
overwritten, so the ones written since the backup are still in ``labels/``), or salvage rows with
the sqlite3 shell's ``.recover``. The ``-wal`` file must stay with the damaged database while
salvaging (it may hold the newest commits) and go when a backup is put in its place.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
from pathlib import Path

from .errors import WorkspaceError
from .labelio import fsync_dir

_CORRUPT_CODES = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
MAX_PROBLEMS = 10  # rows of quick_check / integrity_check kept in a message


class DamagedDatabaseError(WorkspaceError, sqlite3.DatabaseError):
    """The workspace database file is damaged. Still an ``sqlite3.DatabaseError``, so code that
    handles SQLite failures (keep the orphan file, roll back) goes on treating it as one.
    ``detail``: what SQLite said."""

    def __init__(self, db: Path, detail: str):
        super().__init__(damaged_message(db, detail))
        self.db, self.detail = Path(db), detail

    def __reduce__(self):  # picklable (e.g. across a DataLoader worker) despite the two arguments
        return type(self), (self.db, self.detail)


def is_corruption(exc: BaseException) -> bool:
    if isinstance(exc, DamagedDatabaseError):
        return True
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in _CORRUPT_CODES
    text = str(exc)
    return "malformed" in text or "not a database" in text


def recovery_hint(db: Path) -> str:
    db = Path(db)
    return (f"To recover: with no seglearn command running, copy a backup made by `seglearn backup "
            f"{db.parent}` over {db} and delete {db.name}-wal and {db.name}-shm beside it; "
            f"without a backup, salvage what is left with `sqlite3 {db} .recover | sqlite3 "
            f"recovered.db` (keep {db.name}-wal until then: it may hold the newest commits)")


def damaged_message(db: Path, detail: str) -> str:
    return f"workspace database {db} is damaged ({detail}); nothing was written to it. " \
           + recovery_hint(db)


def problems(conn: sqlite3.Connection, full: bool = False) -> list[str]:
    """What ``PRAGMA quick_check`` (``full``: ``integrity_check``) finds; [] when the file is sound.
    A database too damaged to be checked at all reports the error it raised."""
    pragma = "integrity_check" if full else "quick_check"
    try:
        rows = [r[0] for r in sqlite3.Connection.execute(conn, f"PRAGMA {pragma}({MAX_PROBLEMS})")]
    except sqlite3.DatabaseError as exc:
        if not is_corruption(exc):
            raise
        return [str(exc)]
    if rows == ["ok"]:
        return []
    # One finding a line (SQLite packs several into a row, under a "*** in database main ***" head).
    found = [line.strip() for row in rows for line in str(row).splitlines()]
    return [f for f in found if f and not f.startswith("***")][:MAX_PROBLEMS]


def require_sound(conn: sqlite3.Connection, db: Path, full: bool = False) -> None:
    """DamagedDatabaseError (naming ``db``) when the check finds anything."""
    found = problems(conn, full)
    if found:
        check = "integrity_check" if full else "quick_check"
        raise DamagedDatabaseError(db, f"{check}: " + "; ".join(found))


class _Cursor(sqlite3.Cursor):
    """A cursor whose corruption errors name the database (rows are read lazily, so the damage can
    surface while iterating, not only in execute)."""

    def _wrap(self, fn, *args):
        try:
            return fn(*args)
        except sqlite3.DatabaseError as exc:
            raise self.connection._damaged(exc) from exc

    def execute(self, *args):
        return self._wrap(super().execute, *args)

    def executemany(self, *args):
        return self._wrap(super().executemany, *args)

    def fetchone(self):
        return self._wrap(super().fetchone)

    def fetchall(self):
        return self._wrap(super().fetchall)

    def fetchmany(self, *args):
        return self._wrap(super().fetchmany, *args)

    def __next__(self):
        return self._wrap(super().__next__)


class CheckedConnection(sqlite3.Connection):
    """``sqlite3.connect(..., factory=CheckedConnection)``: every statement run through ``execute``
    raises ``DamagedDatabaseError`` naming the file when SQLite reports damage."""

    db_path: Path = Path("seglearn.db")

    def _damaged(self, exc: sqlite3.DatabaseError) -> BaseException:
        if is_corruption(exc) and not isinstance(exc, DamagedDatabaseError):
            return DamagedDatabaseError(self.db_path, str(exc))
        return exc

    def cursor(self, factory=_Cursor):
        return super().cursor(factory)

    def execute(self, *args):
        return self.cursor().execute(*args)

    def executemany(self, *args):
        return self.cursor().executemany(*args)


def backup(conn: sqlite3.Connection, db: Path, out: Path) -> Path:
    """Copy the database behind ``conn`` to the new file ``out`` with SQLite's online backup API.

    The source is quick-checked first (a backup of a damaged file would carry the damage) and the
    copy after; it is written under a temporary name, fsynced and renamed, so ``out`` is either a
    complete checked copy or absent. An existing ``out`` is never overwritten.
    """
    out = Path(out).expanduser().absolute()
    if out.exists():
        raise WorkspaceError(f"backup file {out} already exists; choose another name")
    if not out.parent.is_dir():
        raise WorkspaceError(f"cannot write backup {out}: folder {out.parent} does not exist")
    require_sound(conn, db)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        dest = sqlite3.connect(tmp, isolation_level=None)
        try:
            conn.backup(dest)
            # A plain rollback-journal file: one self-contained file, no -wal to carry along.
            dest.execute("PRAGMA journal_mode = DELETE")
            require_sound(dest, tmp)
        finally:
            dest.close()
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        try:
            os.link(tmp, out)  # fails instead of replacing a file that appeared meanwhile
        except FileExistsError:
            raise WorkspaceError(f"backup file {out} already exists; choose another name") from None
        except OSError:  # a file system without hard links
            if out.exists():
                raise WorkspaceError(f"backup file {out} already exists; choose another name") from None
            os.replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)
    fsync_dir(out.parent)
    return out
