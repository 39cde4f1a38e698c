"""Exact integer GEMM convolutions (ops_gemm on float BLAS): the K-chunk plan and its edge cases,
fast == reference bit for bit for int8, power-of-two, lookup-table and transposed convs, and the
load-time refusal of a layer whose accumulator bound overflows."""

import numpy as np
import pytest

from runtime_oracle import CONV_TABLE, conv_float
from seglearn.runtime import checks, graph as G, ops_fast, ops_gemm, ops_ref
from seglearn.runtime.checks import F32_EXACT, KernelError


@pytest.fixture(autouse=True)
def _gemm_route(monkeypatch):
    """Every conv here takes the GEMM, also those with few outputs (the direct loop that would run
    them has its own tests: test_direct_and_cache.py)."""
    monkeypatch.setattr(ops_gemm, "DIRECT_MAX_N", 0)

# a_max 255 (zp 0) times |w| 128 (int8 -128): floor(2^24 / 32640) = 514 rows fit one float32 chunk
ROWS_F32 = 514


def test_plan_single_float32_chunk_when_the_whole_sum_fits():
    dtype, chunks = checks.gemm_plan(255, np.full((ROWS_F32, 3), 128), "t")
    assert dtype is np.float32 and chunks == [(0, ROWS_F32)]


def test_plan_splits_k_just_over_a_chunk():
    dtype, chunks = checks.gemm_plan(255, np.full((ROWS_F32 + 1, 3), 128), "t")
    assert dtype is np.float32 and chunks == [(0, ROWS_F32), (ROWS_F32, ROWS_F32 + 1)]
    # three chunks: 2 * 514 + 7 rows
    dtype, chunks = checks.gemm_plan(255, np.full((2 * ROWS_F32 + 7, 1), 128), "t")
    assert chunks == [(0, 514), (514, 1028), (1028, 1035)]


def test_plan_uses_the_per_column_sums_not_the_global_max():
    # column 0 is 128 on even rows, 0 on odd rows; column 1 the reverse: every column sums 64 per
    # two rows, so 1028 rows fit one chunk although max|w| is 128
    w = np.zeros((1028, 2), np.int64)
    w[0::2, 0] = 128
    w[1::2, 1] = 128
    assert checks.gemm_plan(255, w, "t") == (np.float32, [(0, 1028)])


def test_plan_chunks_each_obey_the_bound_and_cover_k():
    rng = np.random.default_rng(3)
    w = rng.integers(0, 129, (2000, 7))
    dtype, chunks = checks.gemm_plan(200, w, "t")
    assert dtype is np.float32 and chunks[0][0] == 0 and chunks[-1][1] == 2000
    assert all(a[1] == b[0] for a, b in zip(chunks, chunks[1:]))
    for k0, k1 in chunks:
        assert 200 * w[k0:k1].sum(0).max() <= F32_EXACT
        if k1 < 2000:  # greedy: one more row would break it
            assert 200 * w[k0:k1 + 1].sum(0).max() > F32_EXACT


def test_plan_float64_when_one_row_or_short_chunks_would_overflow_float32():
    # 255 * 2^17 > 2^24: a single product is not a float32 integer
    assert checks.gemm_plan(255, np.full((9, 4), 2**17), "t") == (np.float64, [(0, 9)])
    # 255 * 2^14 per row: chunks of 4 rows, far below MIN_F32_CHUNK on average
    assert checks.gemm_plan(255, np.full((100, 4), 2**14), "t") == (np.float64, [(0, 100)])


def test_plan_refuses_an_int32_overflow():
    with pytest.raises(KernelError, match="exceeds int32"):
        checks.gemm_plan(255, np.full((600, 1), 2**14), "my layer")


def _split_case(cin, seed):
    """Extreme int8 layer: x = 255 (zp 0), weights -128/-127, so |acc| crosses 2^24 with odd terms."""
    rng = np.random.default_rng(seed)
    x = np.full((6, 7, cin), 255, np.uint8)
    x[0, 0] = rng.integers(0, 256, cin)
    w = np.where(rng.random((3, 3, 3, cin)) < 0.5, -128, -127).astype(np.int8)
    return x, w


