"""Fixed-point requantization, gemmlowp / TFLite style (numpy only, never torch).

Jacob et al., "Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only
Inference", CVPR 2018 (arXiv 1712.05877), section 2.2; reference: google/gemmlowp
``fixedpoint/fixedpoint.h`` and TFLite ``QuantizeMultiplier`` / ``MultiplyByQuantizedMultiplier``.

A real multiplier ``M = S_w S_x / S_y > 0`` is stored as ``M ~= M0 * 2^-31 * 2^shift`` with ``M0`` an
int32 Q31 mantissa in ``[2^30, 2^31)`` (i.e. ``M0 / 2^31`` in [0.5, 1)) and ``shift`` an integer
exponent (negative = right shift). Applying it to an int32 accumulator uses integers only:

    y = RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(acc << max(shift, 0), M0), max(-shift, 0))

All functions here take and return numpy integer arrays with int32 semantics (computed in int64 so no
intermediate can wrap) and are written so that the numba kernels in ``ops_fast`` can reuse the
scalar versions (``srdhm_scalar``, ``rdbpot_scalar``) unchanged.
"""

from __future__ import annotations

import numpy as np

from seglearn.runtime.checks import INT32_MAX, INT32_MIN

#: largest exponent accepted: M < 2^31 keeps ``acc << shift`` meaningful (it saturates anyway).
MAX_SHIFT = 30
#: smallest exponent whose right shift ``RoundingDivideByPOT`` supports (gemmlowp asserts <= 31).
MIN_SHIFT = -31


class FixedPointError(ValueError):
    """A multiplier, exponent or operand outside what int32 fixed point can represent."""


def _check_multiplier(m: np.ndarray) -> None:
    if not np.all(np.isfinite(m)):
        raise FixedPointError(f"multiplier must be finite, got {m[~np.isfinite(m)][:3]}")
    if np.any(m < 0):
        raise FixedPointError(f"multiplier must be >= 0 (scales are positive), got {m[m < 0][:3]}")
    if np.any(m >= 2.0**MAX_SHIFT):
        raise FixedPointError(f"multiplier must be < 2^{MAX_SHIFT}, got {m[m >= 2.0**MAX_SHIFT][:3]}")


