"""Schema v5: slide_tiles, the items that are tiles of a whole-slide image."""

from __future__ import annotations

import sqlite3

import pytest

from seglearn.store import DB_NAME, SCHEMA_VERSION, SlideTile, Workspace, WorkspaceError
from seglearn.store.schema import apply_migrations, user_version

from .conftest import record
from .test_schema import make_v1


def test_a_v4_workspace_migrates_and_its_items_stay_ordinary_images(tmp_path):
    root = tmp_path / "old"
    make_v1(root)
    conn = sqlite3.connect(root / DB_NAME, isolation_level=None)
    assert apply_migrations(conn, root, upto=4) == 4
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "slide_tiles" not in tables
    conn.close()
    with Workspace.open(root) as ws:
        assert user_version(ws._conn) == SCHEMA_VERSION == 5
        a = ws.item("a")
        assert a.tile is None and a.label is not None and a.label.revision == 1
        ws.add_items([record("t", h=512, w=512, tile=SlideTile(1024, 512, 1, 2.0, 0.75))])
        assert ws.item("t").tile == SlideTile(1024, 512, 1, 2.0, 0.75)


def test_tile_items_keep_their_address_through_every_read(pool_ws):
    ws = pool_ws
    t1, t2 = SlideTile(0, 0, 0, 1.0, 1.0), SlideTile(2048, 4096, 2, 4.0, None)
    ids = ws.add_items([record("s_L0_x0_y0", tile=t1), record("s_L2_x2048_y4096", tile=t2)])
    by_id = {it.id: it.tile for it in ws.items()}
    assert by_id == {1: None, 2: None, 3: None, ids[0]: t1, ids[1]: t2}
    assert [it.tile for it in ws.unlabeled("pool")][-2:] == [t1, t2]
    assert ws.item("s_L2_x2048_y4096").tile == t2


@pytest.mark.parametrize("tile,msg", [
    (SlideTile(-1, 0, 0, 1.0), "CHECK constraint"),
    (SlideTile(0, 0, 0, 0.0), "CHECK constraint"),
    (SlideTile(0, 0, 0, 1.0, 1.5), "CHECK constraint"),
    ((0, 0, 0), "tile must be a SlideTile"),
])
def test_a_bad_tile_address_is_refused_and_nothing_is_added(pool_ws, tile, msg):
    with pytest.raises(WorkspaceError, match=msg):
        pool_ws.add_items([record("x", tile=tile)])
    assert [it.name for it in pool_ws.items()] == ["a", "b", "c"]