@pytest.mark.parametrize("cin", [57, 58])  # K = 9 Cin = 513 (one float32 chunk), 522 (two chunks)
@pytest.mark.parametrize("s,p", [(1, 1), (2, 1), (1, 0), (2, 0)])
def test_int8_k_split_edges_are_exact(cin, s, p):
    x, w = _split_case(cin, cin)
    bias = np.array([7, -3, 2**20], np.int32)
    ref = ops_ref.conv2d_int8(x, 0, w, bias, s, p)
    np.testing.assert_array_equal(ref, conv_float(x, w, s, p) + bias)
    np.testing.assert_array_equal(ops_fast.conv2d_int8(x, 0, w, bias, s, p), ref)
    plan = checks.gemm_plan(255, np.abs(w.astype(np.int64)).transpose(1, 2, 3, 0).reshape(-1, 3), "t")
    assert len(plan[1]) == (1 if cin == 57 else 2)


def test_the_split_is_needed_one_float32_product_would_round():
    """The K = 522 case is a real test: one unsplit float32 GEMM of it is not exact."""
    x, w = _split_case(58, 58)
    ref = ops_ref.conv2d_int8(x, 0, w, None, 1, 0)
    cols = np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(0, 1)).transpose(0, 1, 3, 4, 2)
    a = cols.reshape(-1, 522).astype(np.float32)
    naive = (a @ w.transpose(1, 2, 3, 0).reshape(522, 3).astype(np.float32)).reshape(ref.shape)
    assert np.abs(ref).max() > F32_EXACT
    assert (naive.astype(np.int64) != ref).any()


@pytest.mark.parametrize("h,w,cin,cout,k,s,p", [(5, 6, 1, 1, 3, 1, 1), (7, 5, 3, 7, 3, 2, 1),
                                                (6, 6, 33, 5, 1, 1, 0), (4, 9, 5, 3, 1, 2, 1),
                                                (9, 8, 13, 11, 3, 1, 2)])
def test_int8_requant_and_pow2_fast_equal_ref_odd_shapes(h, w, cin, cout, k, s, p):
    rng = np.random.default_rng(h * w + cin)
    x = rng.integers(0, 256, (h, w, cin), dtype=np.uint8)
    wt = rng.integers(-128, 128, (cout, k, k, cin)).astype(np.int8)
    bias = rng.integers(-9999, 9999, cout).astype(np.int32)
    np.testing.assert_array_equal(ops_fast.conv2d_int8(x, 200, wt, bias, s, p), ops_ref.conv2d_int8(x, 200, wt, bias, s, p))
    m0, sh = np.full(cout, 1 << 30, np.int32), rng.integers(-12, -6, cout).astype(np.int32)
    np.testing.assert_array_equal(ops_fast.conv2d_int8_requant(x, 3, wt, bias, m0, sh, 9, 9, 250, s, p),
                                  ops_ref.conv2d_int8_requant(x, 3, wt, bias, m0, sh, 9, 9, 250, s, p))
    # INQ-like shifts up to 14 (the exported INQ-7 range): float32 GEMM of the split weights
    sign = rng.integers(-1, 2, (cout, k, k, cin)).astype(np.int8)
    shift = rng.integers(0, 15, (cout, k, k, cin)).astype(np.uint8)
    ref = ops_ref.pow2_conv2d(x, 0, sign, shift, bias, s, p)
    np.testing.assert_array_equal(ref, conv_float(x, sign * 2.0 ** shift, s, p) + bias)
    np.testing.assert_array_equal(ops_fast.pow2_conv2d(x, 0, sign, shift, bias, s, p), ref)


