"""Binary XNOR-popcount conv, fused BN+sign thresholds, packed pooling: ref vs float oracle, fast vs ref."""

import numpy as np
import pytest

from runtime_oracle import CONV_TABLE, conv_float
from seglearn.runtime import bitpack as bp
from seglearn.runtime import ops_fast, ops_ref
from seglearn.runtime.fold import fold_bn_sign_threshold


def bn(acc, gamma, beta, mean, var, eps):
    """The float BN being folded, written out here (float64, left to right) as the oracle."""
    return gamma * (np.asarray(acc, np.float64) - mean) / np.sqrt(var + eps) + beta


def _signs(rng, shape):
    return np.where(rng.random(shape) < 0.5, -1, 1).astype(np.int8)


@pytest.mark.parametrize("h,w,cin,cout,k,s,p", CONV_TABLE)
def test_bconv_ref_equals_float_conv_and_fast_equals_ref(h, w, cin, cout, k, s, p):
    rng = np.random.default_rng(cin * 3 + cout)
    x, wt = _signs(rng, (h, w, cin)), _signs(rng, (cout, k, k, cin))
    xp, wp = bp.pack_signs(x), bp.pack_signs(wt)
    ref = ops_ref.bconv2d(xp, wp, cin, s, p)
    assert ref.dtype == np.int32
    np.testing.assert_array_equal(ref, conv_float(x, wt, s, p))  # zero padding contributes 0
    np.testing.assert_array_equal(ops_fast.bconv2d(xp, wp, cin, s, p), ref)


def test_fold_bn_sign_threshold_matches_float_on_every_acc():
    rng = np.random.default_rng(0)
    c, kmax = 12, 60
    gamma = rng.normal(size=c)
    gamma[:3] = [0.0, -0.0, 1e-9]
    beta = rng.normal(size=c) * 3
    beta[0], beta[1] = 0.5, -0.5  # gamma == 0: constant +1 / -1
    mean = rng.normal(size=c) * 10
    mean[5] = 7.0  # an exact tie: y == 0 at acc = 7 when beta = 0
    beta[5] = 0.0
    var = rng.uniform(0.1, 4, c)
    tau, d = fold_bn_sign_threshold(gamma, beta, mean, var, 1e-5, -kmax, kmax)
    acc = np.arange(-kmax, kmax + 1)
    for ch in range(c):
        want = bn(acc, gamma[ch], beta[ch], mean[ch], var[ch], 1e-5) >= 0  # sign(0) = +1
        got = acc >= tau[ch] if d[ch] > 0 else acc <= tau[ch]
        np.testing.assert_array_equal(got, want, err_msg=f"channel {ch}")
    assert d[0] == 1 and tau[0] == -kmax and tau[1] == kmax + 1


def test_fold_threshold_independent_formula():
    # gamma > 0: tau = ceil(mean - beta sigma / gamma); gamma < 0: floor, direction -1
    tau, d = fold_bn_sign_threshold([2.0, -2.0], [1.0, 1.0], [3.3, 3.3], [3.0, 3.0], 1.0, -100, 100)
    t = 3.3 - 1.0 * 2.0 / 2.0
    assert (tau.tolist(), d.tolist()) == ([int(np.ceil(t)), int(np.floor(3.3 + 1.0))], [1, -1])
    with pytest.raises(ValueError, match="var"):
        fold_bn_sign_threshold([1.0], [0.0], [0.0], [-1.0], 0.0, -5, 5)


