"""The op table ``runtime.ops.OPS`` is the one list of op kinds: every kind's fast kernel equals its
reference kernel exactly (an op added to OPS without a case here fails the test), and the
interpreter and the schema take a new kind from the table alone."""

from __future__ import annotations

import numpy as np
import pytest

from seglearn.runtime import graph as G
from seglearn.runtime import schema
from seglearn.runtime.bitpack import bitplanes, pack_bits, pack_signs
from seglearn.runtime.fixedpoint import quantize_multipliers
from seglearn.runtime.ops import OPS, Op, Spec


def _rng(kind: str) -> np.random.Generator:
    return np.random.default_rng(sum(map(ord, kind)))


def _codes(r, h, w, c, top=255):
    return r.integers(0, top + 1, (h, w, c)).astype(np.uint8)


def _acc(r, h, w, c, lim=60):
    return r.integers(-lim, lim + 1, (h, w, c)).astype(np.int32)


def _dirs(r, c):
    return r.choice([-1, 1], c).astype(np.int8)


def _mult(r, c, lo=0.002, hi=0.4):
    return quantize_multipliers(r.uniform(lo, hi, c))


def _lut_u8(r):
    return [([_codes(r, 5, 6, 3)], {"table": r.integers(0, 16, (3, 256)).astype(np.uint8)}, {})]


def _threshold(r):
    t = np.sort(r.integers(-40, 41, (4, 3)), axis=1).astype(np.int32)
    return [([_acc(r, 5, 6, 4)], {"t": t, "direction": _dirs(r, 4)}, {})]


def _pool_like(r):
    return [([_codes(r, 6, 8, 3)], {}, {})]


def _upsample(r):
    packed = r.integers(0, 2**63, (3, 4, 2), dtype=np.uint64)
    return [([_codes(r, 3, 4, 3)], {}, {}), ([packed], {}, {})]


def _concat(r):
    return [([_codes(r, 4, 4, 2), _codes(r, 4, 4, 3)], {}, {})]


def _conv_int8(r):
    w = r.integers(-127, 128, (4, 3, 3, 3)).astype(np.int8)
    return [([_codes(r, 6, 7, 3)], {"w": w}, {"zp": 7, "padding": 1}),
            ([_codes(r, 5, 5, 3)], {"w": w[:, :1, :1]}, {"zp": 0})]


def _conv_pow2(r):
    A = {"wsign": r.integers(-1, 2, (4, 3, 3, 5)).astype(np.int8),
         "wshift": r.integers(0, 5, (4, 3, 3, 5)).astype(np.uint8)}
    # INQ-7's shifts up to 15: float32 GEMM of the split weights (checks.gemm_split_plan)
    inq = {"wsign": A["wsign"][:3], "wshift": r.integers(0, 16, (3, 3, 3, 5)).astype(np.uint8)}
    return [([_codes(r, 6, 7, 5)], A, {"zp": 3, "padding": 1}), ([_codes(r, 5, 7, 5)], inq, {"zp": 0, "padding": 1})]


def _binary_inputs(r, cin):
    bits = r.integers(0, 2, (6, 7, cin)).astype(np.uint8)
    return [bits], [pack_bits(bits)]


def _conv_binary(r):
    cases = []
    for cin in (5, 70):
        wp = pack_signs(r.choice([-1, 1], (3, 3, 3, cin)).astype(np.int8))
        unpacked, packed = _binary_inputs(r, cin)
        cases += [(unpacked, {"wp": wp}, {"cin": cin, "padding": 1}),
                  (packed, {"wp": wp}, {"cin": cin, "padding": 1, "packed": True})]
    return cases


def _conv_binary_threshold(r):
    cin, cout = 9, 66
    A = {"wp": pack_signs(r.choice([-1, 1], (cout, 3, 3, cin)).astype(np.int8)),
         "tau": r.integers(-6, 7, cout).astype(np.int32), "direction": _dirs(r, cout)}
    unpacked, packed = _binary_inputs(r, cin)
    return [(unpacked, A, {"cin": cin, "padding": 1}), (packed, A, {"cin": cin, "padding": 1, "packed": True})]