@pytest.mark.parametrize("tmax,wmax,cin,cout,k,p,plan", [
    (15, 127, 3, 5, 3, 1, (np.float32, 1)),         # one float32 chunk
    (1000, 127, 67, 2, 3, 0, (np.float32, 5)),      # K = 603 split into 5 float32 chunks
    (1500, 2**14, 9, 4, 3, 0, (np.float64, 1)),     # INQ-sized weights: one row overflows float32
    (-(2**20), 2, 9, 3, 1, 2, (np.float64, 1)),     # huge negative table values, 1x1, padding 2
])
def test_conv_lut_fast_equals_ref_and_oracle(tmax, wmax, cin, cout, k, p, plan):
    rng = np.random.default_rng(cin * 31 + abs(tmax) % 97)
    codes = rng.integers(0, 16, (8, 7, cin), dtype=np.uint8)
    table = rng.integers(-abs(tmax), abs(tmax) + 1, (cin, 16)).astype(np.int32)
    table[:, 0] = tmax
    w = np.where(rng.random((cout, k, k, cin)) < 0.5, -wmax, wmax).astype(np.int32)  # |w| = wmax: a known plan
    dtype, chunks = checks.gemm_plan(abs(tmax), np.abs(w.astype(np.int64)).transpose(1, 2, 3, 0).reshape(-1, cout), "t")
    assert (dtype, len(chunks)) == plan
    ref = G.conv_lut_ref(codes, table, w, p)
    vals = table[np.arange(cin), codes]
    np.testing.assert_array_equal(ref, conv_float(vals, w, 1, p))
    np.testing.assert_array_equal(G.conv_lut_fast(codes, table, w, p), ref)


@pytest.mark.parametrize("cin,cout", [(3, 5), (70, 3)])
def test_transposed_fast_equals_ref(cin, cout):
    rng = np.random.default_rng(cin)
    codes = rng.integers(0, 10, (3, 5, cin), dtype=np.uint8)
    table = rng.integers(-500, 500, (cin, 10)).astype(np.int32)
    w = rng.integers(-3000, 3000, (cout, 2, 2, cin)).astype(np.int32)
    np.testing.assert_array_equal(G.convt_lut_fast(codes, table, w), G.convt_lut(codes, table, w))
    x = rng.integers(0, 256, (4, 3, cin), dtype=np.uint8)
    w8 = rng.integers(-128, 128, (cout, 2, 2, cin)).astype(np.int8)
    b = rng.integers(-99, 99, cout).astype(np.int32)
    np.testing.assert_array_equal(ops_fast.conv_transpose2x2_int8(x, 250, w8, b),
                                  ops_ref.conv_transpose2x2_int8(x, 250, w8, b))


def _lut_graph(wmax):
    table = np.array([[0, 1000, 2**16]] * 3, np.int32)
    w = np.full((2, 3, 3, 3), wmax, np.int32)
    graph = {"ops": [{"op": "lut_u8", "in": ["image"], "out": "c", "arrays": {"table": "t0"}},
                     {"op": "conv_lut", "in": ["c"], "out": "conv_lut_1", "attrs": {"padding": 1},
                      "arrays": {"table": "t1", "w": "w1"}}],
             "outputs": {"logits": "conv_lut_1"}, "layers": [{"name": "head.conv", "op": "conv_lut"}],
             "decisions": {"fg": {"channel": 0, "t": 0, "direction": 1}}}
    arrays = {"t0": np.zeros((3, 256), np.uint8), "t1": table, "w1": w}
    return graph, arrays


def test_load_refuses_a_layer_whose_bound_overflows(tmp_path):
    from seglearn.runtime import load_model
    from seglearn.runtime.slq import SlqFormatError, write_slq

    graph, arrays = _lut_graph(2**12)  # 2^16 * 27 * 2^12 > 2^31
    with pytest.raises(G.GraphError, match=r"conv_lut -> conv_lut_1, layer head.conv.*exceeds int32"):
        G.validate(graph, arrays)
    with pytest.raises(SlqFormatError, match="head.conv"):
        load_model(write_slq(tmp_path / "big.slq", graph, arrays))
    graph, arrays = _lut_graph(2**10)  # 2^16 * 27 * 2^10 < 2^31: accepted, and it runs
    model = load_model(write_slq(tmp_path / "ok.slq", graph, arrays))
    np.testing.assert_array_equal(model.accumulators(np.zeros((4, 5, 3), np.uint8)), 0)


