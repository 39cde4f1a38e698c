"""Image files are checked against the SHA-256 recorded at import (issue 19 item 4).

``Workspace.image_file`` stats the file; only when size or mtime_ns differ from the stamp stored
with the hash (or no stamp is stored: a workspace made before schema v3) is the file hashed. An
unchanged file gets its new stamp recorded; a changed one is refused with its path in the message.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3

import pytest

from seglearn.store import DB_NAME, SCHEMA_VERSION, ItemRecord, Workspace, WorkspaceError, digest
from seglearn.store.schema import apply_migrations, user_version

from .conftest import H, SHA, W


def write_image(path, data: bytes = b"\x89PNG pretend image bytes " * 40):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


_file_digest = digest.file_digest  # the real one, for the test's own setup (not counted)


def stamped(name: str, path) -> ItemRecord:
    d = _file_digest(path)
    return ItemRecord(name, str(path), "pool", H, W, d.sha256, image_size=d.size,
                      image_mtime_ns=d.mtime_ns)


def stamp_row(ws, name):
    return ws._conn.execute("SELECT image_size, image_mtime_ns FROM items WHERE name = ?",
                            (name,)).fetchone()


@pytest.fixture
def hashes(monkeypatch):
    """Counts the files hashed (through the one helper, store.digest.file_digest)."""
    calls = []
    real = digest.file_digest

    def counting(path):
        calls.append(str(path))
        return real(path)

    monkeypatch.setattr(digest, "file_digest", counting)
    return calls


def test_file_digest_against_hashlib_and_stat(tmp_path):
    data = os.urandom(3 << 20)  # several read chunks
    p = write_image(tmp_path / "x.bin", data)
    d = digest.file_digest(p)
    st = os.stat(p)
    assert d == digest.FileDigest(hashlib.sha256(data).hexdigest(), len(data), st.st_mtime_ns)
    assert digest.file_sha256(p) == d.sha256 == digest.bytes_sha256(data)


def test_unchanged_image_is_not_hashed(ws, tmp_path, hashes):
    img = write_image(tmp_path / "src" / "a.png")
    ws.add_items([stamped("a", img)])
    assert ws.image_file("a") == img
    assert hashes == []  # size and mtime match the stamp taken with the hash


def test_edited_image_is_refused(ws, tmp_path, hashes):
    img = write_image(tmp_path / "src" / "a.png")
    ws.add_items([stamped("a", img)])
    before = stamp_row(ws, "a")
    data = bytearray(img.read_bytes())
    data[10] ^= 0xFF  # same size, one byte different
    img.write_bytes(bytes(data))
    with pytest.raises(WorkspaceError, match=f"image file {img} of item 'a' has changed since it "
                                             "was imported"):
        ws.image_file("a")
    assert hashes == [str(img)]
    assert stamp_row(ws, "a") == before  # the changed file's stamp is never recorded
    with pytest.raises(WorkspaceError, match="has changed"):  # and it stays refused
        ws.image_file("a")


def test_touched_image_is_hashed_once_and_restamped(ws, tmp_path, hashes):
    img = write_image(tmp_path / "src" / "a.png")
    ws.add_items([stamped("a", img)])
    st = os.stat(img)
    os.utime(img, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))  # e.g. copied without -p
    assert ws.image_file("a") == img
    assert hashes == [str(img)]
    assert stamp_row(ws, "a") == (st.st_size, st.st_mtime_ns + 5_000_000_000)
    ws.image_file("a")
    assert hashes == [str(img)]  # the new stamp is trusted from now on


def test_record_without_stamp_is_hashed_on_first_read(ws, tmp_path, hashes):
    img = write_image(tmp_path / "src" / "a.png")
    ws.add_items([ItemRecord("a", str(img), "pool", H, W, _file_digest(img).sha256)])
    assert stamp_row(ws, "a") == (None, None)
    ws.image_file("a")
    st = os.stat(img)
    assert stamp_row(ws, "a") == (st.st_size, st.st_mtime_ns) and hashes == [str(img)]


def test_missing_image_names_the_file(ws, tmp_path):
    img = write_image(tmp_path / "src" / "a.png")
    ws.add_items([stamped("a", img)])
    img.unlink()
    with pytest.raises(WorkspaceError, match=f"image file {img} of item 'a' cannot be read"):
        ws.image_file("a")


def test_relative_image_path_is_checked_inside_the_workspace(ws):
    img = write_image(ws.root / "images" / "a.png")
    ws.add_items([stamped("a", img)])
    assert ws.item("a").image_path == "images/a.png"  # stored relative, resolved on read
    img.write_bytes(b"other")
    with pytest.raises(WorkspaceError, match=f"image file {img} .*has changed"):
        ws.image_file("a")


@pytest.mark.parametrize("field,value", [("image_size", -1), ("image_mtime_ns", "1"),
                                         ("image_size", True)])
def test_bad_stamp_in_record(ws, field, value):
    rec = ItemRecord("a", "images/a.png", "pool", H, W, SHA, **{field: value})
    with pytest.raises(WorkspaceError, match=f"item 'a': {field} must be None or an integer"):
        ws.add_items([rec])


def make_v2(root, image_path, sha):
    """A workspace as schema version 2 wrote it: items without a stamp."""
    root.mkdir(parents=True)
    conn = sqlite3.connect(root / DB_NAME, isolation_level=None)
    assert apply_migrations(conn, root, upto=2) == 2
    conn.execute("INSERT INTO items (name, image_path, split, height, width, sha256, added) "
                 "VALUES ('a', ?, 'pool', 6, 7, ?, 't0')", (str(image_path), sha))
    conn.close()


def test_v2_workspace_upgrades_and_checks_on_first_read(tmp_path):
    img = write_image(tmp_path / "src" / "a.png")
    make_v2(tmp_path / "old", img, digest.file_sha256(img))
    with Workspace.open(tmp_path / "old") as ws:
        assert user_version(ws._conn) == SCHEMA_VERSION == 5
        assert stamp_row(ws, "a") == (None, None)  # not backfilled: the file is not trusted yet
        assert ws.image_file("a") == img
        assert stamp_row(ws, "a") == (os.stat(img).st_size, os.stat(img).st_mtime_ns)


def test_v2_workspace_with_an_edited_image(tmp_path):
    img = write_image(tmp_path / "src" / "a.png")
    make_v2(tmp_path / "old", img, digest.file_sha256(img))
    img.write_bytes(img.read_bytes() + b"!")  # edited after init, before the upgrade
    with Workspace.open(tmp_path / "old") as ws:
        with pytest.raises(WorkspaceError, match=f"image file {img} of item 'a' has changed"):
            ws.image_file("a")
        assert stamp_row(ws, "a") == (None, None)
