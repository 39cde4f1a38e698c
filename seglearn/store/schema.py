"""Tables of the workspace datastore and the ordered migrations that build them.

The schema version lives in ``PRAGMA user_version``; ``PRAGMA application_id`` marks the file as a
seglearn workspace (SQLite's own mechanism for "which application owns this file"). A migration is
``(version, step)`` where step is a tuple of SQL statements or a callable ``step(conn, root)``.
Each migration runs in its own ``BEGIN IMMEDIATE`` transaction together with the ``user_version``
bump, so a process killed mid-migration leaves the previous version intact (SQLite DDL and both
pragmas are transactional). Migrations are append-only: never edit a released one, add the next.

Version history
  1  items, labels, rounds, models, meta (the original core)
  2  score cache (per item and model version), suggestions, label checksums (backfilled)
  3  items.image_size, items.image_mtime_ns: the (size, mtime) stamp of the image file when its
     sha256 was taken, so a read can skip re-hashing an unchanged file. NULL in workspaces made
     before v3 (and for records that give no stamp): the first read hashes the file, compares it
     with items.sha256 and records the stamp (``Workspace.image_file``).
  4  pre_annotations (the model masks ``select --pre-annotate`` wrote, with their checksums and
     instance count) and label source 'pre-annotation' with labels.pre_annotation (the one the
     label started from) and labels.changed (0: accepted as written, 1: corrected). SQLite cannot
     alter a CHECK constraint, so the labels table is rebuilt (rows, ids and id sequence kept).
  5  slide_tiles: the items that are tiles of a whole-slide image (``init --slides``): top-left
     (x, y) in level-0 px, pyramid level and its downsample, tissue fraction. The item's
     image_path, sha256 and stamp are the slide file's; its height x width the tile's. No row:
     an ordinary image item (every item of an older workspace).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Callable, Sequence, Union

from .errors import WorkspaceError
from .digest import file_sha256

APPLICATION_ID = 0x53474C4E  # "SGLN"

MigrationStep = Union[Sequence[str], Callable[[sqlite3.Connection, Path], None]]

_V1 = (
    """CREATE TABLE items (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE,
        image_path TEXT NOT NULL,
        split TEXT NOT NULL CHECK (split IN ('train', 'pool', 'test')),
        height INTEGER NOT NULL CHECK (height > 0),
        width INTEGER NOT NULL CHECK (width > 0),
        sha256 TEXT NOT NULL,
        mask_path TEXT,
        added TEXT NOT NULL)""",
    # AUTOINCREMENT: ids are never reused, so the newest revision of an item is its max id.
    """CREATE TABLE labels (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        item_id INTEGER NOT NULL REFERENCES items(id),
        revision INTEGER NOT NULL CHECK (revision > 0),
        path TEXT NOT NULL,
        source TEXT NOT NULL CHECK (source IN ('expert', 'oracle', 'initial', 'import')),
        round INTEGER,
        created TEXT NOT NULL,
        UNIQUE (item_id, revision))""",
    "CREATE INDEX labels_by_item ON labels (item_id, id)",
    """CREATE TABLE rounds (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        config_hash TEXT NOT NULL,
        started TEXT NOT NULL,
        finished TEXT,
        metrics TEXT)""",
    """CREATE TABLE models (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        round_id INTEGER NOT NULL REFERENCES rounds(id),
        role TEXT NOT NULL CHECK (role IN ('suggestive', 'final')),
        member INTEGER NOT NULL CHECK (member >= 0),
        path TEXT NOT NULL,
        config_hash TEXT NOT NULL,
        scheme TEXT NOT NULL,
        metrics TEXT NOT NULL,
        created TEXT NOT NULL,
        UNIQUE (round_id, role, member))""",
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    f"PRAGMA application_id = {APPLICATION_ID}",
)

_V2_SQL = (
    "ALTER TABLE labels ADD COLUMN sha256 TEXT",
    # descriptor: float32 bytes (native little-endian as numpy writes it) plus its length, so a
    # truncated blob is detected instead of silently reshaped.
    """CREATE TABLE scores (
        model_version TEXT NOT NULL,
        item_id INTEGER NOT NULL REFERENCES items(id),
        scores TEXT NOT NULL,
        descriptor BLOB NOT NULL,
        dim INTEGER NOT NULL CHECK (dim >= 0),
        PRIMARY KEY (model_version, item_id))""",
    """CREATE TABLE suggestions (
        round_id INTEGER NOT NULL REFERENCES rounds(id),
        rank INTEGER NOT NULL,
        item_id INTEGER NOT NULL REFERENCES items(id),
        uncertainty REAL,
        coverage_gain REAL,
        strategy TEXT NOT NULL,
        PRIMARY KEY (round_id, rank),
        UNIQUE (round_id, item_id))""",
)


def _v2(conn: sqlite3.Connection, root: Path) -> None:
    for stmt in _V2_SQL:
        conn.execute(stmt)
    # Backfill checksums of labels written by v1 so every label file can be verified on read.
    for label_id, path in conn.execute("SELECT id, path FROM labels").fetchall():
        full = Path(path) if Path(path).is_absolute() else root / path
        digest = file_sha256(full) if full.is_file() else None
        conn.execute("UPDATE labels SET sha256 = ? WHERE id = ?", (digest, label_id))


# Not backfilled from the files as they are now: an image edited since `init` must still fail its
# hash check on first read, not have its new stamp blessed by the upgrade.
_V3 = ("ALTER TABLE items ADD COLUMN image_size INTEGER",
       "ALTER TABLE items ADD COLUMN image_mtime_ns INTEGER")

_V4 = (
    """CREATE TABLE pre_annotations (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        item_id INTEGER NOT NULL REFERENCES items(id),
        round_id INTEGER NOT NULL REFERENCES rounds(id),
        mask_path TEXT NOT NULL,
        mask_sha256 TEXT NOT NULL,
        geojson_path TEXT,
        geojson_sha256 TEXT,
        instances INTEGER NOT NULL CHECK (instances >= 0),
        model TEXT NOT NULL,
        created TEXT NOT NULL,
        UNIQUE (round_id, item_id))""",
    "CREATE INDEX pre_annotations_by_item ON pre_annotations (item_id, id)",
    """CREATE TABLE labels_v4 (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        item_id INTEGER NOT NULL REFERENCES items(id),
        revision INTEGER NOT NULL CHECK (revision > 0),
        path TEXT NOT NULL,
        source TEXT NOT NULL CHECK (source IN ('expert', 'oracle', 'initial', 'import',
                                               'pre-annotation')),
        round INTEGER,
        created TEXT NOT NULL,
        sha256 TEXT,
        pre_annotation INTEGER REFERENCES pre_annotations(id),
        changed INTEGER CHECK (changed IN (0, 1)),
        UNIQUE (item_id, revision))""",
    "INSERT INTO labels_v4 (id, item_id, revision, path, source, round, created, sha256) "
    "SELECT id, item_id, revision, path, source, round, created, sha256 FROM labels",
    # The id sequence too (ids are never reused): the copy only raised it to the largest id kept.
    "UPDATE sqlite_sequence SET seq = (SELECT seq FROM sqlite_sequence WHERE name = 'labels') "
    "WHERE name = 'labels_v4'",
    "DROP TABLE labels",  # also drops labels_by_item and the table's sqlite_sequence row
    "ALTER TABLE labels_v4 RENAME TO labels",  # renames labels_v4's sqlite_sequence row with it
    "CREATE INDEX labels_by_item ON labels (item_id, id)",
)

_V5 = (
    """CREATE TABLE slide_tiles (
        item_id INTEGER PRIMARY KEY REFERENCES items(id),
        x INTEGER NOT NULL CHECK (x >= 0),
        y INTEGER NOT NULL CHECK (y >= 0),
        level INTEGER NOT NULL CHECK (level >= 0),
        downsample REAL NOT NULL CHECK (downsample > 0),
        tissue REAL CHECK (tissue BETWEEN 0 AND 1))""",
)

MIGRATIONS: list[tuple[int, MigrationStep]] = [(1, _V1), (2, _v2), (3, _V3), (4, _V4), (5, _V5)]
SCHEMA_VERSION = MIGRATIONS[-1][0]


def user_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def application_id(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA application_id").fetchone()[0])


def _check_order(migrations: Sequence[tuple[int, MigrationStep]]) -> None:
    versions = [v for v, _ in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"migrations must be numbered 1, 2, 3 ... in order; got {versions}")


def apply_migrations(conn: sqlite3.Connection, root: Path,
                     migrations: Sequence[tuple[int, MigrationStep]] = MIGRATIONS,
                     upto: int | None = None) -> int:
    """Bring the database to version ``upto`` (default: the latest); returns the version reached.

    ``conn`` must be in autocommit mode (``isolation_level=None``) so the explicit transactions here
    are the only ones. The current version is re-read inside each transaction, so two processes
    opening an old workspace at once apply each step exactly once.
    """
    _check_order(migrations)
    target = migrations[-1][0] if upto is None else upto
    for version, step in migrations:
        if version > target:
            break
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = user_version(conn)
            if current >= version:
                conn.execute("ROLLBACK")
                continue
            if current != version - 1:
                raise WorkspaceError(f"database is at schema version {current}, cannot apply "
                                     f"migration {version}")
            if callable(step):
                step(conn, root)
            else:
                for stmt in step:
                    conn.execute(stmt)
            conn.execute(f"PRAGMA user_version = {int(version)}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    return user_version(conn)
