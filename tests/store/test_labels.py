"""Labels: exact round trip, all-or-nothing writes, history, checksums, orphan repair."""

from __future__ import annotations

import hashlib

import imageio.v3 as iio
import numpy as np
import pytest

from seglearn.store import LabelEntry, WorkspaceError
from seglearn.store import labelio

from .conftest import random_mask, record


def files(ws):
    return sorted(p.name for p in (ws.root / "labels").iterdir())


def test_round_trip_is_exact_uint16_png(pool_ws):
    ws = pool_ws
    mask = random_mask(0)
    mask[0, 0] = 65535
    ws.add_labels([LabelEntry(1, mask, source="expert", round=2),
                   LabelEntry(2, np.zeros((6, 7), bool))])
    got = ws.read_label(1)
    assert got.dtype == np.int32 and np.array_equal(got, mask)
    assert np.array_equal(ws.read_label("b"), np.zeros((6, 7)))
    lab = ws.item(1).label
    assert (lab.source, lab.round, lab.revision) == ("expert", 2, 1)
    on_disk = iio.imread(ws.resolve(lab.path))  # an independent reader sees a uint16 PNG
    assert on_disk.dtype == np.uint16 and np.array_equal(on_disk, mask)
    assert lab.sha256 == hashlib.sha256(ws.resolve(lab.path).read_bytes()).hexdigest()


@pytest.mark.parametrize("mask, message", [
    (np.zeros((6, 8), int), r"item 'b' \(id 2\) is 6x8 \(height x width\) but the item is 6x7"),
    (np.zeros((6, 7), float), "integer instance labels"),
    (np.full((6, 7), -1), r"labels in \[-1, -1\]"),
    (np.full((6, 7), 70000), r"\[0, 65535\]"),
    (np.zeros((6, 7, 3), int), "must be 2-D"),
    ([[0]], "numpy array"),
])
def test_bad_second_mask_stores_nothing(pool_ws, mask, message):
    with pytest.raises(WorkspaceError, match=message):
        pool_ws.add_labels([LabelEntry(1, random_mask(0)), LabelEntry(2, mask)])
    assert pool_ws.items(labeled=True) == [] and files(pool_ws) == []


def test_unknown_item_and_source(pool_ws):
    with pytest.raises(WorkspaceError, match="unknown item 42"):
        pool_ws.add_labels([LabelEntry(1, random_mask(0)), LabelEntry(42, random_mask(1))])
    with pytest.raises(WorkspaceError, match="unknown label source 'guess'"):
        pool_ws.add_labels([LabelEntry(1, random_mask(0), source="guess")])
    assert pool_ws.items(labeled=True) == [] and files(pool_ws) == []


def test_write_failure_after_first_file_is_all_or_nothing(pool_ws, monkeypatch):
    ws = pool_ws
    old = random_mask(0)
    ws.add_labels([LabelEntry(1, old)])
    before = files(ws)
    real, calls = labelio.write_atomic, []

    def flaky(path, data):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("No space left on device")
        real(path, data)

    monkeypatch.setattr(labelio, "write_atomic", flaky)
    with pytest.raises(WorkspaceError, match="cannot write label file.*No space left"):
        ws.add_labels([LabelEntry(1, random_mask(1)), LabelEntry(2, random_mask(2))])
    assert len(calls) == 2 and calls[0].exists() is False  # the first file was written, then removed
    assert files(ws) == before  # no stray files, not even temp files
    assert [it.name for it in ws.items(labeled=True)] == ["a"]
    assert np.array_equal(ws.read_label(1), old) and len(ws.label_history(1)) == 1


def test_failure_at_commit_removes_files(pool_ws, monkeypatch):
    def boom(self, what):
        assert len(files(self)) == 2  # both files are on disk inside the transaction
        raise RuntimeError("killed at commit")

    monkeypatch.setattr(type(pool_ws), "_before_commit", boom)
    with pytest.raises(RuntimeError):
        pool_ws.add_labels([LabelEntry(1, random_mask(0)), LabelEntry(2, random_mask(1))])
    assert pool_ws.items(labeled=True) == [] and files(pool_ws) == []


def test_relabel_keeps_history(pool_ws):
    ws = pool_ws
    first, second, third = random_mask(1), random_mask(2), random_mask(3)
    ws.add_labels([LabelEntry(1, first, source="oracle", round=0)])
    ws.add_labels([LabelEntry(1, second, source="expert", round=1)])
    ws.add_labels([LabelEntry(1, third, source="expert", round=2), LabelEntry(3, first)])
    hist = ws.label_history("a")
    assert [h.revision for h in hist] == [1, 2, 3]
    assert [h.source for h in hist] == ["oracle", "expert", "expert"] and [h.round for h in hist] == [0, 1, 2]
    assert len({h.path for h in hist}) == 3  # never overwritten
    assert ws.item("a").label == hist[-1]
    assert np.array_equal(ws.read_label("a"), third)
    assert np.array_equal(ws.read_label("a", revision=1), first)
    assert np.array_equal(ws.read_label("a", revision=2), second)
    with pytest.raises(WorkspaceError, match="no label revision 9"):
        ws.read_label("a", revision=9)
    with pytest.raises(WorkspaceError, match="'b' \\(id 2\\) has no label"):
        ws.read_label("b")


def test_corrupt_or_missing_label_file_is_reported(pool_ws):
    ws = pool_ws
    ws.add_labels([LabelEntry(1, random_mask(0)), LabelEntry(2, random_mask(1))])
    path = ws.resolve(ws.item(1).label.path)
    data = bytearray(path.read_bytes())
    data[-20] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(WorkspaceError, match=f"{path}.*corrupt"):
        ws.read_label(1)
    ws.resolve(ws.item(2).label.path).unlink()
    with pytest.raises(WorkspaceError, match="cannot be read"):
        ws.read_label(2)
    assert ws.check()["missing"] == [ws.item(2).label.path]


def test_odd_names_get_safe_distinct_files(ws):
    ids = ws.add_items([record(n) for n in ["a/b", "a_b", "../x", "é"]])
    ws.add_labels([LabelEntry(i, random_mask(i)) for i in ids])
    paths = [ws.item(i).label.path for i in ids]
    assert len(set(paths)) == 4
    for p in paths:
        assert ws.resolve(p).parent == ws.root / "labels"
    for i in ids:
        assert np.array_equal(ws.read_label(i), random_mask(i))


def test_check_repair_moves_only_orphans_and_deletes_nothing(pool_ws):
    ws = pool_ws
    ws.add_labels([LabelEntry(1, random_mask(0))])
    orphan = ws.root / "labels" / "b.r1.png"
    orphan.write_bytes(b"left by a killed process")
    report = ws.check()
    assert report == {"integrity": "ok", "missing": [], "orphans": ["labels/b.r1.png"]}
    assert ws.check(repair=True)["moved_to"] == "labels/orphans"
    assert not orphan.exists() and ws.check()["orphans"] == []
    kept = ws.root / "labels" / "orphans" / "b.r1.png"
    assert kept.read_bytes() == b"left by a killed process"  # e.g. a label newer than a restored db
    orphan.write_bytes(b"a second one of that name")
    ws.check(repair=True)
    assert kept.read_bytes() == b"left by a killed process"
    assert (ws.root / "labels" / "orphans" / "b.r1.1.png").read_bytes() == b"a second one of that name"
    assert np.array_equal(ws.read_label(1), random_mask(0))
