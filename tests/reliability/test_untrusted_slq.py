"""A .slq file from anyone (issue 19, items 7 and 8): bounded reading and a validated graph.

Item 7: nothing is decompressed before the manifest is checked (an unlisted entry costs nothing),
declared sizes are bounded one by one and in total, and entries are streamed with their declared
size as a cap. Item 8: graph.json fields whose checksums were recomputed after editing are refused
with one `error:` line naming the field (exit 2) instead of ZeroDivisionError, KeyError,
TypeError or a 36 TiB allocation; an accumulator that could overflow is refused at load time,
naming the layer.
"""

from __future__ import annotations

import copy
import tracemalloc

import numpy as np
import pytest
from typer.testing import CliRunner

from seglearn.runtime import load_model
from seglearn.runtime import slq as S
from seglearn.runtime.slq import SlqFormatError, read_slq

from .helpers import write_png
from .slq_models import (forge_declared_size, members, model_a, model_b, npy, npy_with_header, seal, slq,
                         zip_bytes)


def traced_peak(fn) -> tuple[object, int]:
    """(fn()'s result or the exception it raised, peak bytes traced meanwhile)."""
    tracemalloc.start()
    try:
        try:
            out = fn()
        except Exception as e:  # noqa: BLE001 - returned to the caller to check
            out = e
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# ----------------------------------------------------------------------------- item 7: reading

def test_unlisted_big_entry_refused_before_decompressing(tmp_path):
    """The issue's 2.8 MB file with an unlisted 1.5 GiB entry, scaled down: 64 MiB of zeros
    (64 KB compressed) that the manifest does not list. Old code decompressed it first."""
    m = members(*model_a())
    data = zip_bytes(seal(dict(m, **{"arrays/big.npy": bytes(64 * 2**20)}), listed=set(m)))
    (tmp_path / "m.slq").write_bytes(data)
    err, peak = traced_peak(lambda: read_slq(tmp_path / "m.slq"))
    assert isinstance(err, SlqFormatError) and "'arrays/big.npy' is not listed in the manifest" in str(err)
    assert peak < 2 * 2**20, f"{peak} bytes traced: the entry was decompressed"


def test_declared_size_over_the_bound_refused_unread(tmp_path):
    """A listed entry whose central directory declares 4 GiB: refused from the declaration."""
    data = forge_declared_size(slq(*model_a()), "arrays/c1.w.npy", 2**32 - 1)
    (tmp_path / "m.slq").write_bytes(data)
    err, peak = traced_peak(lambda: read_slq(tmp_path / "m.slq"))
    assert isinstance(err, SlqFormatError), err
    assert "4294967295" in str(err) and "'arrays/c1.w.npy'" in str(err) and "bound" in str(err)
    assert peak < 2 * 2**20


def test_total_bound_counts_all_entries(tmp_path, monkeypatch):
    """Entries that each fit but together exceed MAX_TOTAL_BYTES are refused; under it they load."""
    graph, arrays = model_a()
    arrays = dict(arrays, pad1=np.zeros(3000, np.uint8), pad2=np.zeros(3000, np.uint8))
    (tmp_path / "m.slq").write_bytes(slq(graph, arrays))
    sizes = sum(len(b) for b in members(graph, arrays).values())
    monkeypatch.setattr(S, "MAX_TOTAL_BYTES", sizes - 1)
    with pytest.raises(SlqFormatError, match=f"declare {sizes} bytes uncompressed"):
        read_slq(tmp_path / "m.slq")
    monkeypatch.setattr(S, "MAX_TOTAL_BYTES", sizes)
    assert set(read_slq(tmp_path / "m.slq")[1]) == set(arrays)


def test_entry_count_bounded_before_listing(tmp_path, monkeypatch):
    m = members(*model_a())
    (tmp_path / "m.slq").write_bytes(zip_bytes(seal(m)))
    monkeypatch.setattr(S, "MAX_ENTRIES", len(m))  # members + the manifest: one too many
    with pytest.raises(SlqFormatError, match=f"has {len(m) + 1} entries"):
        read_slq(tmp_path / "m.slq")


