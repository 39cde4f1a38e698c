"""The AVX-512 VNNI path of the int8 / ternary convs (``ops_vnni``): equal to the reference kernels
bit for bit at the block and padding edges. Skipped where numba's target has no AVX-512 VNNI."""

import numpy as np
import pytest

from seglearn.runtime import ops_fast, ops_gemm, ops_ref, ops_vnni

pytestmark = pytest.mark.skipif(not ops_vnni.available(),
                                reason="the CPU (numba's target) has no AVX-512 VNNI")


@pytest.fixture
def spy(monkeypatch):
    """Counts the convs that took the VNNI path (so a test cannot pass on the float GEMM alone)."""
    calls = []
    real = ops_vnni.conv

    def counted(*a, **kw):
        calls.append(a[2][2])  # NV of the layer (prep = (B, corr, NV, P))
        return real(*a, **kw)

    monkeypatch.setattr(ops_vnni, "conv", counted)
    return calls


# Cin around the 4-code words, Cout around the 16-channel vectors and the NV = 1..4 shapes,
# widths around the MR-pixel blocks (6, 8, 12, 24), stride 2, padding 0..2, 1x1 and 3x3
@pytest.mark.parametrize("h,w,cin,cout,k,s,p", [
    (7, 5, 1, 5, 3, 1, 1), (9, 13, 3, 16, 3, 1, 1), (6, 25, 4, 17, 3, 2, 1),
    (8, 12, 5, 33, 3, 1, 0), (5, 7, 67, 48, 3, 1, 2), (10, 9, 64, 64, 3, 2, 1),
    (4, 30, 8, 65, 1, 1, 0), (11, 6, 2, 130, 3, 1, 1)])