@pytest.mark.parametrize("k,s,p", [(3, 1, 1), (3, 2, 1), (1, 1, 0), (1, 1, 1)])
def test_row_tiles_on_worker_threads_equal_ref(monkeypatch, k, s, p):
    """One output row per tile on three tile workers (the threaded path); 3x3: K = 522 in two chunks."""

    monkeypatch.setattr(ops_gemm, "TILE_BYTES", 1)
    monkeypatch.setattr(ops_gemm, "MIN_TILE_M", 1)
    monkeypatch.setattr(ops_gemm.numba, "get_num_threads", lambda: 3)
    x, w = _split_case(58, 5)
    w = w[:, :k, :k]
    bias = np.array([1, 2, 3], np.int32)
    ref = ops_ref.conv2d_int8(x, 0, w, bias, s, p)
    np.testing.assert_array_equal(ops_fast.conv2d_int8(x, 0, w, bias, s, p), ref)
    assert ops_gemm._pool._max_workers == 3


# --- weights split in two halves of their bits (checks.gemm_split_plan) ----------------------------


def test_split_plan_inq_weights_run_in_float32_halves():
    # INQ-7 shifts up to 15: one row 255 * 2^15 > 2^24 is not float32-exact, so gemm_plan says float64
    w = np.full((27, 4), 2**15)
    w[::2, 1] = 2**3
    assert checks.gemm_plan(255, w, "t")[0] is np.float64
    dtype, chunks, d = checks.gemm_split_plan(255, w, "t")
    assert (dtype, chunks, d) == (np.float32, [(0, 27)], 8)  # bit length 16 -> d = 8
    halves = checks.split_weights(w, d)
    np.testing.assert_array_equal(halves[:, :4] + (halves[:, 4:] << d), w)  # lo + 2^d hi = w
    assert np.abs(halves).max() <= 2**8 and 255 * np.abs(halves).sum(0).max() <= F32_EXACT


def test_split_weights_keeps_signs_and_recombines_any_integers():
    rng = np.random.default_rng(5)
    w = rng.integers(-(2**20), 2**20, (40, 6))
    for d in (1, 7, 10, 19):
        h = checks.split_weights(w, d)
        lo, hi = h[:, :6], h[:, 6:]
        np.testing.assert_array_equal(lo + hi * 2**d, w)
        assert (np.abs(lo) < 2**d).all() and ((lo == 0) | (np.sign(lo) == np.sign(w))).all()
        assert ((hi == 0) | (np.sign(hi) == np.sign(w))).all()


def test_split_plan_not_used_when_the_unsplit_plan_is_float32_and_float64_when_neither_fits():
    assert checks.gemm_split_plan(255, np.full((514, 3), 128), "t") == (np.float32, [(0, 514)], 0)
    # table values 2^20, weights 2: the halves 0 | 1 fit one float32 chunk (2^20 * 9 <= 2^24)
    assert checks.gemm_split_plan(2**20, np.full((9, 3), 2), "t") == (np.float32, [(0, 9)], 1)
    # weights 3 -> halves 1 | 1: 16 rows per float32 chunk, far below MIN_F32_CHUNK: float64
    assert checks.gemm_split_plan(2**20, np.full((30, 3), 3), "t") == (np.float64, [(0, 30)], 0)
    with pytest.raises(KernelError, match="exceeds int32"):
        checks.gemm_split_plan(255, np.full((600, 1), 2**14), "my layer")


def _pow2_split_case(cin, seed, cout=3):
    """Power-of-two layer whose plan is float32 halves with d = 9 (one 2^17 weight per column at
    tap (0, 0) channel 0); channel 0 has 2^8 everywhere else, so its low half sums 256 per row and a
    float32 chunk holds 258 rows: K = 9 Cin = 252 (Cin 28) is one chunk, 261 (Cin 29) two."""
    rng = np.random.default_rng(seed)
    x = rng.integers(200, 256, (6, 7, cin)).astype(np.uint8)
    sign = rng.choice([-1, 1], (cout, 3, 3, cin)).astype(np.int8)
    shift = rng.choice([0, 8], (cout, 3, 3, cin)).astype(np.uint8)
    shift[0] = 8
    shift[:, 0, 0, 0] = 17
    return x, sign, shift


