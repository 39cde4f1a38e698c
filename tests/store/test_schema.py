"""Migrations: an old workspace upgrades on open and keeps its data; failures roll back."""

from __future__ import annotations

import hashlib
import sqlite3

import numpy as np
import pytest

from seglearn.store import DB_NAME, SCHEMA_VERSION, LabelEntry, Workspace
from seglearn.store import labelio
from seglearn.store.schema import MIGRATIONS, apply_migrations, user_version

from .conftest import SHA, random_mask


def make_v1(root):
    """A workspace as version 1 of the code wrote it: one item with one label."""
    (root / "labels").mkdir(parents=True)
    conn = sqlite3.connect(root / DB_NAME, isolation_level=None)
    assert apply_migrations(conn, root, upto=1) == 1
    conn.execute("INSERT INTO items (name, image_path, split, height, width, sha256, mask_path, added) "
                 "VALUES ('a', 'images/a.png', 'pool', 6, 7, ?, 'oracle/a.png', 't0')", (SHA,))
    data = labelio.encode_mask(random_mask(0).astype(np.uint16), "a")
    (root / "labels" / "a.r1.png").write_bytes(data)
    conn.execute("INSERT INTO labels (item_id, revision, path, source, round, created) "
                 "VALUES (1, 1, 'labels/a.r1.png', 'expert', 1, 't1')")
    conn.execute("INSERT INTO rounds (kind, config_hash, started) VALUES ('suggestive', 'h', 't0')")
    conn.close()
    return hashlib.sha256(data).hexdigest()


def test_v1_workspace_upgrades_and_keeps_data(tmp_path):
    root = tmp_path / "old"
    digest = make_v1(root)
    with Workspace.open(root) as ws:
        assert user_version(ws._conn) == SCHEMA_VERSION
        a = ws.item("a")
        assert (a.split, a.height, a.width, a.oracle_mask_path) == ("pool", 6, 7, "oracle/a.png")
        assert a.label.sha256 == digest  # backfilled by migration 2
        assert np.array_equal(ws.read_label("a"), random_mask(0))
        assert ws.current_round() == 1
        ws.set_scores("v", [(1, {"u": 0.5}, np.zeros(2))])  # the v2 tables work
        ws.add_suggestions(1, [dict(rank=0, item_id=1, uncertainty=0.5, coverage_gain=1.0,
                                    strategy="random")])
        ws.add_labels([LabelEntry(1, random_mask(1))])
        assert [h.revision for h in ws.label_history("a")] == [1, 2]
    with Workspace.open(root) as ws:  # a second open applies nothing more
        assert user_version(ws._conn) == SCHEMA_VERSION and len(ws.suggestions(1)) == 1


def test_failing_migration_rolls_back(tmp_path):
    conn = sqlite3.connect(tmp_path / "db", isolation_level=None)

    def broken(conn, root):
        conn.execute("CREATE TABLE half (x)")
        raise RuntimeError("migration bug")

    with pytest.raises(RuntimeError, match="migration bug"):
        apply_migrations(conn, tmp_path, [MIGRATIONS[0], (2, broken)])
    assert user_version(conn) == 1
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "half" not in tables and "items" in tables
    assert apply_migrations(conn, tmp_path, [MIGRATIONS[0], (2, ("CREATE TABLE half (x)",))]) == 2


def test_migrations_must_be_numbered_in_order(tmp_path):
    conn = sqlite3.connect(tmp_path / "db", isolation_level=None)
    with pytest.raises(ValueError, match=r"numbered 1, 2, 3"):
        apply_migrations(conn, tmp_path, [(1, ()), (3, ())])
    assert [v for v, _ in MIGRATIONS] == list(range(1, SCHEMA_VERSION + 1))
