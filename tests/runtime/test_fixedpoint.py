"""fixedpoint vs a line-by-line transliteration of gemmlowp fixedpoint.h in Python ints, and closed forms."""

from fractions import Fraction
import math

import numpy as np
import pytest

from seglearn.runtime import fixedpoint as fp

I32_MIN, I32_MAX = -(2**31), 2**31 - 1


def c_div(a: int, b: int) -> int:
    """C integer division (truncation toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def gemmlowp_srdhm(a: int, b: int) -> int:
    overflow = a == b and a == I32_MIN
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else (1 - (1 << 30))
    high = c_div(ab + nudge, 1 << 31)
    return I32_MAX if overflow else high


def gemmlowp_rdbpot(x: int, e: int) -> int:
    mask = (1 << e) - 1
    remainder = x & mask  # Python & on negatives = two's complement, like int32
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> e) + (1 if remainder > threshold else 0)


EDGE = [I32_MIN, I32_MIN + 1, -(2**30), -(2**30) - 1, -3, -2, -1, 0, 1, 2, 3, 2**30, I32_MAX - 1, I32_MAX]


def test_srdhm_matches_gemmlowp_on_edges_and_random():
    rng = np.random.default_rng(0)
    a = np.array(EDGE + list(rng.integers(I32_MIN, I32_MAX, 300, endpoint=True)), dtype=np.int64)
    aa, bb = np.meshgrid(a[:40], a[:40])
    aa = np.concatenate([aa.ravel(), a])
    bb = np.concatenate([bb.ravel(), rng.permutation(a)])
    got = fp.saturating_rounding_doubling_high_mul(aa, bb)
    assert got.dtype == np.int32
    want = [gemmlowp_srdhm(int(x), int(y)) for x, y in zip(aa, bb)]
    assert got.tolist() == want
    assert fp.saturating_rounding_doubling_high_mul(I32_MIN, I32_MIN) == I32_MAX


def test_srdhm_rounding_of_ties():
    # a * b = +-2^30 is exactly +-0.5 after the doubling high mul: gemmlowp gives 1 and 0 (ties up)
    assert fp.saturating_rounding_doubling_high_mul(2**30, 1) == 1
    assert fp.saturating_rounding_doubling_high_mul(-(2**30), 1) == 0
    assert fp.saturating_rounding_doubling_high_mul(-3 * 2**29, 2) == -1  # -1.5 -> -1
    # away from ties it is round-to-nearest of a b / 2^31
    rng = np.random.default_rng(1)
    a = rng.integers(I32_MIN + 1, I32_MAX, 200)
    b = rng.integers(I32_MIN + 1, I32_MAX, 200)
    got = fp.saturating_rounding_doubling_high_mul(a, b)
    exact = [Fraction(int(x) * int(y), 2**31) for x, y in zip(a, b)]
    assert all(abs(Fraction(int(g)) - e) <= Fraction(1, 2) for g, e in zip(got, exact))


def test_srdhm_scalar_equals_vector():
    for a in EDGE:
        for b in EDGE[::3]:
            assert fp.srdhm_scalar(a, b) == int(fp.saturating_rounding_doubling_high_mul(a, b))


@pytest.mark.parametrize("e", [0, 1, 2, 5, 17, 31])
def test_rdbpot_matches_gemmlowp_and_rounds_half_away(e):
    rng = np.random.default_rng(e)
    # negative ties: x = -(2k+1) 2^(e-1)
    ties = [-(2 * k + 1) * (1 << (e - 1)) for k in range(4)] if e > 0 else []
    ties += [-t for t in ties]
    x = np.array(EDGE + ties + list(rng.integers(I32_MIN, I32_MAX, 200, endpoint=True)), dtype=np.int64)
    x = x[(x >= I32_MIN) & (x <= I32_MAX)]
    got = fp.rounding_divide_by_pot(x, e)
    assert got.tolist() == [gemmlowp_rdbpot(int(v), e) for v in x]
    for v, g in zip(x.tolist(), got.tolist()):
        q = Fraction(v, 2**e)
        away = math.floor(abs(q) + Fraction(1, 2)) * (1 if q >= 0 else -1)
        assert g == away
        assert fp.rdbpot_scalar(v, e) == g


def test_rdbpot_rejects_bad_exponent():
    with pytest.raises(ValueError, match="exponent"):
        fp.rounding_divide_by_pot(5, 32)


@pytest.mark.parametrize("M", [1e-9, 2.0**-32, 0.1, 0.25, 0.5 - 1e-12, 0.5, 0.75, 0.9999999999, 1.0, 1.5, 3.7, 1000.0])
def test_quantize_multiplier_range_and_accuracy(M):
    m0, shift = fp.quantize_multiplier(M)
    assert 2**30 <= m0 < 2**31
    approx = m0 * 2.0 ** (shift - 31)
    assert abs(approx - M) <= M * 2.0**-31 * 1.0001


def test_quantize_multiplier_special_cases():
    assert fp.quantize_multiplier(0.0) == (0, 0)
    assert fp.quantize_multiplier(2.0**-40) == (0, 0)  # below 2^-32: every product rounds to 0
    assert fp.quantize_multiplier(0.25) == (2**30, -1)
    assert fp.quantize_multiplier(1.0) == (2**30, 1)
    assert fp.quantize_multiplier(1 - 2.0**-40) == (2**30, 1)  # rounding carry renormalised
    for bad in (-0.5, float("nan"), float("inf"), 2.0**31):
        with pytest.raises(ValueError):
            fp.quantize_multiplier(bad)


def test_quantize_multipliers_vectorised_equals_scalar():
    M = np.array([0.0, 0.013, 0.4, 0.99, 2.5])
    m0, sh = fp.quantize_multipliers(M)
    assert m0.dtype == np.int32 and sh.dtype == np.int32
    assert list(zip(m0.tolist(), sh.tolist())) == [fp.quantize_multiplier(m) for m in M]


def test_requantize_within_one_step_of_float():
    rng = np.random.default_rng(3)
    acc = rng.integers(-(2**20), 2**20, (50, 4)).astype(np.int32)
    M = np.array([0.0007, 0.013, 0.21, 1.7])
    m0, sh = fp.quantize_multipliers(M)
    got = fp.requantize(acc, m0, sh, 7, 0, 255)
    want = np.clip(np.floor(acc * M + 0.5) + 7, 0, 255)
    assert np.max(np.abs(got - want)) <= 1
    assert got.min() >= 0 and got.max() <= 255


def test_requantize_exact_power_of_two_and_saturating_left_shift():
    # M = 1/4 = 2^30 2^-31 2^-1: SRDHM halves exactly for even x, then RDBPOT rounds half away from 0
    got = fp.multiply_by_quantized_multiplier(np.array([6, -6, 10, -10, 8]), 2**30, -1)
    assert got.tolist() == [2, -2, 3, -3, 2]
    # odd x rounds twice (SRDHM ties up, then RDBPOT): 5/4 -> 2.5 -> 3 -> 2, gemmlowp's known
    # double rounding, still within one step of 1.25
    assert fp.multiply_by_quantized_multiplier(5, 2**30, -1) == 2
    m0, sh = fp.quantize_multiplier(4.0)
    # M = 4 = 2^30 2^-31 2^3: 2^30 << 3 saturates to INT32_MAX before the Q31 product -> 2^30, far
    # outside any uint8 clamp, and no wrap-around to a negative number
    assert fp.multiply_by_quantized_multiplier(2**30, m0, sh) == 2**30
    assert fp.multiply_by_quantized_multiplier(-(2**30), m0, sh) == -(2**30)
    acc = np.array([[5, -5, 6, -6, 2**30]], dtype=np.int32)
    assert fp.requantize(acc, 2**30, -1, 10, 10, 255).tolist() == [[12, 10, 12, 10, 255]]


def test_add_multipliers_reproduce_scale_ratios():
    (ma, sa), (mb, sb), (mo, so) = fp.add_multipliers(0.02, 0.05, 0.04)
    real = lambda m, s: m * 2.0 ** (s - 31)  # noqa: E731
    assert real(ma, sa) == pytest.approx(0.02 / 0.1, rel=1e-8)
    assert real(mb, sb) == pytest.approx(0.5, rel=1e-8)
    assert real(mo, so) == pytest.approx(0.1 / (2**20 * 0.04), rel=1e-8)
    with pytest.raises(ValueError, match="s_out"):
        fp.add_multipliers(0.1, 0.1, 0.0)


@pytest.mark.parametrize("right", [0, 1, 2, 5])
def test_fast_requant_equals_gemmlowp_on_both_roundings_ties(right):
    """ops_fast's requant does SRDHM's and RDBPOT's roundings as one add and shift: it must round
    exactly as gemmlowp does where either rounding meets a tie, which random inputs almost never
    hit. M0 = 2^30 makes x M0 / 2^31 = x / 2, so every odd x is an SRDHM tie (away from zero above
    0, towards it below) and RDBPOT(right) meets its ties at multiples of 2^(right - 1); checked
    against the Python-int transliteration, with signs, a bias and an input shift."""
    from seglearn.runtime import ops_fast

    c = 4
    acc = np.arange(-3000, 3000, dtype=np.int32).reshape(-1, 1, 1).repeat(c, 2)
    sign = np.array([1, -1, 1, -1], np.int8)
    bias = np.array([0, 0, 7, -5], np.int32)
    k = np.array([0, 0, 1, 0], np.int32)
    m0 = np.full(c, 1 << 30, np.int32)
    shift = np.full(c, -right, np.int32)
    got = ops_fast.requant(acc, sign, bias, m0, shift, 128, 0, 255, k)
    for o in range(c):
        for a in range(-3000, 3000, 7 if right else 1):
            v = max(I32_MIN, min(I32_MAX, int(sign[o]) * (a << int(k[o])) + int(bias[o])))
            want = max(0, min(255, 128 + gemmlowp_rdbpot(gemmlowp_srdhm(v, 1 << 30), right)))
            assert got[a + 3000, 0, o] == want, (a, o)
    # and on random multipliers and accumulators over the whole int32 range, against ops_ref
    from seglearn.runtime import ops_ref

    rng = np.random.default_rng(right)
    acc = rng.integers(I32_MIN, I32_MAX, (64, 32, 16), dtype=np.int64).astype(np.int32)
    acc[:8] = rng.integers(-4000, 4000, (8, 32, 16))
    m0, sh = fp.quantize_multipliers(10 ** rng.uniform(-9, 1, 16))
    args = (rng.choice(np.array([-1, 1], np.int8), 16), rng.integers(-10**6, 10**6, 16).astype(np.int32),
            m0, sh, 17, 3, 250, rng.integers(0, 3, 16).astype(np.int32))
    ref = ops_ref.requant(acc, *args)
    assert 3 < ref.mean() < 250
    np.testing.assert_array_equal(ops_fast.requant(acc, *args), ref)