@pytest.mark.parametrize("cin", [28, 29])
@pytest.mark.parametrize("s,p", [(1, 1), (2, 1), (1, 0), (2, 2)])
def test_pow2_split_k_edges_are_exact(cin, s, p):
    x, sign, shift = _pow2_split_case(cin, cin + s + p)
    w = sign.astype(np.int64) << shift.astype(np.int64)
    wabs = np.abs(w).transpose(1, 2, 3, 0).reshape(-1, 3)
    assert checks.gemm_plan(255, wabs, "t")[0] is np.float64
    dtype, chunks, d = checks.gemm_split_plan(255, wabs, "t")
    assert (dtype, d, len(chunks)) == (np.float32, 9, 1 if cin == 28 else 2)
    bias = np.array([5, -2**20, 3], np.int32)
    ref = ops_ref.pow2_conv2d(x, 0, sign, shift, bias, s, p)
    np.testing.assert_array_equal(ref, conv_float(x, w, s, p) + bias)
    np.testing.assert_array_equal(ops_fast.pow2_conv2d(x, 0, sign, shift, bias, s, p), ref)


def test_the_weight_split_is_needed_one_float32_product_would_round():
    x, sign, shift = _pow2_split_case(29, 1)
    w = (sign.astype(np.int64) << shift.astype(np.int64)).transpose(1, 2, 3, 0).reshape(-1, 3)
    ref = ops_ref.pow2_conv2d(x, 0, sign, shift, None, 1, 0)
    cols = np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(0, 1)).transpose(0, 1, 3, 4, 2)
    naive = (cols.reshape(-1, w.shape[0]).astype(np.float32) @ w.astype(np.float32)).reshape(ref.shape)
    assert np.abs(ref).max() > F32_EXACT
    assert (naive.astype(np.int64) != ref).any()


def test_lut_conv_with_large_weights_takes_the_split_and_equals_ref():
    rng = np.random.default_rng(11)
    codes = rng.integers(0, 8, (7, 6, 5), dtype=np.uint8)
    table = rng.integers(-255, 256, (5, 8)).astype(np.int32)
    table[:, 0] = 255
    w = rng.integers(-(2**17), 2**17, (4, 3, 3, 5)).astype(np.int32)  # one row can exceed 2^24 / 255
    wabs = np.abs(w.astype(np.int64)).transpose(1, 2, 3, 0).reshape(-1, 4)
    assert checks.gemm_split_plan(255, wabs, "t")[::2] == (np.float32, 9)
    ref = G.conv_lut_ref(codes, table, w, 1)
    np.testing.assert_array_equal(ref, conv_float(table[np.arange(5), codes], w, 1, 1))
    np.testing.assert_array_equal(G.conv_lut_fast(codes, table, w, 1), ref)
    wt = w[:, :2, :2]  # the transposed lut conv shares the plan
    np.testing.assert_array_equal(G.convt_lut_fast(codes, table, wt), G.convt_lut(codes, table, wt))


def _pow2_graph(max_shift):
    sign = np.ones((2, 3, 3, 3), np.int8)
    sign[1, ::2] = -1
    shift = np.full((2, 3, 3, 3), max_shift, np.uint8)
    shift[:, 1] = 0
    graph = {"ops": [{"op": "conv_pow2", "in": ["image"], "out": "acc", "attrs": {"zp": 0, "padding": 1},
                      "arrays": {"wsign": "s", "wshift": "e"}}],
             "outputs": {"logits": "acc"}, "layers": [{"name": "enc0.conv", "op": "conv_pow2"}],
             "decisions": {"fg": {"channel": 0, "t": 0, "direction": 1}}}
    return graph, {"s": sign, "e": shift}


