"""`seglearn backup`: a consistent copy of the workspace database (SQLite's online backup API).

The copy is taken while other seglearn commands may be writing (a snapshot of the last commit, WAL
included) and is checked (``PRAGMA quick_check``) before it is given its name; a damaged database
is refused, since its backup would carry the damage (store/integrity.py). Only ``seglearn.db`` is
copied: label files are never overwritten (revision r of an item is ``labels/<name>.r<r>.png``), so
the ones a backup references are still in ``labels/`` when it is restored.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

BACKUP_DIR = "backups"


def default_backup_name(folder: Path) -> Path:
    """``folder/seglearn-<UTC time>.db``, with -2, -3 ... if that name is taken."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out, n = folder / f"seglearn-{stamp}.db", 1
    while out.exists():
        n += 1
        out = folder / f"seglearn-{stamp}-{n}.db"
    return out


def backup_workspace(ws, out: str | Path | None = None) -> Path:
    """Back up ``ws``'s database to ``out`` (a new file, or a folder to put one in; default
    ``WS/backups/``); returns the file written. Never overwrites an existing file."""
    if out is None:
        folder = ws.root / BACKUP_DIR
        folder.mkdir(exist_ok=True)
        out = default_backup_name(folder)
    else:
        out = Path(out).expanduser()
        if out.is_dir():
            out = default_backup_name(out)
    return ws.backup(out)
