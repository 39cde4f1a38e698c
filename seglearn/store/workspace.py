"""The workspace: a folder plus an SQLite datastore of items, labels, rounds, models and scores.

Layout: ``seglearn.db`` (SQLite, WAL journal, synchronous=FULL, foreign keys on, schema version in
``PRAGMA user_version``) and the folders ``images/ labels/ models/ rounds/ suggestions/ reports/
oracle/``. Guarantees, because an expert's hour of annotation must never be lost:

* every write that changes what is labeled is one ``BEGIN IMMEDIATE`` transaction; label files are
  written (temp + fsync + rename, folder fsynced) *inside* it, before COMMIT, so a committed label
  always has its file and a killed process leaves no visible half-label;
* label files are never overwritten: revision r of an item lives in its own file
  ``labels/<name>.r<r>.png``, so relabelling keeps the history and a failed relabel cannot damage
  the current label (a file left by a killed process is an unreferenced orphan, see ``check``);
* each label's SHA-256 is stored and verified on read; so is each image's (``image_file``: the
  file's size and mtime first, the hash only when they changed), so an image edited after
  ``init`` is refused rather than trained, scored or labeled with its old label;
* the database is quick-checked before the first write of every ``Workspace`` and SQLite's
  "damaged file" errors name the file and the way to recover (store/integrity.py), so nothing is
  ever committed into a damaged database.

Reads need no lock (WAL readers see the last committed state). ``writer()`` is an advisory lock for
whole commands (a training round) that must not interleave; the store methods do not take it
themselves, the CLI wraps its commands in it.
"""

from __future__ import annotations

import functools
import os
import re
import secrets
import shutil
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from . import digest, integrity, labelio
from .errors import WorkspaceError
from .integrity import CheckedConnection, DamagedDatabaseError, is_corruption, recovery_hint
from .locking import UseLock, WriterLock, _holder, lock_timeout
from .records import (LABEL_SOURCES, SPLITS, Item, ItemRecord, Label, LabelEntry, SlideTile, now,
                      stored_path)
from .runs import Runs
from .schema import APPLICATION_ID, SCHEMA_VERSION, application_id, apply_migrations, user_version

DB_NAME = "seglearn.db"
LOCK_NAME = "seglearn.lock"
SUBDIRS = ("images", "labels", "models", "rounds", "suggestions", "reports", "oracle")
BUSY_TIMEOUT_S = 10.0
_SHA256 = re.compile(r"[0-9a-f]{64}")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")

_ITEM_SQL = """
SELECT i.id, i.name, i.image_path, i.split, i.height, i.width, i.sha256, i.mask_path,
       l.id, l.item_id, l.revision, l.path, l.source, l.round, l.created, l.sha256,
       l.pre_annotation, l.changed, t.x, t.y, t.level, t.downsample, t.tissue
FROM items i LEFT JOIN labels l ON l.id = (SELECT MAX(id) FROM labels WHERE item_id = i.id)
LEFT JOIN slide_tiles t ON t.item_id = i.id"""
_LABEL_COLS = "id, item_id, revision, path, source, round, created, sha256, pre_annotation, changed"


def _label_stem(name: str, item_id: int) -> str:
    # Names are unique, sanitised ones may not be: "~id" cannot occur in a safe name, so it disambiguates.
    safe = _UNSAFE.sub("_", name)
    return safe if safe == name and not name.startswith(".") else f"{safe.lstrip('.')}~{item_id}"


def _connect(db: Path, create: bool = False) -> sqlite3.Connection:
    uri = db.absolute().as_uri() + ("?mode=rwc" if create else "?mode=rw")
    # isolation_level=None: no implicit transactions; every write opens its own BEGIN IMMEDIATE.
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=BUSY_TIMEOUT_S,
                           factory=CheckedConnection)
    conn.db_path = db.absolute()  # named in the error if SQLite finds the file damaged
    conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    return conn


