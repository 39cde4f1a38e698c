"""Creating and opening workspaces: layout, force, failures that leave nothing behind."""

from __future__ import annotations

import sqlite3

import pytest

from seglearn.store import DB_NAME, SCHEMA_VERSION, SUBDIRS, Workspace, WorkspaceError
from seglearn.store import workspace as wsmod


def test_create_makes_layout_and_reopens(tmp_path):
    root = tmp_path / "nested" / "ws"
    with Workspace.create(root) as ws:
        assert ws.root == root and ws.db_path == root / DB_NAME
        ws.set_meta("config", {"budget": 8, "scales": [1, 0.5]})
    assert all((root / s).is_dir() for s in SUBDIRS)
    with Workspace.open(root) as ws:
        assert ws.meta("config") == {"budget": 8, "scales": [1, 0.5]}
        assert ws.meta("absent", default=3) == 3
        conn = ws._conn
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"items", "labels", "rounds", "models", "scores", "suggestions", "meta"} <= tables
    assert [p.name for p in tmp_path.joinpath("nested").iterdir()] == ["ws"]  # no temp siblings


def test_create_into_empty_folder(tmp_path):
    (tmp_path / "ws").mkdir()
    Workspace.create(tmp_path / "ws").close()
    assert (tmp_path / "ws" / DB_NAME).is_file()


def test_create_refuses_non_empty_and_files(tmp_path):
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "precious.txt").write_text("annotations")
    with pytest.raises(WorkspaceError, match=r"not empty.*force"):
        Workspace.create(tmp_path / "ws")
    assert (tmp_path / "ws" / "precious.txt").read_text() == "annotations"
    (tmp_path / "file").write_text("x")
    with pytest.raises(WorkspaceError, match="is a file"):
        Workspace.create(tmp_path / "file", force=True)


def test_force_replaces(tmp_path):
    with Workspace.create(tmp_path / "ws") as ws:
        ws.set_meta("old", True)
    (tmp_path / "ws" / "stray.txt").write_text("x")
    with Workspace.create(tmp_path / "ws", force=True) as ws:
        assert ws.meta("old") is None
    assert not (tmp_path / "ws" / "stray.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ws"]


def test_failed_create_leaves_nothing(tmp_path, monkeypatch):
    def broken(folder):
        (folder / "images").mkdir()
        raise OSError("disk full")

    with Workspace.create(tmp_path / "old") as ws:  # before _build breaks
        ws.set_meta("keep", "k")
    monkeypatch.setattr(wsmod, "_build", broken)
    with pytest.raises(OSError, match="disk full"):
        Workspace.create(tmp_path / "ws")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old"]
    # a failed forced create leaves the old workspace as it was
    with pytest.raises(OSError):
        Workspace.create(tmp_path / "old", force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old"]
    with Workspace.open(tmp_path / "old") as ws:
        assert ws.meta("keep") == "k"


def test_open_non_workspaces(tmp_path):
    with pytest.raises(WorkspaceError, match=f"{tmp_path / 'missing'}.*no such folder"):
        Workspace.open(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(WorkspaceError, match=f"{tmp_path / 'empty'} is not a seglearn workspace"):
        Workspace.open(tmp_path / "empty")
    text = tmp_path / "text"
    text.mkdir()
    (text / DB_NAME).write_bytes(b"hello, this is not SQLite" * 10)
    with pytest.raises(WorkspaceError, match="not a readable SQLite database"):
        Workspace.open(text)
    assert (text / DB_NAME).read_bytes() == b"hello, this is not SQLite" * 10  # untouched
    other = tmp_path / "other"
    other.mkdir()
    conn = sqlite3.connect(other / DB_NAME)
    conn.execute("CREATE TABLE items (x)")
    conn.commit()
    conn.close()
    with pytest.raises(WorkspaceError, match="another application"):
        Workspace.open(other)


def test_open_newer_schema(tmp_path):
    Workspace.create(tmp_path / "ws").close()
    conn = sqlite3.connect(tmp_path / "ws" / DB_NAME)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(WorkspaceError, match=rf"{tmp_path / 'ws'}.*schema version {SCHEMA_VERSION + 1}.*upgrade"):
        Workspace.open(tmp_path / "ws")


def test_relative_and_outside_paths(ws, tmp_path):
    assert ws.relpath(ws.root / "images" / "a.png") == "images/a.png"
    assert ws.relpath(tmp_path / "elsewhere.png") == str(tmp_path / "elsewhere.png")
    assert ws.resolve("images/a.png") == ws.root / "images" / "a.png"
    assert ws.resolve(str(tmp_path / "x")) == tmp_path / "x"