@pytest.mark.parametrize("h,w,cin,cout,k,s,p", [CONV_TABLE[0], CONV_TABLE[3], CONV_TABLE[5]])
def test_bconv_threshold_fused_equals_sign_of_bn(h, w, cin, cout, k, s, p):
    rng = np.random.default_rng(cout)
    x, wt = _signs(rng, (h, w, cin)), _signs(rng, (cout, k, k, cin))
    xp, wp = bp.pack_signs(x), bp.pack_signs(wt)
    gamma, beta = rng.normal(size=cout), rng.normal(size=cout)
    mean, var = rng.normal(size=cout) * 4, rng.uniform(0.5, 2, cout)
    kk = cin * k * k
    tau, d = fold_bn_sign_threshold(gamma, beta, mean, var, 1e-5, -kk, kk)
    ref = ops_ref.bconv2d_threshold(xp, wp, cin, tau, d, s, p)
    assert ref.shape == conv_float(x, wt, s, p).shape[:2] + (bp.nwords(cout),)
    y = bn(conv_float(x, wt, s, p), gamma, beta, mean, var, 1e-5)
    np.testing.assert_array_equal(bp.unpack_signs(ref, cout), np.where(y >= 0, 1, -1))
    np.testing.assert_array_equal(ops_fast.bconv2d_threshold(xp, wp, cin, tau, d, s, p), ref)
    acc = ops_ref.bconv2d(xp, wp, cin, s, p)
    np.testing.assert_array_equal(ops_fast.threshold_pack(acc, tau, d), ref)


@pytest.mark.parametrize("c", [3, 65])
def test_maxpool_packed_is_or_and_equals_signed_max(c):
    rng = np.random.default_rng(c)
    x = _signs(rng, (5, 7, c))  # odd sizes: last row / column dropped
    xp = bp.pack_signs(x)
    ref = ops_ref.maxpool2x2_packed(xp)
    want = x[:4, :6].reshape(2, 2, 3, 2, c).max(axis=(1, 3))
    np.testing.assert_array_equal(bp.unpack_signs(ref, c), want)
    np.testing.assert_array_equal(ops_fast.maxpool2x2_packed(xp), ref)
    np.testing.assert_array_equal(ops_fast.upsample2x(xp), ops_ref.upsample2x(xp))
    np.testing.assert_array_equal(bp.unpack_signs(ops_ref.upsample2x(xp), c), x.repeat(2, 0).repeat(2, 1))


@pytest.mark.parametrize("mod", [ops_ref, ops_fast])
def test_binary_bad_inputs(mod):
    xp = np.zeros((4, 4, 2), np.uint64)
    wp = np.zeros((3, 3, 3, 2), np.uint64)
    with pytest.raises(ValueError, match="cin=20 needs 1 words"):
        mod.bconv2d(xp, wp, 20)
    with pytest.raises(ValueError, match="words per tap"):
        mod.bconv2d(xp, wp[..., :1], 100)
    with pytest.raises(ValueError, match="direction"):
        mod.bconv2d_threshold(xp, wp, 100, [0, 0, 0], [1, 0, 1])
    with pytest.raises(ValueError, match="dtype uint64"):
        mod.bconv2d(xp.astype(np.int64), wp, 100)


@pytest.mark.parametrize("w", [1, 3, 4, 5, 9, 13])  # around and across the fast kernel's 4-pixel blocks
@pytest.mark.parametrize("k,s,p", [(3, 1, 1), (3, 2, 1), (3, 1, 0), (1, 2, 0), (3, 1, 2)])
def test_bconv_pixel_blocks_fast_equals_float_at_every_width(w, k, s, p):
    from seglearn.runtime import ops_fast_binary

    rng = np.random.default_rng(w * 10 + k + s + p)
    cin, cout = 67, 5  # two words per tap, the second one partly padding
    x, wt = _signs(rng, (6, w, cin)), _signs(rng, (cout, k, k, cin))
    xp, wp = bp.pack_signs(x), bp.pack_signs(wt)
    if w + 2 * p < k:
        with pytest.raises(ValueError, match="larger than padded input"):
            ops_fast.bconv2d(xp, wp, cin, s, p)
        return
    want = conv_float(x, wt, s, p)
    assert ops_fast_binary.PB == 4 and want.shape[1] >= 1
    np.testing.assert_array_equal(ops_fast.bconv2d(xp, wp, cin, s, p), want)
    tau = rng.integers(-20, 20, cout).astype(np.int32)
    d = np.where(rng.random(cout) < 0.5, -1, 1).astype(np.int8)
    bits = np.where(d > 0, want >= tau, want <= tau)
    np.testing.assert_array_equal(ops_fast.bconv2d_threshold(xp, wp, cin, tau, d, s, p), bp.pack_bits(bits))
