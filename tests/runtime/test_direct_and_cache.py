"""The direct loop for convs with few outputs (ops_gemm._direct_small_n) equals the reference kernels
and a float64 oracle bit for bit; the per-layer weight cache (weight_cache) serves loaded models
once per layer and never serves weights that could have changed."""

import gc

import numpy as np
import pytest

from runtime_oracle import conv_float
from seglearn.runtime import checks, graph as G, ops_fast, ops_gemm, ops_ref, weight_cache
from seglearn.runtime.bitpack import bitplanes, pack_bits
from seglearn.runtime.checks import KernelError


@pytest.fixture
def direct_calls(monkeypatch):
    """Count the calls of the direct loop (to know which route a conv took)."""
    calls = []
    real = ops_gemm._direct_small_n

    def spy(*a):
        calls.append(a[2].shape)  # (xv, zp, w, ...)
        return real(*a)

    monkeypatch.setattr(ops_gemm, "_direct_small_n", spy)
    return calls


@pytest.mark.parametrize("h,w,cin,cout,k,s,p", [
    (9, 7, 32, 1, 3, 1, 1),     # the logit layer's shape, small
    (8, 11, 3, 4, 3, 2, 1),     # stride 2, padding, DIRECT_MAX_N outputs
    (6, 5, 65, 2, 1, 1, 0),     # 1x1, odd channel count
    (7, 6, 5, 3, 3, 1, 2),      # padding wider than the kernel's half
    (5, 5, 1, 1, 3, 2, 0),      # one channel, no padding, stride 2
])
def test_direct_int8_and_pow2_equal_ref_and_oracle(direct_calls, h, w, cin, cout, k, s, p):
    rng = np.random.default_rng(h * 100 + cin)
    x = rng.integers(0, 256, (h, w, cin), dtype=np.uint8)
    wi = rng.integers(-128, 128, (cout, k, k, cin), dtype=np.int8)
    bias = rng.integers(-5000, 5000, cout).astype(np.int32)
    ref = ops_ref.conv2d_int8(x, 77, wi, bias, s, p)
    np.testing.assert_array_equal(ref, conv_float(x.astype(np.int64) - 77, wi, s, p) + bias)
    np.testing.assert_array_equal(ops_fast.conv2d_int8(x, 77, wi, bias, s, p), ref)
    wsign = rng.integers(-1, 2, wi.shape).astype(np.int8)
    wshift = rng.integers(0, 16, wi.shape).astype(np.uint8)  # INQ-7's range: the GEMM would split
    ref2 = ops_ref.pow2_conv2d(x, 3, wsign, wshift, bias, s, p)
    np.testing.assert_array_equal(ops_fast.pow2_conv2d(x, 3, wsign, wshift, bias, s, p), ref2)
    assert len(direct_calls) == 2


@pytest.mark.parametrize("zp,sign", [(0, 1), (255, -1)])
def test_direct_int32_sums_are_exact_at_the_int32_bound(direct_calls, zp, sign):
    """Power-of-two weights whose worst case reaches 2^31 - 1 within a few thousand: every term has
    the same sign, so the int32 partial sums climb to the bound and must not wrap."""
    cin = 16
    wshift = np.full((1, 3, 3, cin), 16, np.uint8)
    wshift.reshape(-1)[:32] = 15  # 255 (32 2^15 + 112 2^16) = 255 * 2^23 = 2^31 - 2^23
    assert 255 * int((1 << wshift.astype(np.int64)).sum()) == 2**31 - 2**23
    wsign = np.full(wshift.shape, sign, np.int8)
    x = np.full((4, 5, cin), 255 - zp, np.uint8)  # |x - zp| = 255 everywhere but the zero padding
    ref = ops_ref.pow2_conv2d(x, zp, wsign, wshift, None, 1, 1)
    assert np.abs(ref.astype(np.int64)).max() == 2**31 - 2**23  # the interior pixels reach it
    np.testing.assert_array_equal(ops_fast.pow2_conv2d(x, zp, wsign, wshift, None, 1, 1), ref)
    assert len(direct_calls) == 1


def test_direct_lut_with_large_table_values_equals_ref(direct_calls):
    rng = np.random.default_rng(4)
    codes = rng.integers(0, 16, (8, 9, 7), dtype=np.uint8)
    table = rng.integers(-(2**20), 2**20, (7, 16)).astype(np.int32)  # float32 GEMM would be inexact
    w = rng.integers(-3, 4, (1, 3, 3, 7)).astype(np.int32)
    ref = G.conv_lut_ref(codes, table, w, 1)
    np.testing.assert_array_equal(ref, conv_float(table[np.arange(7), codes], w, 1, 1))
    np.testing.assert_array_equal(G.conv_lut_fast(codes, table, w, 1), ref)
    assert direct_calls == [(1, 3, 3, 7)]


