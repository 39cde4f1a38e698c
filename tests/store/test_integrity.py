"""A damaged seglearn.db is found before anything is written into it, and is backed up safely
(issue 19 item 5). Damage is real: random bytes over pages of the file, located through
sqlite_master's root pages; an independent plain sqlite3 connection confirms each one is damage."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3

import numpy as np
import pytest

from seglearn.store import DB_NAME, LabelEntry, Workspace, WorkspaceError
from seglearn.store.integrity import DamagedDatabaseError

from .conftest import random_mask, record


def root_pages(db) -> tuple[dict[str, int], int]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        roots = dict(con.execute("SELECT name, rootpage FROM sqlite_master WHERE rootpage > 0"))
        return roots, con.execute("PRAGMA page_size").fetchone()[0]
    finally:
        con.close()


def damage(db, table: str, start: int = 0, length: int | None = None, seed: int = 0) -> None:
    """Random bytes over ``length`` bytes (default: the rest) of the root page of ``table``."""
    roots, size = root_pages(db)
    length = size - start if length is None else length
    with open(db, "r+b") as f:
        f.seek((roots[table] - 1) * size + start)
        f.write(np.random.default_rng(seed).bytes(length))


def independent_quick_check(db) -> list:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [r[0] for r in con.execute("PRAGMA quick_check")]
    except sqlite3.DatabaseError as exc:
        return [str(exc)]
    finally:
        con.close()


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def closed_ws(tmp_path):
    """A closed workspace (its WAL checkpointed into seglearn.db) with items a, b, c; a labeled."""
    with Workspace.create(tmp_path / "ws") as ws:
        ws.add_items([record("a"), record("b"), record("c")])
        ws.add_labels([LabelEntry(1, random_mask(0))])
        ws.set_scores("v", [(1, {"u": 0.5}, np.arange(3.0))])
    return tmp_path / "ws"


# (table whose root page is damaged, start, length): whole pages, and a few bytes of cell area
DAMAGE = [("scores", 0, None), ("meta", 2000, None), ("scores", 8, 16), ("suggestions", 0, None)]


@pytest.mark.parametrize("table,start,length", DAMAGE)
def test_no_write_into_a_damaged_database(closed_ws, table, start, length):
    db = closed_ws / DB_NAME
    damage(db, table, start, length)
    assert independent_quick_check(db) != ["ok"]
    before = sha(db)
    with Workspace.open(closed_ws) as ws:
        # the damaged page is not on this write's path: only the quick_check before it finds it
        with pytest.raises(DamagedDatabaseError, match=f"workspace database {db} is damaged") as err:
            ws.add_labels([LabelEntry(2, random_mask(1))])
        assert "seglearn backup" in str(err.value) and ".recover" in str(err.value)
        assert isinstance(err.value, WorkspaceError) and isinstance(err.value, sqlite3.DatabaseError)
        with pytest.raises(DamagedDatabaseError):
            ws.writer().__enter__()  # the writer lock refuses too (and is released again)
        assert ws.verify_database() != [] and ws.verify_database(full=True) != []
    assert sha(db) == before
    assert sorted(p.name for p in (closed_ws / "labels").iterdir()) == ["a.r1.png"]


def test_quick_check_findings_are_reported(closed_ws):
    db = closed_ws / DB_NAME
    damage(db, "items", 8, 16)  # the cell pointers of the items page
    found = independent_quick_check(db)
    assert found != ["ok"] and "Offset" in found[0]  # SQLite itself reports rows, not an error
    with Workspace.open(closed_ws) as ws:
        mine = ws.verify_database()
    assert mine and all("\n" not in f and not f.startswith("***") for f in mine)
    assert any("page" in f for f in mine)


def test_damage_met_by_a_read_names_the_file(closed_ws):
    db = closed_ws / DB_NAME
    damage(db, "labels")
    with Workspace.open(closed_ws) as ws:
        with pytest.raises(DamagedDatabaseError, match=f"{db} is damaged .*malformed"):
            ws.items()


def test_sound_database_has_no_findings(closed_ws):
    with Workspace.open(closed_ws) as ws:
        assert ws.verify_database() == [] == ws.verify_database(full=True)
        assert ws.check()["integrity"] == "ok"


def test_foreign_garbage_still_says_not_a_workspace_and_hints(tmp_path):
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / DB_NAME).write_bytes(b"garbage!" * 600)
    with pytest.raises(WorkspaceError, match="not a readable SQLite database .*it is damaged. "
                                             "To recover"):
        Workspace.open(tmp_path / "w")


def dump(db) -> list[str]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return list(con.iterdump())
    finally:
        con.close()


def test_backup_is_a_complete_copy_of_the_committed_state(closed_ws, tmp_path):
    db = closed_ws / DB_NAME
    with Workspace.open(closed_ws) as ws:
        ws.set_meta("k", 1)  # in the WAL, not yet in seglearn.db: the backup must include it
        other = sqlite3.connect(db, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO meta (key, value) VALUES ('uncommitted', '1')")
        out = ws.backup(tmp_path / "b.db")
        other.execute("ROLLBACK")
        other.close()
        assert out == tmp_path / "b.db"
        assert dump(out) == dump(db)  # every table and row (the WAL included)
    con = sqlite3.connect(out)
    assert con.execute("SELECT value FROM meta WHERE key = 'k'").fetchone() == ("1",)
    assert con.execute("SELECT COUNT(*) FROM meta WHERE key = 'uncommitted'").fetchone() == (0,)
    assert con.execute("PRAGMA journal_mode").fetchone() == ("delete",)  # one file, no -wal
    con.close()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".b.db")] == []


def test_backup_restores_a_damaged_workspace(closed_ws, tmp_path):
    db = closed_ws / DB_NAME
    with Workspace.open(closed_ws) as ws:
        ws.backup(tmp_path / "b.db")
    damage(db, "items")
    with Workspace.open(closed_ws) as ws:  # a backup of the damage would carry it: refused
        with pytest.raises(DamagedDatabaseError):
            ws.backup(tmp_path / "c.db")
    assert not (tmp_path / "c.db").exists()
    shutil.copy(tmp_path / "b.db", db)  # what the message says to do
    for side in ("-wal", "-shm"):
        (closed_ws / (DB_NAME + side)).unlink(missing_ok=True)
    with Workspace.open(closed_ws) as ws:
        assert [it.name for it in ws.items()] == ["a", "b", "c"]
        assert np.array_equal(ws.read_label("a"), random_mask(0))
        ws.add_labels([LabelEntry(2, random_mask(1))])


def test_backup_never_overwrites(closed_ws, tmp_path):
    out = tmp_path / "b.db"
    out.write_bytes(b"keep")
    with Workspace.open(closed_ws) as ws:
        with pytest.raises(WorkspaceError, match=f"backup file {out} already exists"):
            ws.backup(out)
        with pytest.raises(WorkspaceError, match="folder .*nowhere does not exist"):
            ws.backup(tmp_path / "nowhere" / "b.db")
    assert out.read_bytes() == b"keep"
