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


@pytest.mark.parametrize("pb,v,nw,worst", [(4, 8, 2, False), (4, 16, 2, False), (3, 4, 2, False),
                                           (4, 8, 5, True), (4, 8, 6, True), (4, 8, 6, False)])
def test_xor_popcount_block_equals_numpy_popcount(pb, v, nw, worst):
    """The LLVM vector micro-kernel (any block shape, not only the target's) against numpy's own
    popcount of the same xor-ed words, at a stride, a partial ky range, a channel offset and an
    output row offset: ``acc[r0 + q, o] = base - 2 popcounts``, nothing else written. ``worst``:
    every xor-ed bit set (weights the complement of the activations), 8 counts per byte and
    word, with 2 rows x 3 x nw = 30 words (just inside the split-nibble kernel's 31-word byte
    accumulator) and 36 (one flush inside the tap loop)."""
    from numba import njit

    from seglearn.runtime.ops_fast_binary import split_nibbles
    from seglearn.runtime.simd import make_xor_popcount_block

    blk = make_xor_popcount_block(pb, v)

    @njit
    def run(acc, xp, xh, wt, wh, row0, ky0, ky1, col0, s, o0, r0, base):
        blk(acc, xp, xh, wt, wh, row0, ky0, ky1, col0, s, o0, r0, base)

    rng = np.random.default_rng(pb * 100 + v)
    kh, kw, s = 3, 3, 2
    xp = rng.integers(0, 2**64, (7, 2 * pb + 4, nw), dtype=np.uint64, endpoint=False)
    wt = rng.integers(0, 2**64, (kh, kw, nw, 3 * v), dtype=np.uint64, endpoint=False)
    if worst:
        xp[:] = 0
        wt[:] = np.uint64(2**64 - 1)
    acc = np.full((pb + 3, 3 * v), -7, np.int32)
    row0, ky0, ky1, col0, o0, r0, base = 1, 1, 3, 1, v, 2, 768
    run(acc, *split_nibbles(xp), *split_nibbles(wt), row0, ky0, ky1, col0, s, o0, r0, base)
    want = np.full((pb, v), base, np.int64)
    for q in range(pb):
        for ky in range(ky0, ky1):
            for kx in range(kw):
                x = xp[row0 + ky, col0 + q * s + kx]  # (nw,)
                pops = np.bitwise_count(x[:, None] ^ wt[ky, kx, :, o0:o0 + v])
                want[q] -= 2 * pops.sum(0, dtype=np.int64)
    np.testing.assert_array_equal(acc[r0:r0 + pb, o0:o0 + v], want)
    untouched = np.ones(acc.shape, bool)
    untouched[r0:r0 + pb, o0:o0 + v] = False
    assert (acc[untouched] == -7).all()


def test_split_nibble_block_refuses_channel_runs_it_cannot_join():
    """On split-nibble targets a run of 12 channels (3 ymm chunks) is refused, not half-computed
    from low nibbles by the ctpop path; elsewhere it is a valid block."""
    from seglearn.runtime.simd import make_xor_popcount_block, nibble_mode

    if not nibble_mode():
        make_xor_popcount_block(4, 12)
        return
    with pytest.raises(ValueError, match="4 x a power of two"):
        make_xor_popcount_block(4, 12)
    with pytest.raises(ValueError, match="4 x a power of two"):
        make_xor_popcount_block(4, 6)


@pytest.mark.parametrize("cout", [1, 7, 8, 16, 17, 40])  # around the micro-kernel's channel runs
@pytest.mark.parametrize("s,p", [(1, 1), (2, 1), (1, 0)])
def test_bconv_micro_kernel_fast_equals_float_around_channel_runs(cout, s, p):
    """Interior blocks (width 21: several 4-pixel blocks inside, ragged ends) through the vector
    micro-kernel, Cout not a multiple of its run (zero-padded weights, dropped outputs)."""
    rng = np.random.default_rng(cout * 7 + s + p)
    cin = 130  # three words per tap
    x, wt = _signs(rng, (5, 21, cin)), _signs(rng, (cout, 3, 3, cin))
    xp, wp = bp.pack_signs(x), bp.pack_signs(wt)
    want = conv_float(x, wt, s, p)
    np.testing.assert_array_equal(ops_fast.bconv2d(xp, wp, cin, s, p), want)
    tau = rng.integers(-30, 30, cout).astype(np.int32)
    d = np.where(rng.random(cout) < 0.5, -1, 1).astype(np.int8)
    bits = np.where(d > 0, want >= tau, want <= tau)
    np.testing.assert_array_equal(ops_fast.bconv2d_threshold(xp, wp, cin, tau, d, s, p),
                                  bp.pack_bits(bits))


def test_bconv_compiled_for_avx2_only_equals_float(tmp_path):
    """The AVX2 build (what an AVX2-only machine compiles: 4 x 8 blocks, ``ctpop`` lowered to the
    nibble lookup) in a child process with a fresh numba cache, on an AVX-512 host too."""
    import os
    import subprocess
    import sys

    from seglearn.runtime.simd import AVX2_TARGET_ENV

    script = """
import numpy as np
from runtime_oracle import conv_float
from seglearn.runtime import bitpack as bp, ops_fast_binary as ofb
assert (ofb.PB, ofb.VC) == (4, 8), (ofb.PB, ofb.VC)
rng = np.random.default_rng(5)
for cin, cout, s, p in [(64, 24, 1, 1), (70, 9, 2, 1)]:
    x = np.where(rng.random((6, 19, cin)) < 0.5, -1, 1).astype(np.int8)
    w = np.where(rng.random((cout, 3, 3, cin)) < 0.5, -1, 1).astype(np.int8)
    xp, wp = bp.pack_signs(x), bp.pack_signs(w)
    want = conv_float(x, w, s, p)
    np.testing.assert_array_equal(ofb.bconv2d(xp, wp, cin, s, p), want)
    tau = rng.integers(-30, 30, cout).astype(np.int32)
    d = np.where(rng.random(cout) < 0.5, -1, 1).astype(np.int8)
    bits = bp.pack_bits(np.where(d > 0, want >= tau, want <= tau))
    np.testing.assert_array_equal(ofb.bconv2d_threshold(xp, wp, cin, tau, d, s, p), bits)
print("ok")
"""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path), **AVX2_TARGET_ENV,
               PYTHONPATH=os.pathsep.join([os.path.dirname(__file__),
                                           os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                       timeout=600)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]
