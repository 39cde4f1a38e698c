"""The .slq container: round trip, and every damaged file is a SlqFormatError with a clear message."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile

import numpy as np
import pytest

from seglearn.runtime.slq import FORMAT_VERSION, SlqFormatError, read_slq, write_slq


@pytest.fixture
def good(tmp_path):
    arrays = {"w": np.arange(-6, 6, dtype=np.int8).reshape(3, 4), "t": np.array([[1, 5]], np.int32),
              "p": np.array([2**63 + 5], np.uint64)}
    path = write_slq(tmp_path / "m.slq", {"ops": [{"op": "x"}], "note": "hello"}, arrays)
    return path, arrays


def _members(path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def _write(path, members: dict[str, bytes]):
    with zipfile.ZipFile(path, "w") as zf:
        for n, b in members.items():
            zf.writestr(n, b)
    return path


def _reseal(members: dict[str, bytes]) -> dict[str, bytes]:
    """Recompute the manifest so only the change under test is wrong."""
    man = json.loads(members["manifest.json"])
    man["entries"] = {n: hashlib.sha256(b).hexdigest() for n, b in members.items() if n != "manifest.json"}
    return dict(members, **{"manifest.json": json.dumps(man).encode()})


def test_round_trip(good):
    path, arrays = good
    graph, got = read_slq(path)
    assert graph["note"] == "hello" and graph["format_version"] == FORMAT_VERSION
    assert set(got) == set(arrays)
    for k, a in arrays.items():
        assert got[k].dtype == a.dtype
        np.testing.assert_array_equal(got[k], a)


def test_truncated(good, tmp_path):
    path, _ = good
    data = path.read_bytes()
    (tmp_path / "t.slq").write_bytes(data[: len(data) // 2])
    with pytest.raises(SlqFormatError, match="truncated|not a readable"):
        read_slq(tmp_path / "t.slq")


def test_tampered_array_byte(good, tmp_path):
    path, _ = good
    m = _members(path)
    b = bytearray(m["arrays/w.npy"])
    b[-1] ^= 1
    m["arrays/w.npy"] = bytes(b)
    with pytest.raises(SlqFormatError, match="arrays/w.npy"):
        read_slq(_write(tmp_path / "x.slq", m))


def test_newer_version(good, tmp_path):
    path, _ = good
    m = _members(path)
    g = json.loads(m["graph.json"])
    g["format_version"] = FORMAT_VERSION + 1
    m["graph.json"] = json.dumps(g).encode()
    with pytest.raises(SlqFormatError, match="newer seglearn"):
        read_slq(_write(tmp_path / "x.slq", _reseal(m)))


@pytest.mark.parametrize("name", ["../x", "/abs/x", "arrays/../../x", "arrays\\x.npy", "C:/x"])
def test_escaping_names_rejected_before_reading(good, tmp_path, name):
    path, _ = good
    m = _members(path)
    m[name] = b"evil"
    with pytest.raises(SlqFormatError, match="unsafe entry name"):
        read_slq(_write(tmp_path / "x.slq", _reseal(m)))


def test_entry_missing_from_manifest(good, tmp_path):
    path, _ = good
    m = _members(path)
    m["arrays/extra.npy"] = m["arrays/w.npy"]
    with pytest.raises(SlqFormatError, match="not listed in the manifest"):
        read_slq(_write(tmp_path / "x.slq", m))
    del m["manifest.json"]
    del m["arrays/extra.npy"]
    with pytest.raises(SlqFormatError, match="no manifest.json"):
        read_slq(_write(tmp_path / "y.slq", m))


def test_listed_entry_missing(good, tmp_path):
    path, _ = good
    m = _members(path)
    del m["arrays/t.npy"]
    with pytest.raises(SlqFormatError, match="lacks it"):
        read_slq(_write(tmp_path / "x.slq", m))


def test_pickled_array_refused(good, tmp_path):
    path, _ = good
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    m = _members(path)
    m["arrays/w.npy"] = buf.getvalue()
    with pytest.raises(SlqFormatError, match="plain .npy"):
        read_slq(_write(tmp_path / "x.slq", _reseal(m)))
    with pytest.raises(SlqFormatError, match="object arrays"):
        write_slq(tmp_path / "y.slq", {}, {"o": np.array([None], dtype=object)})
    with pytest.raises(SlqFormatError, match="plain file name"):
        write_slq(tmp_path / "y.slq", {}, {"../w": np.zeros(1)})


def test_same_model_same_bytes(tmp_path):
    """Entry timestamps are fixed: writing the same graph twice, seconds apart, gives one file."""
    import time

    import numpy as np

    from seglearn.runtime.slq import write_slq

    arrays = {"w": np.arange(12, dtype=np.int8).reshape(3, 4)}
    write_slq(tmp_path / "a.slq", {"ops": []}, arrays)
    time.sleep(2.1)  # the zip format stores times in 2 s steps
    write_slq(tmp_path / "b.slq", {"ops": []}, arrays)
    assert (tmp_path / "a.slq").read_bytes() == (tmp_path / "b.slq").read_bytes()