def test_entry_longer_than_declared_is_cut_off(tmp_path):
    """A declared size smaller than the data: the stream stops at the declaration (no reading on)."""
    data = forge_declared_size(slq(*model_a()), "graph.json", 10)
    (tmp_path / "m.slq").write_bytes(data)
    with pytest.raises(SlqFormatError, match="damaged|truncated|checksum"):
        read_slq(tmp_path / "m.slq")


def test_forged_npy_shape_refused_before_allocating(tmp_path):
    """A .npy header claiming (2^40, 2^5) uint8 (the issue's 36 TiB) with the checksum recomputed."""
    graph, arrays = model_a()
    m = members(graph, arrays)
    m["arrays/lut.table.npy"] = npy_with_header(arrays["lut.table"], (2**40, 2**5))
    (tmp_path / "m.slq").write_bytes(zip_bytes(seal(m)))
    err, peak = traced_peak(lambda: read_slq(tmp_path / "m.slq"))
    assert isinstance(err, SlqFormatError), repr(err)
    assert "header says shape (1099511627776, 32)" in str(err) and "arrays/lut.table.npy" in str(err)
    assert peak < 2 * 2**20


def test_npy_dtype_must_be_integer(tmp_path):
    graph, arrays = model_a()
    m = members(graph, arrays)
    m["arrays/c4.w.npy"] = npy(arrays["c4.w"].astype(np.float32))
    (tmp_path / "m.slq").write_bytes(zip_bytes(seal(m)))
    with pytest.raises(SlqFormatError, match="arrays/c4.w.npy.*dtype float32"):
        read_slq(tmp_path / "m.slq")


def test_npy_read_matches_numpy(tmp_path):
    """The streaming .npy reader returns what np.load returns, Fortran order and 0-d included."""
    arrays = {"f": np.asfortranarray(np.arange(24, dtype=np.int16).reshape(2, 3, 4)),
              "z": np.array(7, np.uint64), "b": np.array([True, False]), "e": np.zeros((0, 3), np.int8)}
    (tmp_path / "m.slq").write_bytes(slq({"ops": []}, arrays))  # np.save as is (the writer makes C order)
    _, got = read_slq(tmp_path / "m.slq")
    for k, a in arrays.items():
        assert got[k].dtype == a.dtype and got[k].shape == a.shape, k
        np.testing.assert_array_equal(got[k], a)


# ----------------------------------------------------------------------------- item 8: the graph

def edited(fn, which=model_a) -> bytes:
    graph, arrays = which()
    graph = copy.deepcopy(graph)
    fn(graph, arrays)
    return slq(graph, arrays)


def _set(key, value):
    return lambda g, a: g.__setitem__(key, value)


def _no_out(g, a):
    del g["ops"][3]["out"]


def _lut_overflow(g, a):  # |table| 2^20 x sum|w| (36 taps of 2^12): > 2^31
    a["c4.table"] = np.full((4, 4), 2**20, np.int32)
    a["c4.w"] = np.full((4, 3, 3, 4), 2**12, np.int32)


def _pow2_overflow(g, a):  # 255 x 27 taps x 2^30
    a["c1.wshift"] = np.full((4, 3, 3, 3), 30, np.uint8)
    a["c1.wsign"] = np.ones((4, 3, 3, 3), np.int8)



def _wide_concat(g, a):  # 65 copies of a 4-channel tensor: 260 channels at full resolution
    g["ops"][7]["in"] = ["c2"] * 65


def _upsample_past_full_resolution(g, a):
    g["ops"][6]["in"] = ["c2"]