def quantize_multipliers(M) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised ``quantize_multiplier``: float array -> (M0 int32 array, shift int32 array).

    ``M = q 2^shift`` with ``q`` in [0.5, 1) (frexp); ``M0 = round_half_away(q 2^31)``. Rounding can
    give ``M0 = 2^31``, which is renormalised to ``2^30`` with ``shift + 1``. ``M == 0`` and multipliers
    below ``2^-32`` (``shift < -31``, whose product always rounds to 0) give ``(0, 0)``, the one case
    outside ``[2^30, 2^31)`` -- exactly TFLite's ``QuantizeMultiplier``.
    """
    m = np.asarray(M, dtype=np.float64)
    _check_multiplier(m)
    q, shift = np.frexp(m)
    shift = shift.astype(np.int64)
    # q * 2^31 is exact (power-of-two scaling), and adding 0.5 is exact below 2^31: round half up
    # of a positive number == round half away from zero (std::round in TFLite).
    m0 = np.floor(q * 2.0**31 + 0.5).astype(np.int64)
    carry = m0 == 2**31
    m0 = np.where(carry, 2**30, m0)
    shift = np.where(carry, shift + 1, shift)
    tiny = (m0 == 0) | (shift < MIN_SHIFT)
    m0 = np.where(tiny, 0, m0)
    shift = np.where(tiny, 0, shift)
    return m0.astype(np.int32), shift.astype(np.int32)


def quantize_multiplier(M: float) -> tuple[int, int]:
    """Real multiplier ``M >= 0`` -> ``(M0, shift)`` with ``M ~= M0 * 2^-31 * 2^shift``.

    ``M0`` is an int32 Q31 in ``[2^30, 2^31)``; ``shift`` may be negative (right shift) or positive
    (``M >= 1``, left shift). ``M == 0`` gives ``(0, 0)``. Relative error <= 2^-31.
    Raises ``FixedPointError`` (a ValueError) for negative, non-finite or ``M >= 2^30``.
    """
    m0, shift = quantize_multipliers(np.asarray([M], dtype=np.float64))
    return int(m0[0]), int(shift[0])


def _as_i64_int32_range(x, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype.kind not in "iu" and a.dtype != np.bool_:
        raise FixedPointError(f"{name} must be an integer array, got dtype {a.dtype}")
    a = a.astype(np.int64)
    if a.size and (a.min() < INT32_MIN or a.max() > INT32_MAX):
        raise FixedPointError(f"{name} has values outside int32 range")
    return a


def _trunc_div_pow2(v: np.ndarray, n: int) -> np.ndarray:
    """C-style integer division by 2^n (truncation toward zero), which gemmlowp relies on."""
    return np.where(v >= 0, v >> n, -((-v) >> n))


def saturating_rounding_doubling_high_mul(a, b) -> np.ndarray:
    """gemmlowp ``SaturatingRoundingDoublingHighMul``: high 32 bits of ``2 a b``, rounded, int32.

    ``nudge = 2^30 if a b >= 0 else 1 - 2^30``; ``result = trunc((a b + nudge) / 2^31)`` (C division),
    and ``a == b == INT32_MIN`` (the one overflow: ``2 a b = 2^63``) saturates to ``INT32_MAX``.
    The net rounding of ``a b / 2^31`` is to nearest with ties toward +infinity (the negative nudge
    ``1 - 2^30`` is one short of a half), e.g. ``-0.5 -> 0``, ``+0.5 -> 1``.
    """
    a64 = _as_i64_int32_range(a, "a")
    b64 = _as_i64_int32_range(b, "b")
    ab = a64 * b64  # |ab| <= 2^62: fits int64
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    high = _trunc_div_pow2(ab + nudge, 31)
    overflow = (a64 == b64) & (a64 == INT32_MIN)
    return np.where(overflow, INT32_MAX, high).astype(np.int32)


def rounding_divide_by_pot(x, exponent) -> np.ndarray:
    """gemmlowp ``RoundingDivideByPOT``: ``x / 2^exponent`` rounded half away from zero, int32.

    ``mask = 2^e - 1; remainder = x & mask; threshold = (mask >> 1) + (x < 0)``;
    ``result = (x >> e) + (remainder > threshold)`` with an arithmetic shift; ``0 <= e <= 31``.
    """
    x64 = _as_i64_int32_range(x, "x")
    e = np.asarray(exponent).astype(np.int64)
    if e.size and (e.min() < 0 or e.max() > 31):
        raise FixedPointError(f"exponent must be in [0, 31], got range [{e.min()}, {e.max()}]")
    mask = (np.int64(1) << e) - 1
    remainder = x64 & mask
    threshold = (mask >> 1) + (x64 < 0)
    return ((x64 >> e) + (remainder > threshold)).astype(np.int32)


def _saturating_left_shift(x64: np.ndarray, left: np.ndarray) -> np.ndarray:
    # |x| < 2^31 and left <= 30 -> |x << left| < 2^61: exact in int64, then saturate like gemmlowp's
    # SaturatingRoundingMultiplyByPOT with a positive exponent (C's plain << would be undefined).
    return np.clip(x64 << left, INT32_MIN, INT32_MAX)


def multiply_by_quantized_multiplier(x, M0, shift) -> np.ndarray:
    """TFLite ``MultiplyByQuantizedMultiplier``: ``x * M0 2^-31 2^shift`` in int32 fixed point.

    ``left = max(shift, 0)``, ``right = max(-shift, 0)``;
    ``RoundingDivideByPOT(SRDHM(sat(x << left), M0), right)``. ``M0``/``shift`` broadcast against
    ``x`` (per output channel: shape ``(C,)`` against ``(..., C)``). A left shift that overflows
    saturates to INT32_MIN/MAX (so large results stay large, |y| >= 2^30, and never wrap); the
    result is exact up to rounding whenever ``|x| 2^shift < 2^31``.
    """
    x64 = _as_i64_int32_range(x, "x")
    m0 = _as_i64_int32_range(M0, "M0")
    sh = np.asarray(shift).astype(np.int64)
    if sh.size and (sh.min() < MIN_SHIFT or sh.max() > MAX_SHIFT):
        raise FixedPointError(f"shift must be in [{MIN_SHIFT}, {MAX_SHIFT}], got [{sh.min()}, {sh.max()}]")
    left = np.maximum(sh, 0)
    right = np.maximum(-sh, 0)
    hi = saturating_rounding_doubling_high_mul(_saturating_left_shift(x64, left), m0)
    return rounding_divide_by_pot(hi, right)


def requantize(acc_i32, M0, shift, zp, lo: int = 0, hi: int = 255) -> np.ndarray:
    """int32 accumulators -> output codes: ``clamp(zp + MBQM(acc, M0, shift), lo, hi)`` (int32 array).

    Per output channel: ``M0``, ``shift`` (and optionally ``zp``) of shape ``(C,)`` broadcast over the
    last axis of ``acc``. A fused ReLU is ``lo = zp`` (real 0). Cast the result to uint8 for codes.
    """
    if lo > hi:
        raise FixedPointError(f"clamp range is empty: lo={lo} > hi={hi}")
    y = multiply_by_quantized_multiplier(acc_i32, M0, shift).astype(np.int64)
    # |y| <= 2^31 and |zp| <= 2^31: int64 sum cannot wrap; the clamp brings it back to [lo, hi].
    return np.clip(y + np.asarray(zp, dtype=np.int64), lo, hi).astype(np.int32)


def add_multipliers(s_a: float, s_b: float, s_out: float, left_shift: int = 20):
    """Multipliers for an integer add of two affine tensors (TFLite ``Add``).

    Each input's ``(q - Z)`` is left-shifted by ``left_shift`` bits of headroom and scaled by
    ``S_in / (2 max(S_a, S_b))`` (< 1); the sum is scaled by ``2 max(S_a, S_b) / (2^left_shift S_out)``.
    Returns ``((M0_a, sh_a), (M0_b, sh_b), (M0_out, sh_out))``.
    """
    for name, s in (("s_a", s_a), ("s_b", s_b), ("s_out", s_out)):
        if not (np.isfinite(s) and s > 0):
            raise FixedPointError(f"{name} must be a positive finite scale, got {s}")
    twice_max = 2.0 * max(s_a, s_b)
    return (
        quantize_multiplier(s_a / twice_max),
        quantize_multiplier(s_b / twice_max),
        quantize_multiplier(twice_max / (2.0**left_shift * s_out)),
    )


# --- scalar versions, plain Python/numba-compatible (ops_fast njit-compiles these) -----------------


def srdhm_scalar(a, b):
    """Scalar ``saturating_rounding_doubling_high_mul`` on int64 values holding int32 numbers."""
    if a == b and a == INT32_MIN:
        return INT32_MAX
    ab = np.int64(a) * np.int64(b)
    if ab >= 0:
        return (ab + (1 << 30)) >> 31
    return -((-(ab + (1 - (1 << 30)))) >> 31)


def rdbpot_scalar(x, exponent):
    """Scalar ``rounding_divide_by_pot`` on int64 values holding int32 numbers, 0 <= exponent <= 31."""
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if remainder > threshold else 0)

