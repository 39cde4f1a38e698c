"""Items: insertion in one transaction, duplicates, lookups and filters."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest

from seglearn.store import Item, LabelEntry, WorkspaceError

from .conftest import H, SHA, W, random_mask, record


def test_add_and_lookup(ws):
    ids = ws.add_items([record("a"), record("b", split="test", mask_path="oracle/b.png"),
                        record("c", split="train", h=3, w=4)])
    assert ids == [1, 2, 3]
    b = ws.item("b")
    assert isinstance(b, Item) and b.id == 2 and b.split == "test"
    assert (b.height, b.width, b.sha256, b.image_path) == (H, W, SHA, "images/b.png")
    assert b.oracle_mask_path == "oracle/b.png" and b.label is None and not b.labeled
    assert ws.item(3).name == "c" and ws.item(np.int64(1)).name == "a"
    assert [it.name for it in ws.items()] == ["a", "b", "c"]
    assert [it.name for it in ws.items(split="test")] == ["b"]
    for key in (99, "zz"):
        with pytest.raises(WorkspaceError, match="unknown item"):
            ws.item(key)
    with pytest.raises(WorkspaceError, match="unknown split 'val'"):
        ws.items(split="val")


def test_duplicates_add_nothing(ws):
    with pytest.raises(WorkspaceError, match="duplicate item name 'a'"):
        ws.add_items([record("a"), record("b"), record("a")])
    assert ws.items() == []
    ws.add_items([record("a")])
    with pytest.raises(WorkspaceError, match="'a' already exists"):
        ws.add_items([record("new"), record("a")])
    assert [it.name for it in ws.items()] == ["a"]  # "new" rolled back with the batch


@pytest.mark.parametrize("bad, message", [
    (dict(split="val"), "unknown split"),
    (dict(h=0), "height must be a positive integer"),
    (dict(w=2.5), "width must be a positive integer"),
    (dict(labeled=True), "labeled but has no mask_path"),
])
def test_record_validation(ws, bad, message):
    with pytest.raises(WorkspaceError, match=message):
        ws.add_items([record("x", **bad)])
    assert ws.items() == []


def test_bad_sha_and_name(ws):
    from seglearn.store import ItemRecord
    with pytest.raises(WorkspaceError, match="sha256"):
        ws.add_items([ItemRecord("x", "i.png", "pool", 2, 2, "abc")])
    with pytest.raises(WorkspaceError, match="non-empty"):
        ws.add_items([ItemRecord("", "i.png", "pool", 2, 2, SHA)])


def test_filters_and_training_items(pool_ws):
    ws = pool_ws
    ws.add_items([record("t", split="train"), record("u", split="train"), record("x", split="test")])
    labeled = {"a", "t", "x"}
    ws.add_labels([LabelEntry(ws.item(n).id, random_mask(i)) for i, n in enumerate(sorted(labeled))])
    names = lambda items: {it.name for it in items}  # noqa: E731
    assert names(ws.labeled()) == {"a"}
    assert names(ws.unlabeled()) == {"b", "c"}
    assert names(ws.labeled("train")) == {"t"} and names(ws.unlabeled("train")) == {"u"}
    assert names(ws.items(labeled=True)) == labeled
    assert names(ws.training_items()) == {"a", "t"}  # never test, never unlabeled pool
    st = ws.status()
    for split in ("train", "pool", "test"):
        items = ws.items(split=split)
        assert st["splits"][split] == {"total": len(items),
                                       "labeled": sum(it.labeled for it in items),
                                       "unlabeled": sum(not it.labeled for it in items)}
    assert (st["items"], st["labeled"], st["unlabeled"]) == (6, 3, 3)


def test_labeled_import_copies_mask(ws):
    mask = random_mask(5).astype(np.uint16)
    iio.imwrite(ws.root / "oracle" / "a.png", mask)
    iio.imwrite(ws.root / "oracle" / "small.png", mask[:3])
    ws.add_items([record("a", split="train", mask_path=str(ws.root / "oracle" / "a.png"), labeled=True),
                  record("b", mask_path="oracle/a.png")])
    a, b = ws.item("a"), ws.item("b")
    assert a.oracle_mask_path == "oracle/a.png"  # stored relative to the root
    assert a.label.source == "import" and a.label.revision == 1 and a.label.path.startswith("labels/")
    assert np.array_equal(ws.read_label("a"), mask)
    assert b.label is None  # a mask alone is the hidden oracle, not a label
    assert np.array_equal(ws.read_oracle("b"), mask)
    with pytest.raises(WorkspaceError, match=r"'s'.*3x7 \(height x width\).*6x7"):
        ws.add_items([record("s", mask_path="oracle/small.png", labeled=True)])
    with pytest.raises(WorkspaceError, match="cannot read the mask of item 'm'"):
        ws.add_items([record("m", mask_path="oracle/missing.png", labeled=True)])
    assert [it.name for it in ws.items()] == ["a", "b"]