def _threshold_pack(r):
    return [([_acc(r, 5, 6, 70)], {"tau": r.integers(-5, 6, 70).astype(np.int32), "direction": _dirs(r, 70)}, {})]


def _maxpool_packed(r):
    return [([r.integers(0, 2**63, (6, 6, 2), dtype=np.uint64)], {}, {})]


def _concat_packed(r):
    def part(c):
        return pack_bits(r.integers(0, 2, (4, 4, c)).astype(np.uint8))

    return [([part(5), part(70)], {}, {"channels": [5, 70]}),   # unpack and repack
            ([part(64), part(3)], {}, {"channels": [64, 3]})]   # whole words: word concat


def _requant(r):
    c = 6
    m0, sh = _mult(r, c)
    A = {"sign": _dirs(r, c), "bias": r.integers(-300, 301, c).astype(np.int32), "M0": m0, "shift": sh,
         "in_shift": r.integers(0, 4, c).astype(np.int8)}
    return [([_acc(r, 5, 6, c, 2000)], A, {"zp": 9, "lo": 0, "hi": 255}),
            ([_acc(r, 5, 6, c, 2000)], A, {"zp": 1, "lo": 0, "hi": 3})]


def _conv_int8_requant(r):
    m0, sh = _mult(r, 4, 0.0005, 0.01)
    A = {"w": r.integers(-127, 128, (4, 3, 3, 3)).astype(np.int8), "bias": r.integers(-900, 901, 4).astype(np.int32),
         "M0": m0, "shift": sh}
    return [([_codes(r, 6, 7, 3)], A, {"zp": 5, "y_zp": 100, "lo": 0, "hi": 255, "padding": 1})]


def _conv_ternary(r):
    def masks(wt):
        return {"wpos": pack_bits((wt == 1).astype(np.uint8)), "wneg": pack_bits((wt == -1).astype(np.uint8))}

    # ref: bit planes + popcounts; fast: one GEMM on the codes (two words of channels, 1x1, 8 bits too)
    return [([_codes(r, 6, 7, 6, 3)], masks(r.integers(-1, 2, (3, 3, 3, 6))), {"bits": 2, "padding": 1}),
            ([_codes(r, 5, 6, 70, 15)], masks(r.integers(-1, 2, (5, 3, 3, 70))), {"bits": 4, "padding": 1}),
            ([_codes(r, 4, 5, 9)], masks(r.integers(-1, 2, (3, 1, 1, 9))), {"bits": 8})]


def _conv_offset(r):
    A = {"wplanes": bitplanes(r.integers(0, 4, (3, 3, 3, 6)), 2)}
    return [([_codes(r, 6, 7, 6, 7)], A, {"bits": 3, "padding": 1})]


def _conv_lut(r):
    A = {"table": r.integers(-100, 101, (4, 5)).astype(np.int32), "w": r.integers(-50, 51, (3, 3, 3, 4)).astype(np.int32)}
    return [([_codes(r, 6, 7, 4, 4)], A, {"padding": 1})]


def _convt_int8(r):
    return [([_codes(r, 3, 4, 5)], {"w": r.integers(-127, 128, (3, 2, 2, 5)).astype(np.int8)}, {"zp": 11})]


def _convt_lut(r):
    A = {"table": r.integers(-100, 101, (5, 4)).astype(np.int32), "w": r.integers(-50, 51, (3, 2, 2, 5)).astype(np.int32)}
    return [([_codes(r, 3, 4, 5, 3)], A, {})]


# op kind -> small random inputs (ins, arrays, attrs) of every path its kernels take
CASES = {
    "lut_u8": _lut_u8, "threshold": _threshold, "maxpool": _pool_like, "upsample": _upsample,
    "concat": _concat, "conv_int8": _conv_int8, "conv_pow2": _conv_pow2, "conv_binary": _conv_binary,
    "conv_binary_threshold": _conv_binary_threshold, "threshold_pack": _threshold_pack,
    "maxpool_packed": _maxpool_packed, "concat_packed": _concat_packed, "requant": _requant,
    "conv_int8_requant": _conv_int8_requant, "conv_ternary": _conv_ternary, "conv_offset": _conv_offset,
    "conv_lut": _conv_lut, "convt_int8": _convt_int8, "convt_lut": _convt_lut,
}