def test_load_refuses_an_inq_layer_beyond_int32_and_runs_the_split_one(tmp_path):
    """255 * 18 * 2^19 > 2^31 is refused at load naming the layer; 2^17 (float32 halves) loads and
    the fast model equals the reference model."""
    from seglearn.runtime import load_model
    from seglearn.runtime.slq import SlqFormatError, write_slq

    graph, arrays = _pow2_graph(19)
    with pytest.raises(G.GraphError, match=r"conv_pow2 -> acc, layer enc0.conv.*exceeds int32"):
        G.validate(graph, arrays)
    with pytest.raises(SlqFormatError, match="enc0.conv"):
        load_model(write_slq(tmp_path / "big.slq", graph, arrays))
    graph, arrays = _pow2_graph(17)
    path = write_slq(tmp_path / "ok.slq", graph, arrays)
    img = np.random.default_rng(0).integers(0, 256, (8, 6, 3), dtype=np.uint8)
    fast, ref = load_model(path).accumulators(img), load_model(path, kernels="ref").accumulators(img)
    assert np.abs(ref).max() > F32_EXACT
    np.testing.assert_array_equal(fast, ref)


# --- ternary weights on multi-bit codes (ops_fast.ternary_conv2d_codes) ----------------------------


def _ternary_masks(wt):
    from seglearn.runtime.bitpack import pack_bits

    return pack_bits((wt == 1).astype(np.uint8)), pack_bits((wt == -1).astype(np.uint8))


@pytest.mark.parametrize("case", CONV_TABLE)
@pytest.mark.parametrize("bits", [1, 4, 8])
def test_ternary_codes_gemm_equals_bitplane_ref_and_oracle(case, bits):
    from seglearn.runtime.bitpack import bitplanes

    h, w, cin, cout, k, s, p = case
    rng = np.random.default_rng(h * cin + bits)
    codes = rng.integers(0, 2**bits, (h, w, cin)).astype(np.uint8)
    wt = rng.integers(-1, 2, (cout, k, k, cin))
    wpos, wneg = _ternary_masks(wt)
    ref = ops_ref.ternary_conv2d(bitplanes(codes, bits), wpos, wneg, s, p)
    np.testing.assert_array_equal(ref, conv_float(codes, wt, s, p))
    np.testing.assert_array_equal(ops_fast.ternary_conv2d_codes(codes, bits, wpos, wneg, s, p), ref)


@pytest.mark.parametrize("cin", [65793, 65794])  # 2^24 // 255: one float32 chunk, then two
def test_ternary_k_split_edges_are_exact(cin):
    from seglearn.runtime.bitpack import bitplanes

    codes = np.full((2, 2, cin), 255, np.uint8)
    codes[0, 0, 7] = 254  # odd sum 255 K - 1 > 2^24 for cin 65794: not a float32 number
    wt = np.ones((2, 1, 1, cin), np.int64)
    wt[1, :, :, ::3] = -1
    wpos, wneg = _ternary_masks(wt)
    assert len(checks.gemm_plan(255, np.abs(wt).reshape(2, -1).T, "t")[1]) == cin - 65792
    ref = ops_ref.ternary_conv2d(bitplanes(codes, 8), wpos, wneg, 1, 0)
    np.testing.assert_array_equal(ref[..., 0], 255 * cin - np.array([[1, 0], [0, 0]]))
    np.testing.assert_array_equal(ops_fast.ternary_conv2d_codes(codes, 8, wpos, wneg, 1, 0), ref)


def test_ternary_codes_refuses_what_the_reference_refuses():
    wpos, wneg = _ternary_masks(np.array([[[[1, -1, 0]]]]))
    codes = np.array([[[1, 2, 16]]], np.uint8)
    with pytest.raises(KernelError, match=r"codes must be in \[0, 2\^4\)"):
        ops_fast.ternary_conv2d_codes(codes, 4, wpos, wneg)
    with pytest.raises(KernelError, match="overlap"):
        ops_fast.ternary_conv2d_codes(codes, 5, wpos, wpos | wneg)
    with pytest.raises(KernelError, match="words per tap"):
        ops_fast.ternary_conv2d_codes(np.zeros((1, 1, 65), np.uint8), 4, wpos, wneg)
    # 3x3 taps x 64 * 2^14 channels x 255 > 2^31: the reference's bound, refused by both kernels
    from seglearn.runtime.bitpack import bitplanes

    big = np.zeros((1, 3, 3, 2**14), np.uint64)
    x = np.zeros((1, 1, 64 * 2**14), np.uint8)
    for run in (lambda: ops_fast.ternary_conv2d_codes(x, 8, big, big, 1, 1),
                lambda: ops_ref.ternary_conv2d(bitplanes(x, 8), big, big, 1, 1)):
        with pytest.raises(KernelError, match="ternary conv: worst-case .* exceeds int32"):
            run()