def test_direct_ternary_codes_equal_bitplane_ref(direct_calls):
    rng = np.random.default_rng(5)
    codes = rng.integers(0, 16, (9, 8, 70), dtype=np.uint8)
    wt = rng.integers(-1, 2, (2, 3, 3, 70))
    wpos, wneg = pack_bits((wt > 0).astype(np.uint8)), pack_bits((wt < 0).astype(np.uint8))
    ref = ops_ref.ternary_conv2d(bitplanes(codes, 4), wpos, wneg, 2, 1)
    np.testing.assert_array_equal(ref, conv_float(codes, wt, 2, 1))
    np.testing.assert_array_equal(ops_fast.ternary_conv2d_codes(codes, 4, wpos, wneg, 2, 1), ref)
    assert len(direct_calls) == 1


def test_more_outputs_than_direct_max_take_the_gemm(direct_calls):
    rng = np.random.default_rng(6)
    x = rng.integers(0, 256, (6, 6, 8), dtype=np.uint8)
    wi = rng.integers(-128, 128, (ops_gemm.DIRECT_MAX_N + 1, 3, 3, 8), dtype=np.int8)
    np.testing.assert_array_equal(ops_fast.conv2d_int8(x, 0, wi, None, 1, 1), ops_ref.conv2d_int8(x, 0, wi, None, 1, 1))
    assert direct_calls == []


def test_direct_refuses_an_int32_overflow_like_the_plan():
    w = np.full((1, 3, 3, 4), 2**26, np.int64)
    with pytest.raises(KernelError, match="exceeds int32"):
        ops_gemm._direct_weights(w, 255, "t")


# ----------------------------------------------------------------------------- the weight cache

def _frozen(a):
    a = np.array(a)
    a.flags.writeable = False
    return a


def test_cache_builds_once_for_immutable_sources_and_every_call_otherwise():
    weight_cache.clear()
    built = []

    def build():
        built.append(1)
        return np.arange(3)

    src = _frozen([1, 2, 3])
    v1 = weight_cache.cached((src,), ("k",), build)
    v2 = weight_cache.cached((src,), ("k",), build)
    assert v1 is v2 and len(built) == 1 and not v1.flags.writeable  # frozen: may be a source itself
    weight_cache.cached((src,), ("other key",), build)
    assert len(built) == 2
    writable = np.array([1, 2, 3])
    weight_cache.cached((writable,), ("k",), build)
    weight_cache.cached((writable,), ("k",), build)
    assert len(built) == 4
    view = np.array([1, 2, 3])[:]
    view.flags.writeable = False  # read-only view of a writable base: someone can still change it
    assert not weight_cache.immutable(view)


def test_cache_entry_dies_with_its_source():
    weight_cache.clear()
    src = _frozen([5, 6])
    weight_cache.cached((src,), ("k",), lambda: 1)
    assert len(weight_cache._entries) == 1
    del src
    gc.collect()
    assert weight_cache._entries == {}


def test_changed_writable_weights_are_never_served_stale():
    rng = np.random.default_rng(7)
    x = rng.integers(0, 256, (6, 7, 9), dtype=np.uint8)
    w = rng.integers(-127, 128, (8, 3, 3, 9), dtype=np.int8)  # -w exists in int8
    first = ops_fast.conv2d_int8(x, 5, w, None, 1, 1)
    w[:] = -w  # the same array object, new contents
    np.testing.assert_array_equal(ops_fast.conv2d_int8(x, 5, w, None, 1, 1), -first)


def test_a_loaded_model_plans_each_layer_once(tmp_path, monkeypatch):
    from tiny_slq import write_tiny_slq

    from seglearn.runtime import load_model

    weight_cache.clear()
    model = load_model(write_tiny_slq(tmp_path / "m.slq"))
    assert all(weight_cache.immutable(a) for a in model.arrays.values())
    plans = []
    real = checks.gemm_split_plan
    monkeypatch.setattr(checks, "gemm_split_plan", lambda *a: plans.append(1) or real(*a))
    from seglearn.runtime import ops_vnni  # the VNNI path's weight preparation, where it runs

    real_digits = ops_vnni.digits
    monkeypatch.setattr(ops_vnni, "digits", lambda *a: plans.append(1) or real_digits(*a))
    img = np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    first = model.accumulators(img)
    n = len(plans)
    assert n > 0
    np.testing.assert_array_equal(model.accumulators(img), first)
    assert len(plans) == n  # the second image reuses every layer's plan