@pytest.mark.parametrize("kind", sorted(OPS))
def test_fast_kernel_equals_reference_for_every_op_in_the_table(kind):
    assert kind in CASES, f"op {kind!r} is in runtime.ops.OPS but has no ref-vs-fast case in CASES"
    for ins, A, at in CASES[kind](_rng(kind)):
        ref = OPS[kind].ref(ins, A, at)
        fast = OPS[kind].fast(ins, A, at)
        assert fast.dtype == ref.dtype and fast.shape == ref.shape
        np.testing.assert_array_equal(fast, ref)
        assert np.unique(ref).size > 1, "a constant output would not tell the kernels apart"


def test_every_case_names_an_op():
    assert set(CASES) <= set(OPS), sorted(set(CASES) - set(OPS))


def test_interpreter_and_schema_name_the_kinds_of_the_table():
    assert G.OP_KINDS == tuple(OPS)
    assert set(schema.SPECS) == set(OPS)
    assert set(schema.CONVS) == {k for k, op in OPS.items() if op.spec.conv}


def _negate(ins, A, at):
    return (-ins[0].astype(np.int64) * int(at["k"])).astype(np.int32)


def test_a_kind_added_to_the_table_is_validated_and_run(monkeypatch):
    """One entry in OPS is all the interpreter and the schema need (nothing else lists kinds)."""
    monkeypatch.setitem(OPS, "scale_acc", Op(_negate, _negate, Spec(1, "acc", {"k": (-3, 3)})))
    r = np.random.default_rng(0)
    w = r.integers(-5, 6, (2, 1, 1, 3)).astype(np.int8)
    graph = {"ops": [{"op": "conv_int8", "in": ["image"], "out": "a", "attrs": {"zp": 0}, "arrays": {"w": "w"}},
                     {"op": "scale_acc", "in": ["a"], "out": "b", "attrs": {"k": -2}}],
             "outputs": {"logits": "b"}, "decisions": {"fg": {"channel": 0, "t": 0, "direction": 1}}}
    arrays = {"w": w}
    assert G.validate(graph, arrays)["logits"] == schema.Tensor("acc", 2, 0)
    img = _codes(r, 4, 4, 3)
    for kernels in G.KERNELS:
        got = G.run(graph, arrays, img, kernels)["logits"]
        want = 2 * np.einsum("hwc,oc->hwo", img.astype(np.int64), w[:, 0, 0].astype(np.int64))
        np.testing.assert_array_equal(got, want)
    bad = dict(graph, ops=[graph["ops"][0], dict(graph["ops"][1], attrs={"k": 9})])
    with pytest.raises(G.GraphError, match=r"ops\[1\] \(scale_acc.*attrs\.k must be an integer in \[-3, 3\]"):
        G.validate(bad, arrays)