CASES = {  # id: (model file bytes, what the message must contain)
    "multiple-0": (edited(_set("multiple", 0)), ["multiple must be an integer in [1, 1024], got 0"]),
    "op-without-out": (edited(_no_out), ["ops[3] (maxpool)", "has no output tensor name ('out')"]),
    "postprocess-list": (edited(_set("postprocess", [1, 2])), ["postprocess must be an object, got list"]),
    "postprocess-field": (edited(_set("postprocess", {"min_area": "big"})),
                          ["postprocess: postprocess.min_area must be int, not 'big'"]),
    "scale-1e30": (edited(_set("scale", 1e30)), ["scale must be a number in [0.000976562, 4], got 1e+30"]),
    "scale-nan": (edited(_set("scale", float("nan"))), ["scale must be a number", "got nan"]),
    "wide-concat": (edited(_wide_concat), ["ops[7] (concat -> c7)", "has 260 channels at level 0 (at most 256)"]),
    "upsample-level": (edited(_upsample_past_full_resolution),
                       ["ops[6] (upsample -> c6)", "resolution to level -1"]),
    "lut-overflow": (edited(_lut_overflow), ["ops[4] (conv_lut -> a4, layer conv4)",
                                             "worst-case |accumulator| exceeds int32"]),
    "pow2-overflow": (edited(_pow2_overflow, model_b), ["ops[1] (conv_pow2 -> a1, layer conv1)",
                                                        "worst-case |accumulator|", "exceeds int32"]),
}
_g, _a = model_a()
_m = members(_g, _a)
_m["arrays/c1.w.npy"] = npy_with_header(_a["c1.w"], (2**40, 2**5, 1, 1))
CASES["npy-36TiB"] = (zip_bytes(seal(_m)), ["arrays/c1.w.npy", "header says shape (1099511627776, 32, 1, 1)"])


@pytest.mark.parametrize("case", sorted(CASES))
def test_edited_graph_refused_at_load_naming_the_field(case, tmp_path):
    data, needles = CASES[case]
    (tmp_path / "m.slq").write_bytes(data)
    err, peak = traced_peak(lambda: load_model(tmp_path / "m.slq", kernels="ref"))
    assert isinstance(err, SlqFormatError), repr(err)
    for n in needles:
        assert n in str(err), str(err)
    assert peak < 4 * 2**20


@pytest.mark.parametrize("case", ["multiple-0", "op-without-out", "postprocess-list", "scale-1e30",
                                  "lut-overflow", "npy-36TiB"])
def test_cli_predict_prints_one_error_line(case, tmp_path, monkeypatch):
    """`seglearn predict` on the edited file: exit 2, one `error:` line naming the field, no
    traceback, no output written."""
    from seglearn.cli.app import app

    data, needles = CASES[case]
    (tmp_path / "m.slq").write_bytes(data)
    write_png(tmp_path / "in" / "x.png", np.random.default_rng(0).integers(0, 255, (8, 10, 3), np.uint8))
    monkeypatch.setenv("COLUMNS", "1000")
    r = CliRunner().invoke(app, ["predict", str(tmp_path / "m.slq"), str(tmp_path / "in" / "x.png"),
                                 "--out", str(tmp_path / "out")])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and isinstance(r.exception, SystemExit), r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "m.slq" in lines[0], r.output
    for n in needles:
        assert n in r.output, r.output
    assert not any((tmp_path / "out").glob("*.png"))


def test_unedited_models_run(tmp_path):
    """The two base models load and predict (so the refusals above are the edits' doing)."""
    for i, make in enumerate((model_a, model_b)):
        (tmp_path / f"{i}.slq").write_bytes(slq(*make()))
        lab = load_model(tmp_path / f"{i}.slq", kernels="ref").predict(np.zeros((6, 8, 3), np.uint8))
        assert lab.shape == (6, 8) and lab.dtype == np.int32


def test_schema_covers_every_op_kind():
    """An op kind added to the interpreter without a schema entry would be refused as unknown."""
    from seglearn.runtime.graph import OP_KINDS
    from seglearn.runtime.schema import SPECS

    assert set(SPECS) == set(OP_KINDS)


NO_TORCH = """
import importlib.abc, sys
class BlockTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, BlockTorch())
import numpy as np
from seglearn.runtime import load_model
from seglearn.runtime.slq import SlqFormatError
print(load_model(sys.argv[1], kernels="ref").predict(np.zeros((4, 6, 3), np.uint8)).shape)
try:
    load_model(sys.argv[2], kernels="ref")
except SlqFormatError as e:
    print("refused", e)
assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules), "torch got imported"
"""


def test_validation_runs_without_torch(tmp_path):
    import subprocess
    import sys

    (tmp_path / "ok.slq").write_bytes(slq(*model_a()))
    (tmp_path / "bad.slq").write_bytes(CASES["multiple-0"][0])
    r = subprocess.run([sys.executable, "-c", NO_TORCH, str(tmp_path / "ok.slq"), str(tmp_path / "bad.slq")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "(4, 6)" in r.stdout and "refused" in r.stdout and "multiple must be" in r.stdout, r.stdout