def test_conv2d_int8_vnni_equals_ref(spy, h, w, cin, cout, k, s, p):
    rng = np.random.default_rng(h * 31 + w * 7 + cin + cout)
    x = rng.integers(0, 256, (h, w, cin), dtype=np.uint8)
    wt = rng.integers(-128, 128, (cout, k, k, cin)).astype(np.int8)
    bias = rng.integers(-5000, 5000, cout).astype(np.int32)
    for zp in (0, 255, int(rng.integers(1, 255))):
        ref = ops_ref.conv2d_int8(x, zp, wt, bias, s, p)
        np.testing.assert_array_equal(ops_fast.conv2d_int8(x, zp, wt, bias, s, p), ref)
    assert len(spy) == 3 and spy[0] == min(4, -(-cout // 16))


def test_vnni_extreme_values_exact(spy):
    """Every product at its largest (255 x -128): the int32 lanes hold the exact sums."""
    x = np.full((6, 14, 64), 255, np.uint8)
    wt = np.full((32, 3, 3, 64), -128, np.int8)
    wt[1::2] = 127
    ref = ops_ref.conv2d_int8(x, 0, wt, None, 1, 1)
    assert ref.min() == 255 * -128 * 576
    np.testing.assert_array_equal(ops_fast.conv2d_int8(x, 0, wt, None, 1, 1), ref)
    assert spy


def test_vnni_requant_epilogue_and_ternary_codes_equal_ref(spy):
    from seglearn.runtime import bitpack, fixedpoint

    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (9, 14, 24), dtype=np.uint8)
    wt = rng.integers(-128, 128, (40, 3, 3, 24)).astype(np.int8)
    bias = rng.integers(-5000, 5000, 40).astype(np.int32)
    m0, sh = fixedpoint.quantize_multipliers(rng.uniform(2e-5, 5e-4, 40))
    args = (x, 17, wt, bias, m0, sh, 30)
    np.testing.assert_array_equal(ops_fast.conv2d_int8_requant(*args, lo=30, hi=255, stride=1, padding=1),
                                  ops_ref.conv2d_int8_requant(*args, lo=30, hi=255, stride=1, padding=1))
    t = rng.integers(-1, 2, (20, 3, 3, 24))
    wpos, wneg = bitpack.pack_bits(t > 0), bitpack.pack_bits(t < 0)
    codes = rng.integers(0, 16, (9, 14, 24), dtype=np.uint8)
    np.testing.assert_array_equal(ops_fast.ternary_conv2d_codes(codes, 4, wpos, wneg, 1, 1),
                                  ops_ref.ternary_conv2d(bitpack.bitplanes(codes, 4), wpos, wneg, 1, 1))
    assert len(spy) == 2


def test_digits_rebuild_the_weights():
    rng = np.random.default_rng(1)
    w = np.concatenate([rng.integers(-2**19, 2**19, 500), [0, 63, 64, -64, -65, 127, 128, -129]])
    d = ops_vnni.digits(w.astype(np.int64))
    assert len(d) == 3 and all(x.min() >= -64 and x.max() <= 63 for x in d)
    np.testing.assert_array_equal(sum(x * 128**i for i, x in enumerate(d)), w)
    small = np.array([-128, 0, 127], np.int64)
    assert len(ops_vnni.digits(small)) == 1  # int8 weights: one GEMM, no split


@pytest.mark.parametrize("max_shift,pieces", [(6, 1), (7, 2), (12, 2), (13, 2), (14, 3), (16, 3)])
def test_pow2_conv_vnni_digits_equal_ref(spy, max_shift, pieces):
    """INQ's sign << shift weights as int8 digits, recombined exactly: every level equally full,
    so no tail is worth running sparse and 7 q levels take q pieces."""
    rng = np.random.default_rng(max_shift)
    x = rng.integers(0, 256, (7, 15, 20), dtype=np.uint8)
    sign = rng.integers(-1, 2, (24, 3, 3, 20)).astype(np.int8)
    shift = rng.integers(0, max_shift + 1, (24, 3, 3, 20)).astype(np.uint8)
    shift[0, 0, 0, 0], sign[0, 0, 0, 0] = max_shift, -1
    bias = rng.integers(-5000, 5000, 24).astype(np.int32)
    ref = ops_ref.pow2_conv2d(x, 9, sign, shift, bias, 1, 1)
    np.testing.assert_array_equal(ops_fast.pow2_conv2d(x, 9, sign, shift, bias, 1, 1), ref)
    w = sign.astype(np.int64) << shift.astype(np.int64)
    assert ops_vnni.vnni_weights(w, 9, None)[3] == pieces and spy


def _inq_like(rng, shape, smax, tail):
    """Signs and shifts with nearly all exponents in the top 14 levels and ``tail`` weights far
    below them (what a trained INQ-7 layer looks like), some of them on the border taps."""
    sign = rng.choice(np.array([-1, 1], np.int8), shape)
    shift = rng.integers(smax - 13, smax + 1, shape).astype(np.uint8)
    flat = rng.choice(np.prod(shape), tail, replace=False)
    shift.reshape(-1)[flat] = rng.integers(0, smax - 13, tail)
    shift[0, 0, 0, 0], shift[-1, -1, -1, -1], shift[0, 0, 0, -1] = smax, 0, 1  # tail: both corners
    sign[0, 0, 0, 1] = 0  # a pruned weight
    return sign, shift


def test_pow2_split_rebuilds_the_weights_from_a_top_window_and_a_sparse_tail():
    rng = np.random.default_rng(5)
    sign, shift = _inq_like(rng, (40, 3, 3, 24), 17, 9)
    w = np.where(sign != 0, sign.astype(np.int64) << shift.astype(np.int64), 0)
    pieces, base, tail = ops_vnni.pow2_split(w, plane_cost=3 * 3 * 6 * 48 / 16)
    assert len(pieces) == 2 and base == 17 - 13
    assert tail.sum() == ((shift < base) & (sign != 0)).sum() >= 9
    assert all(np.count_nonzero(d) == 0 or np.abs(d).max() <= 64 for d in pieces)  # int8 digits
    assert not np.any((pieces[0] != 0) & (pieces[1] != 0))  # one nonzero digit per weight
    rebuilt = sum(d * 128**i for i, d in enumerate(pieces)) * 2**base + np.where(tail, w, 0)
    np.testing.assert_array_equal(rebuilt, w)
    # a tail that would cost more than the plane it saves stays dense
    pieces, base, tail = ops_vnni.pow2_split(w, plane_cost=1.0)
    assert len(pieces) == 3 and base == 0 and not tail.any()
    assert ops_vnni.pow2_split(np.array([3, 4]), 10.0) is None  # 3 is no power of two


@pytest.mark.parametrize("h,w,cin,cout,s,p", [(9, 14, 24, 40, 1, 1), (10, 9, 20, 17, 2, 1),
                                               (6, 25, 7, 64, 1, 2), (8, 12, 16, 33, 1, 0)])
def test_pow2_conv_with_sparse_tail_equals_ref(spy, h, w, cin, cout, s, p):
    """Two dense planes and the sparse tail (border taps, stride 2, padding 0..2, odd channel
    counts) equal the reference shift-and-add bit for bit, alone and with fused requants."""
    from seglearn.runtime import fixedpoint

    rng = np.random.default_rng(h * w + cin)
    x = rng.integers(0, 256, (h, w, cin), dtype=np.uint8)
    sign, shift = _inq_like(rng, (cout, 3, 3, cin), 16, max(3, cout // 8))
    bias = rng.integers(-5000, 5000, cout).astype(np.int32)
    for zp in (0, 255, 37):
        ref = ops_ref.pow2_conv2d(x, zp, sign, shift, bias, s, p)
        np.testing.assert_array_equal(ops_fast.pow2_conv2d(x, zp, sign, shift, bias, s, p), ref)
    wint = np.where(sign != 0, sign.astype(np.int64) << shift.astype(np.int64), 0)
    prep = ops_vnni.vnni_weights(wint, 37, None)
    assert prep[3] == 2 and prep[4] == 3 and prep[5][0][-1] >= 3  # 2 planes, base 3, the tail
    m0, sh = fixedpoint.quantize_multipliers(rng.uniform(1e-7, 1e-6, cout))
    rq = (np.ones(cout, np.int8), np.zeros(cout, np.int32), m0, sh, 11, 0, 255, 0)
    acc = ops_ref.pow2_conv2d(x, 37, sign, shift, None, s, p)
    want = ops_ref.requant(acc, *rq)
    got = ops_fast.pow2_conv2d_requants(x, 37, sign, shift, s, p, [rq, rq])
    assert len(got) == 2 and 0 < want.mean() < 255  # the codes are not all clamped
    for g in got:
        np.testing.assert_array_equal(g, want)
    assert len(spy) == 4


def test_too_many_digits_or_k_too_large_take_the_float_gemm():
    w = np.zeros((8, 3, 3, 4), np.int64)
    w[0, 0, 0, 0] = 2**30 + 1  # five base-128 digits, and no power of two
    assert ops_vnni.vnni_weights(w, 0, None) is None
    w[0, 0, 0, 0] = 2**30  # a power of two: one digit (64) above base 24
    assert ops_vnni.vnni_weights(w, 0, None)[3:5] == (1, 24)
    big = np.ones((8, 1, 1, ops_vnni.MAX_K + 1), np.int8)
    assert ops_vnni.vnni_weights(big, 0, None) is None
    assert ops_vnni.vnni_weights(np.ones((8, 1, 1, 4), np.int8), 0, None) is not None


def test_disabled_runs_the_float_gemm(monkeypatch, spy):
    monkeypatch.setattr(ops_vnni, "ENABLED", False)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (6, 6, 8), dtype=np.uint8)
    wt = rng.integers(-128, 128, (16, 3, 3, 8)).astype(np.int8)
    np.testing.assert_array_equal(ops_fast.conv2d_int8(x, 3, wt, None, 1, 1),
                                  ops_ref.conv2d_int8(x, 3, wt, None, 1, 1))
    assert not spy and ops_gemm is not None


def test_pow2_conv_one_plane_with_tail_equals_ref(spy):
    """One dense plane above ``base`` and a sparse tail far below it: the digit loop's single-plane
    case with tail entries (and the one-plane case without a tail, base > 0) equal the reference."""
    rng = np.random.default_rng(11)
    x = rng.integers(0, 256, (8, 19, 12), dtype=np.uint8)
    sign = rng.choice(np.array([-1, 1], np.int8), (20, 3, 3, 12))
    shift = rng.integers(10, 17, sign.shape).astype(np.uint8)  # the top 7 levels: one plane
    bias = rng.integers(-5000, 5000, 20).astype(np.int32)
    wint = lambda: np.where(sign != 0, sign.astype(np.int64) << shift.astype(np.int64), 0)  # noqa: E731
    prep = ops_vnni.vnni_weights(wint(), 5, None)
    assert prep[3] == 1 and prep[4] == 10 and prep[5][0][-1] == 0  # one plane, base 10, no tail
    np.testing.assert_array_equal(ops_fast.pow2_conv2d(x, 5, sign, shift, bias, 1, 1),
                                  ops_ref.pow2_conv2d(x, 5, sign, shift, bias, 1, 1))
    shift[0, 1, 1, 3], shift[7, 2, 0, 0], shift[19, 0, 2, 11] = 0, 2, 4  # three far-below weights
    prep = ops_vnni.vnni_weights(wint(), 5, None)
    assert prep[3] == 1 and prep[4] == 10 and prep[5][0][-1] == 3  # still one plane, 3 in the tail
    for s, p in ((1, 1), (2, 0)):
        np.testing.assert_array_equal(ops_fast.pow2_conv2d(x, 5, sign, shift, bias, s, p),
                                      ops_ref.pow2_conv2d(x, 5, sign, shift, bias, s, p))
    assert len(spy) == 3