def _requant_for(r, acc: np.ndarray):
    """A requant op's arrays and attrs scaled to ``acc`` (outputs spread over the codes)."""
    c = acc.shape[2]
    top = max(1, int(np.abs(acc.astype(np.int64)).max()))
    m0, sh = quantize_multipliers(r.uniform(60, 120, c) / top)
    A = {"sign": _dirs(r, c), "bias": r.integers(-top // 4, top // 4 + 1, c).astype(np.int32), "M0": m0,
         "shift": sh, "in_shift": np.zeros(c, np.int8)}
    return A, {"zp": 128, "lo": 0, "hi": 255}


def _threshold_pack_for(r, acc: np.ndarray):
    c = acc.shape[2]
    tau = np.array([int(np.median(acc[..., o])) for o in range(c)], np.int32)
    return {"tau": tau, "direction": _dirs(r, c)}, {}


def _threshold_for(r, acc: np.ndarray):
    c = acc.shape[2]
    t = np.stack([np.quantile(acc[..., o], [0.2, 0.4, 0.6, 0.8]).astype(np.int32) for o in range(c)])
    return {"t": t, "direction": _dirs(r, c)}, {}


NEXT_FOR = {"requant": _requant_for, "threshold_pack": _threshold_pack_for, "threshold": _threshold_for}
FUSED = sorted((k, n) for k, op in OPS.items() for n in op.fast_fused)


def test_fused_pairs_are_the_ones_exports_write():
    assert FUSED == [("conv_binary", "threshold"), ("conv_int8", "threshold_pack"),
                     ("conv_pow2", "requant"), ("conv_ternary", "requant")]


@pytest.mark.parametrize("kind,nxt", FUSED)
def test_fused_kernel_equals_reference_conv_then_next_op(kind, nxt):
    r = _rng(kind + " fused")
    for ins, A, at in CASES[kind](r):
        acc = OPS[kind].ref(ins, A, at)
        nA, nat = NEXT_FOR[nxt](r, acc)
        want = OPS[nxt].ref([acc], nA, nat)
        got = OPS[kind].fast_fused[nxt](ins, A, at, nA, nat)
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
        assert np.unique(want).size > 2


def _pow2_requant_graph(r, cout, extra_reader):
    """conv_pow2 -> requant (-> a second reader of the accumulators when ``extra_reader``)."""
    wsign = r.integers(-1, 2, (cout, 3, 3, 3)).astype(np.int8)
    wshift = r.integers(0, 15, (cout, 3, 3, 3)).astype(np.uint8)
    x = _codes(r, 9, 8, 3)
    acc = OPS["conv_pow2"].ref([x], {"wsign": wsign, "wshift": wshift}, {"zp": 3, "padding": 1})
    rA, rat = _requant_for(r, acc)
    arrays = {"wsign": wsign, "wshift": wshift, **{f"q.{k}": v for k, v in rA.items()}}
    ops = [{"op": "conv_pow2", "in": ["image"], "out": "a", "attrs": {"zp": 3, "padding": 1},
            "arrays": {"wsign": "wsign", "wshift": "wshift"}},
           {"op": "requant", "in": ["a"], "out": "b", "attrs": rat, "arrays": {k: f"q.{k}" for k in rA}}]
    outputs = {"codes": "b"}
    if extra_reader:
        outputs["logits"] = "a"  # the accumulators are also a graph output: must be stored
    return {"ops": ops, "outputs": outputs}, arrays, x


@pytest.mark.parametrize("cout,extra", [(6, False), (2, False), (6, True)])
def test_interpreter_fuses_a_conv_with_its_only_requant(monkeypatch, cout, extra):
    from seglearn.runtime import ops_fast

    r = np.random.default_rng(cout + 10 * extra)
    graph, arrays, x = _pow2_requant_graph(r, cout, extra)
    calls = []
    real = ops_fast.pow2_conv2d_requant
    monkeypatch.setattr(ops_fast, "pow2_conv2d_requant", lambda *a: calls.append(1) or real(*a))
    fast = G.run(graph, arrays, x, "fast")
    ref = G.run(graph, arrays, x, "ref")
    assert fast.keys() == ref.keys()
    for k in ref:
        np.testing.assert_array_equal(fast[k], ref[k])
    assert len(calls) == (0 if extra else 1)


REQUANTS = sorted(k for k, op in OPS.items() if op.fast_requants is not None)


def test_convs_with_several_requant_readers_are_the_requantized_kinds():
    assert REQUANTS == ["conv_int8", "conv_pow2", "conv_ternary"]


@pytest.mark.parametrize("kind", REQUANTS)
def test_fused_requants_equal_reference_conv_then_each_requant(kind):
    """One pass of the conv into two (and one) requants at different scales equals the reference
    conv read by each of them."""
    r = _rng(kind + " requants")
    for ins, A, at in CASES[kind](r):
        acc = OPS[kind].ref(ins, A, at)
        readers = [_requant_for(r, acc) for _ in range(2)]
        readers[1][1]["lo"] = 20  # another clamp
        want = [OPS["requant"].ref([acc], rA, rat) for rA, rat in readers]
        for n in (2, 1):
            got = OPS[kind].fast_requants(ins, A, at, readers[:n])
            assert len(got) == n
            for g, w in zip(got, want):
                assert g.dtype == w.dtype and g.shape == w.shape and g.flags.c_contiguous
                np.testing.assert_array_equal(g, w)
        assert not np.array_equal(want[0], want[1]) and np.unique(want[0]).size > 2


def _two_requant_graph(r, output_acc=False, other_reader=False):
    """conv_int8 -> requant b -> maxpool c, and the same accumulators -> a later requant d (a skip on
    its own scale); optionally the accumulators are a graph output or also read by a threshold."""
    w = r.integers(-127, 128, (5, 3, 3, 3)).astype(np.int8)
    x = _codes(r, 8, 10, 3)
    acc = OPS["conv_int8"].ref([x], {"w": w}, {"zp": 7, "padding": 1})
    (qA, qat), (sA, sat) = _requant_for(r, acc), _requant_for(r, acc)
    arrays = {"w": w, **{f"q.{k}": v for k, v in qA.items()}, **{f"s.{k}": v for k, v in sA.items()}}
    ops = [{"op": "conv_int8", "in": ["image"], "out": "a", "attrs": {"zp": 7, "padding": 1}, "arrays": {"w": "w"}},
           {"op": "requant", "in": ["a"], "out": "b", "attrs": qat, "arrays": {k: f"q.{k}" for k in qA}},
           {"op": "maxpool", "in": ["b"], "out": "c"},
           {"op": "requant", "in": ["a"], "out": "d", "attrs": sat, "arrays": {k: f"s.{k}" for k in sA}}]
    outputs = {"pooled": "c", "skip": "d"}
    if output_acc:
        outputs["logits"] = "a"
    if other_reader:
        tA, _ = _threshold_pack_for(r, acc)
        arrays.update({"tau": tA["tau"], "dir": tA["direction"]})
        ops.append({"op": "threshold_pack", "in": ["a"], "out": "e", "arrays": {"tau": "tau", "direction": "dir"}})
        outputs["bits"] = "e"
    return {"ops": ops, "outputs": outputs}, arrays, x


@pytest.mark.parametrize("output_acc,other_reader", [(False, False), (True, False), (False, True)])
def test_interpreter_runs_a_conv_with_all_its_requant_readers_in_one_pass(monkeypatch, output_acc, other_reader):
    from seglearn.runtime import ops_fast

    graph, arrays, x = _two_requant_graph(np.random.default_rng(3), output_acc, other_reader)
    calls = []
    real = ops_fast.conv2d_int8_requants
    monkeypatch.setattr(ops_fast, "conv2d_int8_requants", lambda *a: calls.append(len(a[-1])) or real(*a))
    fast = G.run(graph, arrays, x, "fast")
    ref = G.run(graph, arrays, x, "ref")
    assert fast.keys() == ref.keys() == graph["outputs"].keys()
    for k in ref:
        np.testing.assert_array_equal(fast[k], ref[k])
    assert np.unique(ref["skip"]).size > 2
    assert calls == ([] if output_acc or other_reader else [2])


def test_run_profile_records_each_step_as_it_ran():
    """graph.run(profile=): one record per executed step, the conv and both its requant readers as
    one (``conv_int8+requant+requant``, what ``bench/runtime.py --profile`` shows), every op index
    once, the stored outputs' shapes, and the same results as a run without it."""
    graph, arrays, x = _two_requant_graph(np.random.default_rng(3), False, False)
    steps: list = []
    got = G.run(graph, arrays, x, "fast", profile=steps)
    assert [s["op"] for s in steps] == ["conv_int8+requant+requant", "maxpool"]
    assert sorted(i for s in steps for i in s["ops"]) == list(range(len(graph["ops"])))
    assert steps[0]["in"] == [list(x.shape)] and steps[0]["out"] == [[8, 10, 5], [8, 10, 5]]
    assert steps[1]["out"] == [[4, 5, 5]] and all(s["ms"] >= 0 for s in steps)
    plain = G.run(graph, arrays, x, "fast")
    for k in plain:
        np.testing.assert_array_equal(got[k], plain[k])
    ref_steps: list = []
    G.run(graph, arrays, x, "ref", profile=ref_steps)  # the reference kernels never fuse
    assert [s["op"] for s in ref_steps] == [op["op"] for op in graph["ops"]]
