"""Schema v4: pre-annotation records and labels with source 'pre-annotation'."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from seglearn.store import DB_NAME, LabelEntry, Workspace, WorkspaceError
from seglearn.store.schema import apply_migrations, user_version

from .conftest import random_mask, record
from .test_schema import make_v1


def test_v3_labels_survive_the_v4_rebuild_and_ids_keep_growing(tmp_path):
    root = tmp_path / "old"
    make_v1(root)
    conn = sqlite3.connect(root / DB_NAME, isolation_level=None)
    assert apply_migrations(conn, root, upto=3) == 3
    conn.execute("INSERT INTO labels (item_id, revision, path, source, round, created, sha256) "
                 "VALUES (1, 2, 'labels/a.r2.png', 'oracle', 1, 't2', NULL)")
    conn.execute("DELETE FROM labels WHERE revision = 2")  # id 2 used once: never to be reused
    before = conn.execute("SELECT * FROM labels").fetchall()
    conn.close()
    with Workspace.open(root) as ws:
        assert user_version(ws._conn) == 5  # migrated to the latest
        rows = ws._conn.execute("SELECT id, item_id, revision, path, source, round, created, sha256 "
                                "FROM labels").fetchall()
        assert rows == before
        lab = ws.label_history("a")[0]
        assert (lab.source, lab.pre_annotation, lab.changed) == ("expert", None, None)
        ws.add_labels([LabelEntry(1, random_mask(3))])
        assert [h.id for h in ws.label_history("a")] == [1, 3]  # AUTOINCREMENT sequence kept
        idx = {r[0] for r in ws._conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        assert {"labels_by_item", "pre_annotations_by_item"} <= idx


def test_pre_annotation_label_is_stored_with_its_origin(pool_ws):
    ws = pool_ws
    rid = ws.start_round("suggestive", "h")
    pid = ws.add_pre_annotation(rid, 2, "suggestions/round_01/b_pre.png", "f" * 64,
                                "suggestions/round_01/b_pre.geojson", "e" * 64, 3, "final r1")
    again = ws.add_pre_annotation(rid, 2, "suggestions/round_01/b_pre.png", "d" * 64, None, None,
                                  4, "final r1")  # a rerun of select replaces it
    assert again == pid
    (p,) = ws.pre_annotations(2)
    assert (p.mask_sha256, p.geojson_path, p.instances) == ("d" * 64, None, 4)
    ws.add_labels([LabelEntry(2, random_mask(1), "pre-annotation", rid, pre_annotation=pid,
                              changed=False)])
    lab = ws.item(2).label
    assert (lab.source, lab.pre_annotation, lab.changed) == ("pre-annotation", pid, False)


def test_pre_annotation_fields_must_come_together(pool_ws):
    with pytest.raises(WorkspaceError, match="does not say which pre-annotation"):
        pool_ws.add_labels([LabelEntry(1, random_mask(1), "pre-annotation")])
    with pytest.raises(WorkspaceError, match="go with source 'pre-annotation'"):
        pool_ws.add_labels([LabelEntry(1, random_mask(1), "expert", changed=True)])
    assert pool_ws.item(1).label is None


def test_unknown_item_pre_annotation_refused(pool_ws):
    rid = pool_ws.start_round("suggestive", "h")
    with pytest.raises(WorkspaceError, match="unknown item"):
        pool_ws.add_pre_annotation(rid, 99, "x.png", "f" * 64, model="m")
