"""Multi-threshold, LUT, pooling, upsampling, concat/add with requantization, argmax: ref vs oracle, fast vs ref."""

import numpy as np
import pytest

from seglearn.runtime import fixedpoint, ops_fast, ops_ref
from seglearn.runtime.fold import thresholds_from_monotone


def test_multi_threshold_reproduces_bn_relu_kbit_quantizer_exactly():
    # float layer: y = clip(round(s_c acc + b_c), 0, 3), a 2-bit activation after BN+ReLU, with a
    # negative scale on one channel; fold to integer thresholds and compare on every acc in range
    s = np.array([0.11, -0.07, 0.5])
    b = np.array([0.3, 1.2, -4.0])
    lo, hi = -40, 40

    def q(a):  # a: (N,) int -> codes (N, C), floor(v + 0.5) avoids round-half-even ties
        return np.clip(np.floor(np.outer(a, s) + b + 0.5), 0, 3).astype(np.int64)

    d = np.where(s > 0, 1, -1)
    t = np.stack([thresholds_from_monotone(lambda a, c=c: q(a)[:, c:c + 1], lo, hi, 4, d[c] > 0)[0]
                  for c in range(3)])
    acc = np.arange(lo, hi + 1, dtype=np.int32).reshape(1, -1, 1).repeat(3, axis=2)
    ref = ops_ref.multi_threshold(acc, t, d)
    np.testing.assert_array_equal(ref[0], q(np.arange(lo, hi + 1)))
    np.testing.assert_array_equal(ops_fast.multi_threshold(acc, t, d), ref)


def test_multi_threshold_random_fast_equals_ref_and_count_definition():
    rng = np.random.default_rng(0)
    acc = rng.integers(-50, 50, (7, 9, 5)).astype(np.int32)
    t = np.sort(rng.integers(-60, 60, (5, 7)), axis=1).astype(np.int32)
    d = np.array([1, -1, 1, 1, -1])
    ref = ops_ref.multi_threshold(acc, t, d)
    want = np.where(d > 0, (acc[..., None] > t).sum(-1), (acc[..., None] < t).sum(-1))
    np.testing.assert_array_equal(ref, want)
    np.testing.assert_array_equal(ops_fast.multi_threshold(acc, t, d), ref)
    with pytest.raises(ValueError, match="ascending"):
        ops_fast.multi_threshold(acc, t[:, ::-1], d)


def test_lut_shared_and_per_channel():
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 4, (7, 9, 3)).astype(np.uint8)
    shared = np.array([0, 10, 20, 250], np.uint8)
    per = rng.integers(0, 255, (3, 4)).astype(np.uint8)
    for table in (shared, per):
        ref = ops_ref.lut(codes, table)
        want = np.stack([(table if table.ndim == 1 else table[c])[codes[..., c]] for c in range(3)], -1)
        np.testing.assert_array_equal(ref, want)
        np.testing.assert_array_equal(ops_fast.lut(codes, table), ref)
    with pytest.raises(ValueError, match="outside a table"):
        ops_fast.lut(codes, shared[:2])


@pytest.mark.parametrize("serial_bytes", [0, 1 << 30])  # the parallel and the one-thread kernel
def test_maxpool_upsample_codes(monkeypatch, serial_bytes):
    monkeypatch.setattr(ops_fast, "SERIAL_BYTES", serial_bytes)
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (7, 9, 17)).astype(np.uint8)
    ref = ops_ref.maxpool2x2(x)
    np.testing.assert_array_equal(ref, x[:6, :8].reshape(3, 2, 4, 2, 17).max(axis=(1, 3)))
    np.testing.assert_array_equal(ops_fast.maxpool2x2(x), ref)
    xp = rng.integers(0, 2**63, (5, 6, 2), dtype=np.uint64)  # packed words: the bitwise OR
    np.testing.assert_array_equal(ops_fast.maxpool2x2_packed(xp), ops_ref.maxpool2x2_packed(xp))
    up = ops_ref.upsample2x(x)
    assert up.shape == (14, 18, 17) and np.array_equal(up[1::2, 1::2], x) and np.array_equal(up[::2, 1::2], x)
    np.testing.assert_array_equal(ops_fast.upsample2x(x), up)


def test_concat_requant_within_one_step():
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (7, 9, 3)).astype(np.uint8)
    b = rng.integers(0, 256, (7, 9, 4)).astype(np.uint8)
    (sa, za), (sb, zb), (so, zo) = (0.02, 100), (0.05, 10), (0.04, 60)
    ma, sha = fixedpoint.quantize_multiplier(sa / so)
    mb, shb = fixedpoint.quantize_multiplier(sb / so)
    ref = ops_ref.concat_requant(a, za, ma, sha, b, zb, mb, shb, zo)
    real = np.concatenate([sa * (a.astype(float) - za), sb * (b.astype(float) - zb)], axis=-1)
    want = np.clip(np.round(real / so) + zo, 0, 255)
    assert ref.shape == (7, 9, 7) and np.abs(ref - want).max() <= 1
    np.testing.assert_array_equal(ops_fast.concat_requant(a, za, ma, sha, b, zb, mb, shb, zo), ref)


def test_add_requant_within_one_step():
    rng = np.random.default_rng(4)
    a = rng.integers(0, 256, (7, 9, 5)).astype(np.uint8)
    b = rng.integers(0, 256, (7, 9, 5)).astype(np.uint8)
    (sa, za), (sb, zb), (so, zo) = (0.02, 128), (0.05, 3), (0.06, 50)
    (ma, sha), (mb, shb), (mo, sho) = fixedpoint.add_multipliers(sa, sb, so)
    ref = ops_ref.add_requant(a, za, ma, sha, b, zb, mb, shb, mo, sho, zo)
    real = sa * (a.astype(float) - za) + sb * (b.astype(float) - zb)
    want = np.clip(np.round(real / so) + zo, 0, 255)
    assert np.abs(ref.astype(int) - want).max() <= 1
    np.testing.assert_array_equal(ops_fast.add_requant(a, za, ma, sha, b, zb, mb, shb, mo, sho, zo), ref)
    with pytest.raises(ValueError, match="cannot add"):
        ops_fast.add_requant(a, za, ma, sha, b[:, :, :2], zb, mb, shb, mo, sho, zo)


def test_argmax_ties_lowest_index():
    rng = np.random.default_rng(5)
    x = rng.integers(0, 4, (7, 9, 3)).astype(np.uint8)  # many ties
    ref = ops_ref.argmax_channels(x)
    np.testing.assert_array_equal(ref, np.argmax(x, axis=-1))
    np.testing.assert_array_equal(ops_fast.argmax_channels(x), ref)
    acc = rng.integers(-(2**31), 2**31, (3, 4, 5), dtype=np.int64).astype(np.int32)
    np.testing.assert_array_equal(ops_fast.argmax_channels(acc), np.argmax(acc, axis=-1))