def _configure(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA journal_mode = WAL")
    # FULL: a commit is on disk (WAL fsynced) before COMMIT returns; the cost is one fsync per write.
    conn.execute("PRAGMA synchronous = FULL")


def _runs_method(method):
    """A ``Workspace`` method that calls ``method`` on the workspace's ``Runs`` (same name,
    signature and docstring): ``ws.start_round(...)`` is ``ws.runs.start_round(...)``."""
    @functools.wraps(method)
    def call(self, *args, **kwargs):
        return method(self.runs, *args, **kwargs)
    return call


class Workspace:
    """A seglearn workspace; build it with ``Workspace.create`` or ``Workspace.open``.

    It owns items and labels; the loop's bookkeeping (rounds, models, scores, suggestions,
    pre-annotations, meta, status) is ``self.runs`` (store/runs.py), which shares this object's
    connection and transactions. The app and CLI call those through the shortcuts below."""

    def __init__(self, root: Path, conn: sqlite3.Connection):
        self.root = root
        self.db_path = root / DB_NAME
        self._conn = conn
        self._lock = WriterLock(root / LOCK_NAME, root)
        self._sound = False  # quick_check passed (run once, before this object's first write)
        self._use: UseLock | None = None  # set by open(): the shared "in use" folder lock

    # ---------------------------------------------------------------- lifecycle
    @classmethod
    def create(cls, path: str | os.PathLike, force: bool = False,
               protect: Iterable[str | os.PathLike] = ()) -> "Workspace":
        """Make a new workspace at ``path``; built in a temp sibling folder and renamed into place.

        ``force`` replaces an existing *seglearn workspace* only (see ``workspace_target``), never
        a folder holding ``protect`` (an import's sources)."""
        root = Path(path).expanduser().absolute()
        with workspace_target(root, force, protect) as install:
            tmp = root.parent / f".{root.name}.creating-{os.getpid()}-{secrets.token_hex(4)}"
            try:
                tmp.mkdir()
                _build(tmp)
                install(tmp)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        return cls.open(root)

    @classmethod
    def open(cls, path: str | os.PathLike) -> "Workspace":
        """Open a workspace, applying pending migrations; WorkspaceError names the path otherwise."""
        root = Path(path).expanduser().absolute()
        db = root / DB_NAME
        if not root.is_dir():
            raise WorkspaceError(f"{root} is not a seglearn workspace: no such folder")
        if not db.is_file():
            raise WorkspaceError(f"{root} is not a seglearn workspace: it has no {DB_NAME} "
                                 "(create one with `seglearn init`)")
        use = UseLock(root)
        use.share()  # fails while `init --force` replaces this workspace
        conn = None
        ours = False
        try:
            conn = _connect(db)
            # Read-only checks first, so opening a foreign SQLite file never modifies it.
            app, version = application_id(conn), user_version(conn)
            ours = app == APPLICATION_ID and version >= 1
            if app != APPLICATION_ID or version < 1:
                raise WorkspaceError(f"{root} is not a seglearn workspace: {db} is an SQLite database "
                                     "of another application")
            if version > SCHEMA_VERSION:
                raise WorkspaceError(f"workspace {root} has schema version {version}, newer than this "
                                     f"seglearn understands ({SCHEMA_VERSION}); upgrade seglearn to open it")
            _configure(conn)
            if version < SCHEMA_VERSION:
                integrity.require_sound(conn, db)  # a migration is a write
                apply_migrations(conn, root)
        except sqlite3.DatabaseError as exc:
            if conn is not None:
                conn.close()
            use.release()
            if ours and isinstance(exc, DamagedDatabaseError):
                raise
            detail = getattr(exc, "detail", exc)
            hint = (f"; if it is the database of a seglearn workspace, it is damaged. {recovery_hint(db)}"
                    if is_corruption(exc) else "")
            raise WorkspaceError(f"{root} is not a seglearn workspace: {db} is not a readable SQLite "
                                 f"database ({detail}){hint}") from exc
        except BaseException:
            if conn is not None:
                conn.close()
            use.release()
            raise
        for sub in SUBDIRS:
            (root / sub).mkdir(exist_ok=True)
        ws = cls(root, conn)
        ws._use = use
        return ws

    def close(self) -> None:
        self._conn.close()
        if self._use is not None:
            self._use.release()

    @property
    def runs(self) -> Runs:
        """The bookkeeping tables (store/runs.py) on this workspace's connection and transactions.

        Made on each use (three references, no state): a ``Runs`` stored here would hold this
        object's ``_tx`` and so form a reference cycle, and a Workspace dropped without ``close()``
        would keep its connection and folder lock until the garbage collector ran."""
        return Runs(self._conn, self._tx, self.root)

    def __enter__(self) -> "Workspace":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r})"

    @contextmanager
    def writer(self, timeout: float | None = None) -> Iterator["Workspace"]:
        """Hold the exclusive writer lock for a whole command; WorkspaceError after ``timeout`` s
        (default: ``$SEGLEARN_LOCK_TIMEOUT``, else 10 s)."""
        self._lock.acquire(lock_timeout() if timeout is None else timeout)
        try:
            self._require_sound()
            yield self
        finally:
            self._lock.release()

    # ---------------------------------------------------------------- paths
    def resolve(self, path: str | os.PathLike) -> Path:
        """A stored path as a ``Path``: relative ones are relative to the workspace root."""
        p = Path(path)
        return p if p.is_absolute() else self.root / p

    def relpath(self, path: str | os.PathLike) -> str:
        """How to store ``path``: relative to the root when inside the workspace, else absolute."""
        return stored_path(self.root, path)

    # ---------------------------------------------------------------- integrity
    def _require_sound(self) -> None:
        """DamagedDatabaseError unless ``PRAGMA quick_check`` passes; run once per Workspace, before
        its first write (a damaged page that no query has read yet would otherwise go unnoticed)."""
        if not self._sound:
            integrity.require_sound(self._conn, self.db_path)
            self._sound = True

    def verify_database(self, full: bool = False) -> list[str]:
        """What ``PRAGMA quick_check`` (``full``: ``integrity_check``) finds; [] when sound."""
        return integrity.problems(self._conn, full)

    def backup(self, out: str | os.PathLike) -> Path:
        """Copy the database to the new file ``out`` (SQLite online backup; see store/integrity.py)."""
        return integrity.backup(self._conn, self.db_path, Path(out))

    # ---------------------------------------------------------------- runs (store/runs.py)
    start_round = _runs_method(Runs.start_round)
    finish_round = _runs_method(Runs.finish_round)
    rounds = _runs_method(Runs.rounds)
    current_round = _runs_method(Runs.current_round)
    add_model = _runs_method(Runs.add_model)
    models = _runs_method(Runs.models)
    set_scores = _runs_method(Runs.set_scores)
    scores = _runs_method(Runs.scores)
    iter_scores = _runs_method(Runs.iter_scores)
    scored_ids = _runs_method(Runs.scored_ids)
    score_versions = _runs_method(Runs.score_versions)
    add_suggestions = _runs_method(Runs.add_suggestions)
    suggestions = _runs_method(Runs.suggestions)
    add_pre_annotation = _runs_method(Runs.add_pre_annotation)
    pre_annotations = _runs_method(Runs.pre_annotations)
    set_meta = _runs_method(Runs.set_meta)
    meta = _runs_method(Runs.meta)
    status = _runs_method(Runs.status)

    # ---------------------------------------------------------------- transactions
    def _before_commit(self, what: str) -> None:
        """Called inside every write transaction just before COMMIT (a hook for crash tests)."""

    def _busy(self, exc: Exception) -> WorkspaceError:
        pid, cmd = _holder(self.root / LOCK_NAME)
        return WorkspaceError(f"workspace {self.root} is busy: another process is writing its database "
                              f"(writer lock holder: pid {pid}, command {cmd}); retry later ({exc})")

    @contextmanager
    def _tx(self, what: str, written: list[Path] | None = None) -> Iterator[sqlite3.Connection]:
        """One BEGIN IMMEDIATE transaction. On failure it rolls back and removes the files in
        ``written`` that no committed label references (the check makes a late interrupt harmless)."""
        conn = self._conn
        self._require_sound()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise self._busy(exc) from exc
            raise
        try:
            yield conn
            self._before_commit(what)
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._remove_uncommitted(written or ())
            if isinstance(exc, sqlite3.IntegrityError):
                raise WorkspaceError(f"{what} rejected by workspace {self.root}: {exc}") from exc
            raise

    def _remove_uncommitted(self, written: Iterable[Path]) -> None:
        for path in written:
            try:
                referenced = self._conn.execute("SELECT 1 FROM labels WHERE path = ?",
                                                (self.relpath(path),)).fetchone()
            except sqlite3.Error:
                continue  # cannot tell: keeping an orphan file beats deleting a committed label
            if not referenced:
                path.unlink(missing_ok=True)

    # ---------------------------------------------------------------- items
    def add_items(self, records: Iterable[ItemRecord]) -> list[int]:
        """Insert items in one transaction; ``labeled=True`` records also get their mask as label
        revision 1 (source "import"). Returns the new ids in input order."""
        records = list(records)
        seen: set[str] = set()
        imports: list[tuple[int, bytes]] = []
        for i, rec in enumerate(records):
            _check_record(rec)
            if rec.name in seen:
                raise WorkspaceError(f"duplicate item name {rec.name!r} in the items to add")
            seen.add(rec.name)
            if rec.labeled:
                imports.append((i, self._load_import_mask(rec)))
        written: list[Path] = []
        ids: list[int] = []
        with self._tx("add items", written) as conn:
            stamp = now()
            for rec in records:
                try:
                    cur = conn.execute(
                        "INSERT INTO items (name, image_path, split, height, width, sha256, mask_path, "
                        "added, image_size, image_mtime_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (rec.name, self.relpath(rec.image_path), rec.split, int(rec.height),
                         int(rec.width), rec.sha256,
                         None if rec.mask_path is None else self.relpath(rec.mask_path), stamp,
                         _opt_int(rec.image_size), _opt_int(rec.image_mtime_ns)))
                except sqlite3.IntegrityError as exc:
                    raise WorkspaceError(f"item name {rec.name!r} already exists in workspace "
                                         f"{self.root}") from exc
                ids.append(int(cur.lastrowid))
                if rec.tile is not None:
                    t = rec.tile
                    conn.execute("INSERT INTO slide_tiles (item_id, x, y, level, downsample, tissue) "
                                 "VALUES (?, ?, ?, ?, ?, ?)", (ids[-1], int(t.x), int(t.y),
                                                               int(t.level), float(t.downsample),
                                                               t.tissue))
            pending = [(ids[i], records[i].name, mask, "import", None, None, None)
                       for i, mask in imports]
            self._insert_labels(conn, pending, written)
        return ids

    def _load_import_mask(self, rec: ItemRecord) -> bytes:
        path = self.resolve(rec.mask_path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise WorkspaceError(f"cannot read the mask of item {rec.name!r} ({path}): {exc}") from exc
        mask = labelio.decode_mask(data, str(path))
        if mask.shape != (rec.height, rec.width):
            raise WorkspaceError(f"mask {path} of item {rec.name!r} is {mask.shape[0]}x{mask.shape[1]} "
                                 f"(height x width) but the item is {rec.height}x{rec.width}")
        return labelio.encode_mask(labelio.check_mask(mask, f"item {rec.name!r}"), f"item {rec.name!r}")

    def items(self, split: str | None = None, labeled: bool | None = None) -> list[Item]:
        """Items ordered by id, optionally filtered by split and by having a visible label."""
        where, args = [], []
        if split is not None:
            _check_split(split)
            where.append("i.split = ?")
            args.append(split)
        if labeled is not None:
            where.append("l.id IS NOT NULL" if labeled else "l.id IS NULL")
        sql = _ITEM_SQL + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY i.id"
        return [_item(row) for row in self._conn.execute(sql, args)]

    def item(self, key: int | str | Item) -> Item:
        """One item by id or name; WorkspaceError if unknown."""
        if isinstance(key, Item):
            key = key.id
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            row = self._conn.execute(_ITEM_SQL + " WHERE i.id = ?", (int(key),)).fetchone()
        elif isinstance(key, str):
            row = self._conn.execute(_ITEM_SQL + " WHERE i.name = ?", (key,)).fetchone()
        else:
            raise WorkspaceError(f"an item is named by its id (int) or name (str), got {key!r}")
        if row is None:
            raise WorkspaceError(f"unknown item {key!r} in workspace {self.root}")
        return _item(row)

    def image_file(self, key: int | str | Item) -> Path:
        """The item's image file, checked to be the one imported: WorkspaceError naming the file if
        it is missing or its SHA-256 differs from ``items.sha256`` (recorded at ``init``).

        Cheap on the usual path: one ``stat``; the file is hashed only when its size or mtime_ns
        differ from the stamp stored with the hash (or no stamp is stored: workspaces made before
        schema v3), and the new stamp of an unchanged file is then recorded.
        """
        iid = key.id if isinstance(key, Item) else self.item(key).id
        name, stored, sha, size, mtime = self._conn.execute(
            "SELECT name, image_path, sha256, image_size, image_mtime_ns FROM items WHERE id = ?",
            (iid,)).fetchone()
        path = self.resolve(stored)
        try:
            st = os.stat(path)
            if (size, mtime) == (st.st_size, st.st_mtime_ns):
                return path
            found = digest.file_digest(path)
        except OSError as exc:
            raise WorkspaceError(f"image file {path} of item {name!r} cannot be read: "
                                 f"{exc.strerror or exc}") from exc
        if found.sha256 != sha:
            raise WorkspaceError(
                f"image file {path} of item {name!r} has changed since it was imported (its SHA-256 "
                f"is {found.sha256[:12]}..., recorded {sha[:12]}...): its label and scores belong to "
                "the old image. Put the original file back, or import the new image with "
                "`seglearn init` (a new workspace)")
        try:  # only a cache of "already hashed": if it cannot be written, the next read hashes again
            with self._tx("record image stamp") as conn:
                conn.execute("UPDATE items SET image_size = ?, image_mtime_ns = ? WHERE id = ? AND "
                             "sha256 = ?", (found.size, found.mtime_ns, iid, sha))
        except DamagedDatabaseError:
            raise
        except (WorkspaceError, sqlite3.OperationalError):
            pass
        return path

    def labeled(self, split: str = "pool") -> list[Item]:
        return self.items(split=split, labeled=True)

    def unlabeled(self, split: str = "pool") -> list[Item]:
        return self.items(split=split, labeled=False)

    def training_items(self) -> list[Item]:
        """Every item with a visible label in split train or pool (never test, never the oracle)."""
        return [it for it in self.items(labeled=True) if it.split in ("train", "pool")]

    # ---------------------------------------------------------------- labels
    def add_labels(self, entries: Sequence[LabelEntry]) -> None:
        """Store masks as the items' current labels, all or nothing, in one transaction."""
        pending = []
        for e in entries:
            if not isinstance(e, LabelEntry):
                raise WorkspaceError(f"add_labels takes LabelEntry objects, got {type(e).__name__}")
            if e.source not in LABEL_SOURCES:
                raise WorkspaceError(f"unknown label source {e.source!r}; known: {', '.join(LABEL_SOURCES)}")
            if e.round is not None and (not isinstance(e.round, (int, np.integer)) or e.round < 0):
                raise WorkspaceError(f"label round must be None or an integer >= 0, got {e.round!r}")
            it = self.item(e.item_id)
            what = f"item {it.name!r} (id {it.id})"
            mask = labelio.check_mask(e.mask, what)
            if mask.shape != (it.height, it.width):
                raise WorkspaceError(f"mask for {what} is {mask.shape[0]}x{mask.shape[1]} (height x width) "
                                     f"but the item is {it.height}x{it.width}")
            pre, changed = _pre_annotation_fields(e, what)
            pending.append((it.id, it.name, labelio.encode_mask(mask, what), e.source,
                            None if e.round is None else int(e.round), pre, changed))
        if not pending:
            return
        written: list[Path] = []
        with self._tx("add labels", written) as conn:
            self._insert_labels(conn, pending, written)

    def _insert_labels(self, conn: sqlite3.Connection, pending: list, written: list[Path]) -> None:
        # Runs under BEGIN IMMEDIATE: no other writer can pick the same revision number.
        if not pending:
            return
        stamp = now()
        for item_id, name, data, source, rnd, pre, changed in pending:
            rev = conn.execute("SELECT COALESCE(MAX(revision), 0) + 1 FROM labels WHERE item_id = ?",
                               (item_id,)).fetchone()[0]
            rel = f"labels/{_label_stem(name, item_id)}.r{rev}.png"
            written.append(self.root / rel)
            try:
                labelio.write_atomic(self.root / rel, data)
            except OSError as exc:
                raise WorkspaceError(f"cannot write label file {self.root / rel} of item {name!r}: {exc}; "
                                     "no label of this call was stored") from exc
            conn.execute("INSERT INTO labels (item_id, revision, path, source, round, created, sha256, "
                         "pre_annotation, changed) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         (item_id, rev, rel, source, rnd, stamp, labelio.bytes_sha256(data), pre,
                          changed))
        labelio.fsync_dir(self.root / "labels")  # the renames are durable before COMMIT

    def label_history(self, key: int | str | Item) -> list[Label]:
        """All label revisions of an item, oldest first (the last one is current)."""
        it = self.item(key)
        rows = self._conn.execute(f"SELECT {_LABEL_COLS} FROM labels WHERE item_id = ? ORDER BY id",
                                  (it.id,)).fetchall()
        return [Label(*row) for row in rows]

    def read_label(self, key: int | str | Item, revision: int | None = None) -> np.ndarray:
        """The item's current (or given revision's) instance labels, int32 (H, W), checksum-verified."""
        it = self.item(key)
        if revision is None:
            label = it.label
        else:
            label = next((lb for lb in self.label_history(it) if lb.revision == revision), None)
        if label is None:
            rev = "" if revision is None else f" revision {revision}"
            raise WorkspaceError(f"item {it.name!r} (id {it.id}) has no label{rev} in workspace {self.root}")
        path = self.resolve(label.path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise WorkspaceError(f"label file {path} of item {it.name!r} cannot be read: {exc}") from exc
        if label.sha256 is not None and labelio.bytes_sha256(data) != label.sha256:
            raise WorkspaceError(f"label file {path} of item {it.name!r} is corrupt (SHA-256 differs from "
                                 "the one recorded when it was written)")
        mask = labelio.decode_mask(data, str(path))
        if mask.shape != (it.height, it.width):
            raise WorkspaceError(f"label file {path} is {mask.shape[0]}x{mask.shape[1]} but item "
                                 f"{it.name!r} is {it.height}x{it.width}")
        return mask

    def read_oracle(self, key: int | str | Item) -> np.ndarray:
        """The item's reference mask (``mask_path``: the hidden oracle of a pool item, the ground
        truth of a test item) as int32 instance labels. Never use it for training."""
        it = self.item(key)
        if it.oracle_mask_path is None:
            raise WorkspaceError(f"item {it.name!r} (id {it.id}) has no reference mask")
        path = self.resolve(it.oracle_mask_path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise WorkspaceError(f"reference mask {path} of item {it.name!r} cannot be read: {exc}") from exc
        return labelio.decode_mask(data, str(path))

    def check(self, repair: bool = False) -> dict:
        """Health report: SQLite integrity, label files missing, and orphan files in ``labels/``
        (left by a process killed inside a label transaction: never referenced, safe to delete).

        ``repair=True`` moves the orphans to ``labels/orphans/`` under BEGIN IMMEDIATE: label files
        are only written while that lock is held, so no live transaction can own a file we see as an
        orphan. They are moved, never deleted: after a database is restored from an older backup,
        the label files committed since then are "orphans" too, and they are an expert's work.
        """
        def scan() -> dict:
            found = integrity.problems(self._conn, full=True)
            known = {row[0] for row in self._conn.execute("SELECT path FROM labels")}
            missing = sorted(p for p in known if not self.resolve(p).is_file())
            on_disk = {self.relpath(p) for p in (self.root / "labels").iterdir() if p.is_file()}
            return {"integrity": "; ".join(found) or "ok", "missing": missing,
                    "orphans": sorted(on_disk - known)}

        if not repair:
            return scan()
        with self._tx("repair"):
            report = scan()
            if report["orphans"]:
                keep = self.root / "labels" / ORPHANS_DIR
                keep.mkdir(exist_ok=True)
                for rel in report["orphans"]:
                    src = self.resolve(rel)
                    dst = keep / src.name
                    n = 1
                    while dst.exists():  # never overwrite an earlier quarantined file
                        dst = keep / f"{src.stem}.{n}{src.suffix}"
                        n += 1
                    os.replace(src, dst)
                report["moved_to"] = self.relpath(keep)
        return report


ORPHANS_DIR = "orphans"  # under labels/: where check(repair=True) moves unreferenced label files


# What seglearn owns inside a workspace folder: nothing may write there but the workspace itself.
MANAGED = (DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm", f"{DB_NAME}-journal", LOCK_NAME, *SUBDIRS)


def is_workspace(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a seglearn database (checked read-only: application id + version)."""
    db = Path(folder) / DB_NAME
    if not db.is_file():
        return False
    try:
        conn = sqlite3.connect(db.absolute().as_uri() + "?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)
        try:
            return application_id(conn) == APPLICATION_ID and user_version(conn) >= 1
        finally:
            conn.close()
    except sqlite3.Error:
        return False


def managed_by(path: str | os.PathLike) -> Path | None:
    """The workspace whose managed files (``MANAGED``: database, lock, images/, labels/ ...)
    ``path`` is, or lies inside; None if none. Symlinks are followed."""
    p = Path(path).expanduser().resolve()
    for folder in p.parents:
        if (folder / DB_NAME).is_file() and p.relative_to(folder).parts[0] in MANAGED:
            return folder
    return None


def _check_replaceable(root: Path, protect: Iterable[str | os.PathLike] = ()) -> None:
    """``force`` may replace a seglearn workspace, nothing else: not the filesystem root, home or
    a folder holding the current folder; not a plain file or a folder of other files; not a folder
    that holds the sources of the import about to run (their deletion would lose them)."""
    home, cwd = Path.home().absolute(), Path.cwd().absolute()
    if root == Path(root.anchor) or root == home or cwd == root or root in cwd.parents:
        raise WorkspaceError(f"refusing to replace {root}: it is the filesystem root, your home folder "
                             "or contains the current folder")
    if not root.is_dir():
        raise WorkspaceError(f"refusing to replace {root}: it is a file, not a workspace folder; "
                             "--force only replaces a seglearn workspace")
    if not is_workspace(root):
        names = sorted(p.name for p in root.iterdir())
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        raise WorkspaceError(f"refusing to replace {root}: it is not a seglearn workspace (no "
                             f"seglearn {DB_NAME}; it holds {shown}); --force only replaces a "
                             "workspace: choose another path or empty the folder yourself")
    real = root.resolve()
    for src in protect:
        s = Path(src).expanduser().resolve()
        if s == real or real in s.parents:
            raise WorkspaceError(f"refusing to replace {root}: it holds {src}, the data being "
                                 "imported, which replacing the workspace would delete; move the "
                                 "data out or create the workspace elsewhere")


@contextmanager
def workspace_target(root: Path, force: bool = False,
                     protect: Iterable[str | os.PathLike] = ()) -> Iterator:
    """Check that a new workspace may be put at ``root`` and yield ``install(folder)``, which
    renames a complete workspace folder (a sibling of ``root``) into place.

    A missing or empty ``root`` is filled by one atomic rename. An occupied one needs ``force``
    and must pass ``_check_replaceable``; for the whole block (the new workspace is built inside
    it) this holds the old workspace's writer lock and its folder lock (``UseLock``) exclusively,
    so no seglearn process is using it and none can start: a running ``train`` makes it fail at
    once, before anything is written. The old workspace is moved aside, the new one renamed in,
    the old one deleted; if the rename fails the old one is put back.
    """
    root = Path(root).expanduser().absolute()
    protect = [p for p in protect if p is not None]
    if root.exists() and not root.is_dir():
        raise WorkspaceError(f"cannot create workspace {root}: it is a file, not a folder")
    occupied = root.is_dir() and any(root.iterdir())
    if occupied and not force:
        raise WorkspaceError(f"cannot create workspace {root}: the folder exists and is not empty; "
                             "choose another path or pass force=True (--force) to replace it")
    use = lock = None
    if occupied:
        _check_replaceable(root, protect)
        lock = WriterLock(root / LOCK_NAME, root)
        lock.acquire(timeout=0)  # never pull a workspace from under a running seglearn process
        use = UseLock(root)
        try:
            use.claim()
        except BaseException:
            lock.release()
            raise

    def install(folder: Path) -> None:
        if not occupied:
            os.rename(folder, root)  # onto a missing or empty folder: atomic
        else:
            old = root.parent / f".{root.name}.replaced-{os.getpid()}-{secrets.token_hex(4)}"
            os.rename(root, old)
            try:
                os.rename(folder, root)
            except BaseException:
                os.rename(old, root)  # put the old workspace back rather than hide it
                raise
            shutil.rmtree(old, ignore_errors=True)
        labelio.fsync_dir(root.parent)

    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        yield install
    finally:
        if occupied:
            use.release()
            lock.release()


def _build(folder: Path) -> None:
    for sub in SUBDIRS:
        (folder / sub).mkdir()
    conn = _connect(folder / DB_NAME, create=True)
    try:
        _configure(conn)
        apply_migrations(conn, folder)
        conn.execute("INSERT INTO meta (key, value) VALUES ('created', ?)", (f'"{now()}"',))
    finally:
        conn.close()  # the last close checkpoints the WAL into the main file
    labelio.fsync_dir(folder)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise WorkspaceError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")


def _check_record(rec: object) -> None:
    if not isinstance(rec, ItemRecord):
        raise WorkspaceError(f"add_items takes ItemRecord objects, got {type(rec).__name__}")
    if not isinstance(rec.name, str) or not rec.name.strip() or "\x00" in rec.name:
        raise WorkspaceError(f"item name must be a non-empty string, got {rec.name!r}")
    _check_split(rec.split)
    for dim in ("height", "width"):
        v = getattr(rec, dim)
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
            raise WorkspaceError(f"item {rec.name!r}: {dim} must be a positive integer, got {v!r}")
    if not isinstance(rec.sha256, str) or not _SHA256.fullmatch(rec.sha256):
        raise WorkspaceError(f"item {rec.name!r}: sha256 must be 64 lowercase hex digits, got {rec.sha256!r}")
    if not rec.image_path:
        raise WorkspaceError(f"item {rec.name!r} has no image_path")
    for stat in ("image_size", "image_mtime_ns"):
        v = getattr(rec, stat)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0):
            raise WorkspaceError(f"item {rec.name!r}: {stat} must be None or an integer >= 0, got {v!r}")
    if rec.labeled and not rec.mask_path:
        raise WorkspaceError(f"item {rec.name!r} is marked labeled but has no mask_path")
    if rec.tile is not None and not isinstance(rec.tile, SlideTile):
        raise WorkspaceError(f"item {rec.name!r}: tile must be a SlideTile, got "
                             f"{type(rec.tile).__name__}")


def _pre_annotation_fields(e: LabelEntry, what: str) -> tuple[int | None, int | None]:
    """(pre_annotation id, changed as 0/1) to store for ``e``: both set for source
    "pre-annotation", both None otherwise."""
    if e.source != "pre-annotation":
        if e.pre_annotation is not None or e.changed is not None:
            raise WorkspaceError(f"label for {what}: pre_annotation/changed go with source "
                                 f"'pre-annotation', not {e.source!r}")
        return None, None
    if e.pre_annotation is None or e.changed is None:
        raise WorkspaceError(f"label for {what} has source 'pre-annotation' but does not say which "
                             "pre-annotation it started from and whether it was changed")
    return int(e.pre_annotation), int(bool(e.changed))


def _opt_int(v) -> int | None:
    return None if v is None else int(v)


def _item(row: tuple) -> Item:
    label = Label(*row[8:18]) if row[8] is not None else None
    tile = SlideTile(*row[18:23]) if row[18] is not None else None
    return Item(*row[:8], label=label, tile=tile)
