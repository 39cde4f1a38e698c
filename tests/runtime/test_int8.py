"""int8 conv, requantization, transposed conv and power-of-two (INQ) conv: ref vs float oracle, fast vs ref."""

import numpy as np
import pytest

from runtime_oracle import CONV_TABLE, conv_float, conv_transpose2x2_float
from seglearn.runtime import fixedpoint, ops_fast, ops_ref


def _layer(rng, h, w, cin, cout, k):
    x = rng.integers(0, 256, (h, w, cin), dtype=np.uint8)
    wt = rng.integers(-127, 128, (cout, k, k, cin)).astype(np.int8)
    bias = rng.integers(-5000, 5000, cout).astype(np.int32)
    return x, wt, bias


@pytest.mark.parametrize("h,w,cin,cout,k,s,p", CONV_TABLE)
def test_conv2d_int8_ref_equals_float_and_fast_equals_ref(h, w, cin, cout, k, s, p):
    rng = np.random.default_rng(h * 100 + cin)
    x, wt, bias = _layer(rng, h, w, cin, cout, k)
    zp = int(rng.integers(0, 256))
    ref = ops_ref.conv2d_int8(x, zp, wt, bias, s, p)
    # real-valued layer: (x - zp) with zero padding (padding holds zp in code space)
    oracle = conv_float(x.astype(float) - zp, wt, s, p) + bias
    assert ref.dtype == np.int32
    np.testing.assert_array_equal(ref, oracle)
    np.testing.assert_array_equal(ops_fast.conv2d_int8(x, zp, wt, bias, s, p), ref)


@pytest.mark.parametrize("h,w,cin,cout,k,s,p", CONV_TABLE[:4])
def test_conv2d_int8_requant_within_one_step_and_fast_exact(h, w, cin, cout, k, s, p):
    rng = np.random.default_rng(cout)
    x, wt, bias = _layer(rng, h, w, cin, cout, k)
    zp, y_zp = 120, 30
    scale = rng.uniform(2e-5, 5e-4, cout)  # S_x S_w / S_y per output channel
    m0, sh = fixedpoint.quantize_multipliers(scale)
    ref = ops_ref.conv2d_int8_requant(x, zp, wt, bias, m0, sh, y_zp, lo=y_zp, hi=255, stride=s, padding=p)
    real = (conv_float(x.astype(float) - zp, wt, s, p) + bias) * scale
    want = np.clip(np.round(real) + y_zp, y_zp, 255)  # fused ReLU: clamp at the output zero-point
    assert ref.dtype == np.uint8
    assert np.abs(ref.astype(int) - want).max() <= 1
    fast = ops_fast.conv2d_int8_requant(x, zp, wt, bias, m0, sh, y_zp, lo=y_zp, hi=255, stride=s, padding=p)
    np.testing.assert_array_equal(fast, ref)


def test_requantize_fast_equals_ref_with_extremes():
    rng = np.random.default_rng(5)
    acc = rng.integers(-(2**31), 2**31, (7, 9, 3), dtype=np.int64).astype(np.int32)
    acc[0, 0] = [-(2**31), 2**31 - 1, 0]
    m0, sh = fixedpoint.quantize_multipliers([0.3, 3e-7, 2.5])
    ref = ops_ref.requantize(acc, m0, sh, 128, 0, 255)
    np.testing.assert_array_equal(ops_fast.requantize(acc, m0, sh, 128, 0, 255), ref)
    np.testing.assert_array_equal(ref, fixedpoint.requantize(acc, m0, sh, 128, 0, 255).astype(np.uint8))


