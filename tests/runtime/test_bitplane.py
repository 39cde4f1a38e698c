"""Bit-plane (DoReFa) convs: unsigned x unsigned, offset-signed weights, ternary weights."""

import numpy as np
import pytest

from runtime_oracle import CONV_TABLE, conv_float
from seglearn.runtime import bitpack as bp
from seglearn.runtime import ops_fast, ops_ref

# (layer shape, activation bits k, weight bits m): covers k = 1..4, m = 1..3 over the shape table
CASES = [(CONV_TABLE[0], 2, 2), (CONV_TABLE[1], 1, 3), (CONV_TABLE[3], 4, 1), (CONV_TABLE[4], 3, 2),
         (CONV_TABLE[5], 1, 1)]


def _codes(seed, shape, k, m):
    h, w, cin, cout, kk, _, _ = shape
    rng = np.random.default_rng(seed)
    return rng.integers(0, 2**k, (h, w, cin)), rng.integers(0, 2**m, (cout, kk, kk, cin))


@pytest.mark.parametrize("shape,k,m", CASES)
def test_bitplane_unsigned_and_offset(shape, k, m):
    x, u = _codes(k * 10 + m, shape, k, m)
    s, p = shape[5], shape[6]
    xpl, wpl = bp.bitplanes(x, k), bp.bitplanes(u, m)
    ref = ops_ref.bitplane_conv2d(xpl, wpl, s, p)
    np.testing.assert_array_equal(ref, conv_float(x, u, s, p))
    np.testing.assert_array_equal(ops_fast.bitplane_conv2d(xpl, wpl, s, p), ref)
    # offset-signed weights w = 2u - (2^m - 1): odd levels -(2^m - 1) .. 2^m - 1
    ref_off = ops_ref.bitplane_conv2d_offset(xpl, wpl, s, p)
    np.testing.assert_array_equal(ref_off, conv_float(x, 2 * u - (2**m - 1), s, p))
    np.testing.assert_array_equal(ops_fast.bitplane_conv2d_offset(xpl, wpl, s, p), ref_off)


@pytest.mark.parametrize("shape,k", [(CONV_TABLE[0], 2), (CONV_TABLE[3], 3), (CONV_TABLE[2], 1)])
def test_ternary_two_planes(shape, k):
    h, w, cin, cout, kk, s, p = shape
    rng = np.random.default_rng(k)
    x = rng.integers(0, 2**k, (h, w, cin))
    t = rng.integers(-1, 2, (cout, kk, kk, cin))
    xpl = bp.bitplanes(x, k)
    wpos, wneg = bp.pack_bits((t == 1).astype(np.uint8)), bp.pack_bits((t == -1).astype(np.uint8))
    ref = ops_ref.ternary_conv2d(xpl, wpos, wneg, s, p)
    np.testing.assert_array_equal(ref, conv_float(x, t, s, p))
    np.testing.assert_array_equal(ops_fast.ternary_conv2d(xpl, wpos, wneg, s, p), ref)


@pytest.mark.parametrize("mod", [ops_ref, ops_fast])
def test_bitplane_bad_inputs(mod):
    xpl = np.zeros((2, 4, 4, 1), np.uint64)
    wpos = np.ones((2, 3, 3, 1), np.uint64)
    with pytest.raises(ValueError, match="overlap"):
        mod.ternary_conv2d(xpl, wpos, wpos)
    with pytest.raises(ValueError, match="words per tap"):
        mod.bitplane_conv2d(xpl, np.zeros((2, 2, 3, 3, 2), np.uint64))
    with pytest.raises(ValueError, match="5 axes"):
        mod.bitplane_conv2d(xpl, wpos)