def test_ternary_codes_wider_than_8_bits_take_the_float_input_path():
    from seglearn.runtime.bitpack import bitplanes

    rng = np.random.default_rng(2)
    codes = rng.integers(0, 2**12, (5, 6, 7)).astype(np.uint16)
    wt = rng.integers(-1, 2, (3, 3, 3, 7))
    wpos, wneg = _ternary_masks(wt)
    ref = ops_ref.ternary_conv2d(bitplanes(codes, 12), wpos, wneg, 2, 1)
    np.testing.assert_array_equal(ref, conv_float(codes, wt, 2, 1))
    np.testing.assert_array_equal(ops_fast.ternary_conv2d_codes(codes, 12, wpos, wneg, 2, 1), ref)


@pytest.mark.parametrize("cin", [28, 29])
def test_fused_pow2_requant_on_row_tiles_and_k_chunks_equals_ref(monkeypatch, cin):
    """The epilogue path (each tile requantized by its worker) on one-row tiles, three workers, the
    weight split and one or two K-chunks: equal to the reference conv then requant."""
    from seglearn.runtime.fixedpoint import quantize_multipliers

    monkeypatch.setattr(ops_gemm, "TILE_BYTES", 1)
    monkeypatch.setattr(ops_gemm, "MIN_TILE_M", 1)
    monkeypatch.setattr(ops_gemm.numba, "get_num_threads", lambda: 3)
    x, sign, shift = _pow2_split_case(cin, cin)
    acc = ops_ref.pow2_conv2d(x, 7, sign, shift, None, 1, 1)
    m0, sh = quantize_multipliers(np.full(3, 100.0 / np.abs(acc.astype(np.int64)).max()))
    rq = (np.array([1, -1, 1], np.int8), np.array([5, -9, 0], np.int32), m0, sh, 128, 0, 255,
          np.array([0, 1, 0], np.int8))
    want = ops_ref.requant(acc, *rq)
    np.testing.assert_array_equal(ops_fast.pow2_conv2d_requant(x, 7, sign, shift, 1, 1, *rq), want)
    assert np.unique(want).size > 2


@pytest.mark.parametrize("cout", [70, 3])
def test_fused_int8_threshold_pack_two_words_and_direct_equal_ref(monkeypatch, cout):
    """conv_int8 + threshold_pack in one pass: two output words (70 channels) on one-row tiles with
    three workers, and 3 outputs on the direct loop: equal to the reference conv then packing."""
    monkeypatch.setattr(ops_gemm, "TILE_BYTES", 1)
    monkeypatch.setattr(ops_gemm, "MIN_TILE_M", 1)
    monkeypatch.setattr(ops_gemm.numba, "get_num_threads", lambda: 3)
    monkeypatch.setattr(ops_gemm, "DIRECT_MAX_N", 4)
    rng = np.random.default_rng(cout)
    x = rng.integers(0, 256, (7, 6, 3), dtype=np.uint8)
    w = rng.integers(-127, 128, (cout, 3, 3, 3)).astype(np.int8)
    acc = ops_ref.conv2d_int8(x, 9, w, None, 1, 1)
    tau = np.median(acc.reshape(-1, cout), axis=0).astype(np.int32)
    d = rng.choice([-1, 1], cout).astype(np.int8)
    want = ops_ref.threshold_pack(acc, tau, d)
    got = ops_fast.conv2d_int8_threshold_pack(x, 9, w, 1, 1, tau, d)
    assert got.dtype == np.uint64 and got.shape == (7, 6, (cout + 63) // 64)
    np.testing.assert_array_equal(got, want)