@pytest.mark.parametrize("h,w,cin,cout,s,p", [(3, 4, 3, 3, 1, 1), (9, 12, 24, 40, 1, 1), (8, 9, 33, 17, 2, 2)])
def test_conv2d_int8_requant_fast_equals_ref_with_saturating_multipliers(h, w, cin, cout, s, p):
    """The fused requant (the GEMM workers' epilogue) at every multiplier regime: left shifts that
    saturate, right shifts to 31, M0 0 and 2^31 - 1, biases near the int32 bound, a clamp window."""
    rng = np.random.default_rng(cin * cout)
    x = rng.integers(0, 256, (h, w, cin), dtype=np.uint8)
    wt = rng.integers(-128, 128, (cout, 3, 3, cin)).astype(np.int8)
    bias = rng.integers(-(2**30), 2**30, cout).astype(np.int32)
    m0 = rng.integers(0, 2**31, cout).astype(np.int32)
    m0[:3] = [0, 2**31 - 1, 2**30]
    sh = rng.integers(-31, 31, cout).astype(np.int32)
    sh[:3] = [30, -31, 30]
    bias[2] = 0  # channel 2's sign is the conv's: it saturates both ways, both ends of the clamp
    for zp, y_zp, lo, hi in ((0, 0, 0, 255), (255, 128, 20, 240)):
        args = (x, zp, wt, bias, m0, sh, y_zp, lo, hi, s, p)
        ref = ops_ref.conv2d_int8_requant(*args)
        np.testing.assert_array_equal(ops_fast.conv2d_int8_requant(*args), ref)
    assert {lo, hi} <= set(np.unique(ref))  # both ends of the clamp are reached


@pytest.mark.parametrize("h,w,cin,cout", [(3, 4, 5, 2), (2, 3, 65, 17)])
def test_conv_transpose2x2(h, w, cin, cout):
    rng = np.random.default_rng(cin)
    x = rng.integers(0, 256, (h, w, cin), dtype=np.uint8)
    wt = rng.integers(-127, 128, (cout, 2, 2, cin)).astype(np.int8)
    bias = rng.integers(-99, 99, cout).astype(np.int32)
    ref = ops_ref.conv_transpose2x2_int8(x, 77, wt, bias)
    np.testing.assert_array_equal(ref, conv_transpose2x2_float(x.astype(float) - 77, wt) + bias)
    np.testing.assert_array_equal(ops_fast.conv_transpose2x2_int8(x, 77, wt, bias), ref)


@pytest.mark.parametrize("h,w,cin,cout,k,s,p", CONV_TABLE[:3] + CONV_TABLE[4:5])
def test_pow2_conv_equals_int_conv_with_pow2_weights(h, w, cin, cout, k, s, p):
    rng = np.random.default_rng(k * 7 + cin)
    x = rng.integers(0, 256, (h, w, cin), dtype=np.uint8)
    sign = rng.integers(-1, 2, (cout, k, k, cin)).astype(np.int8)
    shift = rng.integers(0, 8, (cout, k, k, cin)).astype(np.uint8)  # INQ 5 bits: e - e_min in [0, 7]
    bias = rng.integers(-999, 999, cout).astype(np.int32)
    ref = ops_ref.pow2_conv2d(x, 9, sign, shift, bias, s, p)
    w_int = sign.astype(float) * 2.0 ** shift
    np.testing.assert_array_equal(ref, conv_float(x.astype(float) - 9, w_int, s, p) + bias)
    np.testing.assert_array_equal(ops_fast.pow2_conv2d(x, 9, sign, shift, bias, s, p), ref)


@pytest.mark.parametrize("mod", [ops_ref, ops_fast])
def test_int8_bad_inputs_raise_clear_errors(mod):
    x = np.zeros((4, 4, 3), np.uint8)
    w = np.zeros((2, 3, 3, 3), np.int8)
    with pytest.raises(ValueError, match="x must have dtype uint8"):
        mod.conv2d_int8(x.astype(np.int16), 0, w)
    with pytest.raises(ValueError, match="Cin=3 but x has 4"):
        mod.conv2d_int8(np.zeros((4, 4, 4), np.uint8), 0, w)
    with pytest.raises(ValueError, match="x_zp"):
        mod.conv2d_int8(x, 300, w)
    with pytest.raises(ValueError, match="larger than padded input"):
        mod.conv2d_int8(x[:2, :2], 0, w)
    with pytest.raises(ValueError, match="exceeds int32"):  # K = 3 * 3 * 9000 taps of 255 * 127
        mod.conv2d_int8(np.zeros((3, 3, 9000), np.uint8), 0, np.full((1, 3, 3, 9000), 127, np.int8))
    with pytest.raises(ValueError, match="wsign must be in"):
        mod.pow2_conv2d(x, 0, np.full((2, 3, 3, 3), 2, np.int8), np.zeros((2, 3, 3, 3), np.uint8))
