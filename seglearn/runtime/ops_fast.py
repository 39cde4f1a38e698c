"""Fast kernels of the integer-only runtime: same names, signatures and results as ``ops_ref``.

The int8, power-of-two, lookup-table, ternary (on codes) and transposed convolutions are exact
integer GEMMs on float BLAS (``ops_gemm``: im2col tiles x sgemm, K-chunked so that no partial sum
leaves float32's exact integer range, large weights split into two halves of their bits, dgemm only
where neither fits). The rest are ``@njit(parallel=True, cache=True)`` loops, parallel over output rows,
the innermost loop over channels so LLVM vectorises it. Inputs are validated
by the same ``checks`` functions as the reference, so every accumulator bound proved there holds
here: int32 accumulators never wrap. Requantization reuses the gemmlowp scalar formulas of
``fixedpoint`` compiled by numba. Packed binary / bit-plane kernels live in ``ops_fast_binary``
and are re-exported here.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from seglearn.runtime import checks, fixedpoint, ops_gemm, weight_cache
from seglearn.runtime.checks import INT32_MAX, INT32_MIN, KernelError
from seglearn.runtime.fold import fold_bn_sign_threshold, thresholds_from_monotone  # noqa: F401
from seglearn.runtime.ops_fast_binary import (  # noqa: F401
    _count_row,
    _pack_row,
    bconv2d,
    bconv2d_multi_threshold,
    bconv2d_threshold,
    bitplane_conv2d,
    bitplane_conv2d_offset,
    popcount64,
    ternary_conv2d,
    threshold_pack,
)
from seglearn.runtime.ops_ref import concat_packed  # noqa: F401  (data movement: no faster twin)

_srdhm = njit(cache=True)(fixedpoint.srdhm_scalar)
_rdbpot = njit(cache=True)(fixedpoint.rdbpot_scalar)


@njit(cache=True)
def _mbqm(x, m0, shift):
    """``fixedpoint.multiply_by_quantized_multiplier`` on one value: saturating << , SRDHM, RDBPOT."""
    if shift > 0:
        x = min(max(np.int64(x) << shift, INT32_MIN), INT32_MAX)
        return _srdhm(x, m0)
    return _rdbpot(_srdhm(x, m0), -shift)


@njit(cache=True)
def _requant_scalar(acc, m0, shift, zp, lo, hi):
    y = _mbqm(acc, m0, shift) + zp
    return min(max(y, lo), hi)


# --- int8 ------------------------------------------------------------------------------------------


def conv2d_int8(x, x_zp, w, bias=None, stride=1, padding=0) -> np.ndarray:
    """int8 conv ``bias + sum (x - x_zp) w`` -> int32 (see ``ops_ref.conv2d_int8``)."""
    x, zp, w, b, s, p, ho, wo = checks.conv_int8_args(x, x_zp, w, bias, stride, padding)
    return ops_gemm.conv_affine(x, zp, w, b, s, p, ho, wo, "int8 conv")


@njit(nogil=True, cache=True)
def _pack_rows(acc, out, tau, direction):  # pragma: no cover - numba
    for i in range(acc.shape[0]):
        _pack_row(acc[i], tau, direction, out[i])


def conv2d_int8_threshold_pack(x, x_zp, w, stride, padding, tau, direction) -> np.ndarray:
    """``threshold_pack(conv2d_int8(x, x_zp, w, None, stride, padding), tau, direction)`` in one pass
    (identical results; the binary middle's first layer): each GEMM tile is packed to bits by its
    worker, the int32 map never exists whole."""
    x, zp, w, _, s, p, ho, wo = checks.conv_int8_args(x, x_zp, w, None, stride, padding)
    _, tau, d = checks.threshold_args(np.empty((0, 0, w.shape[0]), np.int32), tau, direction)
    return ops_gemm.conv_affine(x, zp, w, None, s, p, ho, wo, "int8 conv",
                                (_pack_rows, (tau, d), (w.shape[0] + 63) >> 6, np.uint64))


def conv2d_int8_requant(x, x_zp, w, bias, M0, shift, y_zp, lo=0, hi=255, stride=1, padding=0) -> np.ndarray:
    """int8 conv fused with per-channel requantization -> uint8 (see ``ops_ref.conv2d_int8_requant``)."""
    x, zp, w, b, s, p, ho, wo = checks.conv_int8_args(x, x_zp, w, bias, stride, padding)
    c = w.shape[0]
    m0, sh = checks.multiplier(M0, shift, c, "conv2d_int8_requant")
    y_zp = checks.zp_u8(y_zp, "y_zp")
    lo, hi = checks.clamp_u8(lo, hi)
    # Requantized by the GEMM's tile workers (a requant with sign +1, no input shift), so the int32
    # map never exists whole. Identical to requantize(conv + bias): conv_int8_args proved
    # |bias| + |sum| < 2^31, so adding the bias after the sum, in int64, never saturates.
    return ops_gemm.conv_affine(x, zp, w, None, s, p, ho, wo, "int8 conv",
                                _requants_epilogue(c, [(np.ones(c, np.int8), b, m0, sh, y_zp, lo, hi, 0)]))[0]


def conv2d_int8_requants(x, x_zp, w, stride, padding, requants) -> list[np.ndarray]:
    """``[requant(conv2d_int8(x, x_zp, w, None, stride, padding), *r) for r in requants]`` in one pass
    (identical results): a conv whose accumulators several requants read (an encoder conv feeding
    both the pooled path and a skip connection quantized on its own scale)."""
    x, zp, w, _, s, p, ho, wo = checks.conv_int8_args(x, x_zp, w, None, stride, padding)
    return list(ops_gemm.conv_affine(x, zp, w, None, s, p, ho, wo, "int8 conv",
                                     _requants_epilogue(w.shape[0], requants)))


@njit(parallel=True, cache=True)
def _requantize(acc, m0, shift, zp, lo, hi):
    n, c = acc.shape
    out = np.empty((n, c), np.uint8)
    for i in prange(n):
        for o in range(c):
            out[i, o] = _requant_scalar(acc[i, o], m0[o], shift[o], zp, lo, hi)
    return out


def requantize(acc, M0, shift, zp, lo=0, hi=255) -> np.ndarray:
    """int32 (..., C) -> uint8 ``clamp(zp + MultiplyByQuantizedMultiplier(acc, M0_c, shift_c))``."""
    acc = np.asarray(acc)
    if acc.dtype != np.int32 or acc.ndim < 1:
        raise KernelError(f"acc must be an int32 array (..., C), got {acc.dtype} {acc.shape}")
    m0, sh = checks.multiplier(M0, shift, acc.shape[-1], "requantize")
    zp = checks.zp_u8(zp, "zp")
    lo, hi = checks.clamp_u8(lo, hi)
    flat = np.ascontiguousarray(acc.reshape(-1, acc.shape[-1]))
    return _requantize(flat, m0, sh, zp, lo, hi).reshape(acc.shape)


def conv_transpose2x2_int8(x, x_zp, w, bias=None) -> np.ndarray:
    """Transposed conv k=2, s=2 -> int32 (2H, 2W, Cout) (see ``ops_ref.conv_transpose2x2_int8``)."""
    x, zp, w, b, _, _, _, _ = checks.conv_int8_args(x, x_zp, w, bias, 1, 1)
    if w.shape[1:3] != (2, 2):
        raise KernelError(f"transposed conv weights must be (Cout, 2, 2, Cin), got {w.shape}")
    return ops_gemm.conv_transpose2x2_affine(x, zp, w, b)


def pow2_conv2d(x, x_zp, wsign, wshift, bias=None, stride=1, padding=0) -> np.ndarray:
    """INQ power-of-two conv ``bias + sum sign (x - x_zp) << shift`` -> int32."""
    x, zp, wsign, wshift, b, s, p, ho, wo = checks.pow2_args(x, x_zp, wsign, wshift, bias, stride, padding)
    w_int = weight_cache.cached((wsign, wshift), ("pow2",),  # exact: shift <= 30, checked
                                lambda: wsign.astype(np.int64) << wshift.astype(np.int64))
    return ops_gemm.conv_affine(x, zp, w_int, b, s, p, ho, wo, "power-of-two conv")


def pow2_conv2d_requant(x, x_zp, wsign, wshift, stride, padding, sign, bias, M0, shift, zp, lo, hi,
                        in_shift) -> np.ndarray:
    """``requant(pow2_conv2d(x, x_zp, wsign, wshift, None, stride, padding), sign, bias, M0, shift,
    zp, lo, hi, in_shift)`` in one pass (identical results): each GEMM tile is requantized by its
    worker (``ops_gemm.gemm_conv``'s epilogue), the int32 map never exists whole."""
    return pow2_conv2d_requants(x, x_zp, wsign, wshift, stride, padding,
                                [(sign, bias, M0, shift, zp, lo, hi, in_shift)])[0]


def pow2_conv2d_requants(x, x_zp, wsign, wshift, stride, padding, requants) -> list[np.ndarray]:
    """``pow2_conv2d`` read by several requants, in one pass (as ``conv2d_int8_requants``)."""
    x, xzp, wsign, wshift, _, s, p, ho, wo = checks.pow2_args(x, x_zp, wsign, wshift, None, stride, padding)
    w_int = weight_cache.cached((wsign, wshift), ("pow2",), lambda: wsign.astype(np.int64) << wshift.astype(np.int64))
    return list(ops_gemm.conv_affine(x, xzp, w_int, None, s, p, ho, wo, "power-of-two conv",
                                     _requants_epilogue(wsign.shape[0], requants)))


# --- activations -----------------------------------------------------------------------------------


@njit(parallel=True, cache=True)
def _multi_threshold(acc, t, d):
    h, w, c = acc.shape
    out = np.empty((h, w, c), np.uint8)
    for y in prange(h):
        for x in range(w):
            _count_row(acc[y, x], t, d, out[y, x])
    return out


def multi_threshold(acc, thresholds, direction=None) -> np.ndarray:
    """int32 (H, W, C) -> uint8 ``#{j : acc > t_cj}`` (or ``acc < t_cj`` for direction -1)."""
    acc, t, d = checks.multi_threshold_args(acc, thresholds, direction)
    return _multi_threshold(acc, t, d)


@njit(parallel=True, cache=True)
def _lut(codes, table):
    h, w, c = codes.shape
    out = np.empty((h, w, c), table.dtype)
    for y in prange(h):
        for x in range(w):
            for o in range(c):
                out[y, x, o] = table[o, codes[y, x, o]]
    return out


def lut(codes, table) -> np.ndarray:
    """``table[codes]`` with a shared ``(L,)`` or per-channel ``(C, L)`` table."""
    codes, table = checks.lut_args(codes, table)
    if table.ndim == 1:
        table = np.ascontiguousarray(np.broadcast_to(table, (codes.shape[2], table.shape[0])))
    return _lut(codes, table)


# --- pooling, resampling, merging ------------------------------------------------------------------


@njit(nogil=True, cache=True)
def _maxpool_row(x0, x1, out, use_or):  # pragma: no cover - numba
    for xx in range(out.shape[0]):
        for o in range(out.shape[1]):
            a, b = x0[2 * xx, o], x0[2 * xx + 1, o]
            e, f = x1[2 * xx, o], x1[2 * xx + 1, o]
            out[xx, o] = (a | b | e | f) if use_or else max(max(a, b), max(e, f))


@njit(parallel=True, cache=True)
def _maxpool(x, use_or):  # pragma: no cover - numba
    h, w, c = x.shape[0] // 2, x.shape[1] // 2, x.shape[2]
    out = np.empty((h, w, c), x.dtype)
    for y in prange(h):
        _maxpool_row(x[2 * y], x[2 * y + 1], out[y], use_or)
    return out


@njit(nogil=True, cache=True)
def _maxpool_serial(x, use_or):  # pragma: no cover - numba
    h, w, c = x.shape[0] // 2, x.shape[1] // 2, x.shape[2]
    out = np.empty((h, w, c), x.dtype)
    for y in range(h):
        _maxpool_row(x[2 * y], x[2 * y + 1], out[y], use_or)
    return out


# Below this many bytes of output a max pool runs on one thread: a 256^2 x 16 pool took 0.05 ms
# and a 512^2 x 32 one 0.2 ms on one core, while the parallel region measured 6-8 ms whenever
# another process held the second core (the region waits for its thread to be scheduled).
SERIAL_BYTES = 16 << 20


def _maxpool_any(x, use_or):
    out_bytes = x.nbytes // 4  # 2x2 -> 1
    return (_maxpool_serial if out_bytes < SERIAL_BYTES else _maxpool)(x, use_or)


def maxpool2x2(x) -> np.ndarray:
    """2x2 stride-2 max pool of codes (odd edge dropped)."""
    return _maxpool_any(checks.array(x, "x", 3, kinds="iu"), False)


def maxpool2x2_packed(xp) -> np.ndarray:
    """2x2 stride-2 max pool of packed +-1 bits: bitwise OR."""
    return _maxpool_any(checks.array(xp, "xp", 3, np.uint64), True)


def upsample2x(x) -> np.ndarray:
    """Nearest x2 upsample (codes or packed words): numpy's repeat, a plain copy loop in C on one
    thread. Measured against the numba kernel it replaces (a parallel loop of per-pixel slice
    copies) on one thread: 0.21 vs 0.37 ms at 256^2 x 16, 6.8 vs 15 ms at 512^2 x 32 (a 32 MB
    output, mostly page faults); and no parallel region to wait for (as ``SERIAL_BYTES``)."""
    x = checks.array(x, "x", 3)
    return np.repeat(np.repeat(x, 2, axis=0), 2, axis=1)


@njit(parallel=True, cache=True)
def _rescale_into(out, src, c0, src_zp, m0, shift, out_zp):
    h, w, c = src.shape
    for y in prange(h):
        for x in range(w):
            for o in range(c):
                out[y, x, c0 + o] = _requant_scalar(np.int32(src[y, x, o]) - src_zp, m0, shift, out_zp, 0, 255)


def concat_requant(a, a_zp, a_M0, a_shift, b, b_zp, b_M0, b_shift, out_zp) -> np.ndarray:
    """Concatenate two uint8 tensors rescaled to a common (S, Z) -> uint8 (H, W, Ca + Cb)."""
    a, b = checks.merge_args(a, b, concat=True)
    out_zp = checks.zp_u8(out_zp, "out_zp")
    out = np.empty(a.shape[:2] + (a.shape[2] + b.shape[2],), np.uint8)
    for t, c0, zp, m0, sh in ((a, 0, a_zp, a_M0, a_shift), (b, a.shape[2], b_zp, b_M0, b_shift)):
        zp = checks.zp_u8(zp)
        m0, sh = checks.multiplier(m0, sh, 1, "concat")
        _rescale_into(out, t, c0, zp, m0[0], sh[0], out_zp)
    return out


@njit(parallel=True, cache=True)
def _add(a, a_zp, am0, ash, b, b_zp, bm0, bsh, om0, osh, out_zp, lo, hi, ls):
    h, w, c = a.shape
    out = np.empty((h, w, c), np.uint8)
    for y in prange(h):
        for x in range(w):
            for o in range(c):
                da = _mbqm((np.int32(a[y, x, o]) - a_zp) << ls, am0, ash)  # |.| < 2^28, see ops_ref
                db = _mbqm((np.int32(b[y, x, o]) - b_zp) << ls, bm0, bsh)
                out[y, x, o] = _requant_scalar(da + db, om0, osh, out_zp, lo, hi)
    return out


def add_requant(a, a_zp, a_M0, a_shift, b, b_zp, b_M0, b_shift, out_M0, out_shift, out_zp,
                lo=0, hi=255, left_shift=20) -> np.ndarray:
    """Integer add of two affine uint8 tensors (TFLite ``Add``) -> uint8."""
    a, b = checks.merge_args(a, b, concat=False)
    ls = checks.int_param(left_shift, "left_shift", 0, 22)
    lo, hi = checks.clamp_u8(lo, hi)
    am0, ash = checks.multiplier(a_M0, a_shift, 1, "add input")
    bm0, bsh = checks.multiplier(b_M0, b_shift, 1, "add input")
    om0, osh = checks.multiplier(out_M0, out_shift, 1, "add output")
    return _add(a, checks.zp_u8(a_zp), am0[0], ash[0], b, checks.zp_u8(b_zp), bm0[0], bsh[0],
                om0[0], osh[0], checks.zp_u8(out_zp, "out_zp"), lo, hi, ls)


@njit(parallel=True, cache=True)
def _argmax(x):
    h, w, c = x.shape
    out = np.empty((h, w), np.int32)
    for y in prange(h):
        for xx in range(w):
            best = 0
            for o in range(1, c):
                if x[y, xx, o] > x[y, xx, best]:  # strict: ties keep the lowest index, like numpy
                    best = o
            out[y, xx] = best
    return out


def argmax_channels(x) -> np.ndarray:
    """Index of the largest channel per pixel -> int32 (H, W); ties -> lowest index."""
    x = checks.array(x, "x", 3, kinds="iu")
    if x.shape[2] == 0:
        raise KernelError("argmax over zero channels")
    return _argmax(x)


def ternary_conv2d_codes(codes, bits, wpos, wneg, stride=1, padding=0) -> np.ndarray:
    """``ops_ref.ternary_conv2d(bitplanes(codes, bits), wpos, wneg, stride, padding)`` (identical
    results) as an exact GEMM on the codes themselves (``ops_gemm.conv_ternary``): no bit planes.

    Why: with multi-bit activations the popcount kernel does ``bits x 2`` passes of and + popcount
    per tap and word (TWN middle with 4-bit DoReFa codes: 96% of the model's time, 5.3 s at
    512^2), while one float32 GEMM of codes times {-1, 0, 1} is exact in a single chunk up to
    ``K <= 2^24 / (2^bits - 1)`` (65793 at 8 bits; ``checks.gemm_plan`` splits beyond).
    """
    codes, bits, wpos, wneg, s, p, ho, wo = checks.ternary_codes_args(codes, bits, wpos, wneg, stride, padding)
    return ops_gemm.conv_ternary(codes, bits, wpos, wneg, codes.shape[2], s, p, ho, wo)


def ternary_conv2d_codes_requant(codes, bits, wpos, wneg, stride, padding, sign, bias, M0, shift, zp, lo,
                                 hi, in_shift) -> np.ndarray:
    """``requant(ternary_conv2d_codes(...), ...)`` in one pass (identical results), as
    ``pow2_conv2d_requant``."""
    return ternary_conv2d_codes_requants(codes, bits, wpos, wneg, stride, padding,
                                         [(sign, bias, M0, shift, zp, lo, hi, in_shift)])[0]


def ternary_conv2d_codes_requants(codes, bits, wpos, wneg, stride, padding, requants) -> list[np.ndarray]:
    """``ternary_conv2d_codes`` read by several requants, in one pass (as ``conv2d_int8_requants``)."""
    codes, bits, wpos, wneg, s, p, ho, wo = checks.ternary_codes_args(codes, bits, wpos, wneg, stride, padding)
    return list(ops_gemm.conv_ternary(codes, bits, wpos, wneg, codes.shape[2], s, p, ho, wo,
                                      _requants_epilogue(wpos.shape[0], requants)))


def conv_lut(codes, table, w, padding=0) -> np.ndarray:
    """Twin of ``ops_ref.conv_lut`` (identical results): an exact GEMM, ``ops_gemm.conv_lut``."""
    return ops_gemm.conv_lut(*checks.lut_conv_args(codes, table, w, padding))


def convt_lut(codes, table, w) -> np.ndarray:
    """Twin of ``ops_ref.convt_lut`` (identical results): one exact GEMM, ``ops_gemm.convt_lut``."""
    return ops_gemm.convt_lut(*checks.convt_lut_args(codes, table, w))


@njit(nogil=True, cache=True)
def _requant_rows(acc, out, sign, bias, m0, left, right, zp, lo, hi, k):  # pragma: no cover - numba
    """``out[i, o] = requant(acc[i, o])`` for (M, C) int32 rows into uint8 rows.

    The same integers as fixedpoint.multiply_by_quantized_multiplier (gemmlowp): saturating
    ``<< left``, then SaturatingRoundingDoublingHighMul and RoundingDivideByPOT(right), whose two
    roundings are done here as one. With ``ab = x m0`` (m0 >= 0: SRDHM's one saturating case,
    INT32_MIN * INT32_MIN, cannot occur), ``u = |ab|``, ``R = right``, ``h = 2^R >> 1``:

        SRDHM   = trunc((ab + nudge) / 2^31), nudge 2^30 (ab >= 0) or 1 - 2^30:
                  floor((u + 2^30) / 2^31) for ab >= 0, -floor((u + 2^30 - 1) / 2^31) below
                  (ties away from zero above 0, towards it below: gemmlowp's nudge)
        RDBPOT  = floor(t / 2^R) + (rem > (mask >> 1) + (t < 0)): ties away from zero,
                  floor((|t| + h) / 2^R) with t's sign
        result  = sign(ab) floor((u + 2^30 - [ab < 0] + h 2^31) / 2^(31 + R))

    by ``floor((floor(a / b) + c) / d) = floor((a + c b) / (b d))`` (integers a >= 0, c; b, d > 0);
    ``u + ... < 2^62 + 2^61``: no int64 overflow. One add and one shift of the magnitude instead
    of the two roundings' compares and selects: 1.5x faster (one core, 64k x 32 int32 rows, 1.68
    vs 1.11 ms). Branch-free, so LLVM vectorises the channel loop. Serial and ``nogil``: the fused
    conv + requant runs it inside the GEMM's tile workers (``ops_gemm.gemm_conv``), ``_requant`` on
    rows in parallel."""
    n = acc.shape[1]
    rnd = np.empty(n, np.int64)  # 2^30 + h 2^31 per channel
    shr = np.empty(n, np.int64)  # 31 + R
    for o in range(n):
        rnd[o] = (np.int64(1) << 30) + (((np.int64(1) << right[o]) >> 1) << 31)
        shr[o] = 31 + right[o]
    for i in range(acc.shape[0]):
        for o in range(n):
            v = sign[o] * (np.int64(acc[i, o]) << k[o]) + bias[o]
            v = min(max(v, INT32_MIN), INT32_MAX)  # saturate, as ops_ref.requant
            v = min(max(v << left[o], INT32_MIN), INT32_MAX)
            ab = v * m0[o]
            neg = ab >> 63  # -1 below zero, else 0
            mag = (((ab ^ neg) - neg) + rnd[o] + neg) >> shr[o]
            out[i, o] = min(max(((mag ^ neg) - neg) + zp, lo), hi)


@njit(parallel=True, cache=True)
def _requant(acc, sign, bias, m0, left, right, zp, lo, hi, k):  # pragma: no cover - numba
    h, w, c = acc.shape
    out = np.empty((h, w, c), np.uint8)
    for y in prange(h):
        _requant_rows(acc[y], out[y], sign, bias, m0, left, right, zp, lo, hi, k)
    return out


def requant_params(c, sign, bias, M0, shift, zp, lo=0, hi=255, in_shift=0) -> tuple:
    """Validated per-channel requant arguments for ``C = c`` channels, as ``_requant_rows`` takes
    them after ``acc, out``: (sign, bias, m0, left, right, zp, lo, hi, in_shift)."""
    _, sign, bias, m0, sh, zp, lo, hi, k = checks.requant_args(np.empty((0, 0, c), np.int32), sign, bias,
                                                               M0, shift, zp, lo, hi, in_shift)
    sh = sh.astype(np.int64)
    return (sign.astype(np.int64), bias.astype(np.int64), m0.astype(np.int64), np.maximum(sh, 0),
            np.maximum(-sh, 0), zp, lo, hi, k.astype(np.int64))


def _requant_rows_each(acc, outs, params):
    """The epilogue of ``_requants_epilogue``: ``_requant_rows`` of one tile's rows into each of the
    k results (``outs``: (k, rows, C); each ``outs[j]`` is C-contiguous, so numba's vector loop)."""
    for out, rq in zip(outs, params):
        _requant_rows(acc, out, *rq)


def _requants_epilogue(c: int, requants) -> tuple:
    """The GEMM epilogue (``ops_gemm.gemm_conv``) of ``len(requants)`` requants of a C = c conv,
    each ``(sign, bias, M0, shift, zp, lo, hi, in_shift)`` as ``requant`` takes them, validated."""
    if not requants:
        raise KernelError("a fused conv + requants needs at least one requant")
    params = tuple(requant_params(c, *r) for r in requants)
    return (_requant_rows_each, (params,), c, np.uint8, len(params))


def requant(acc, sign, bias, M0, shift, zp, lo=0, hi=255, in_shift=0) -> np.ndarray:
    """numba twin of ``ops_ref.requant`` (identical results)."""
    acc = checks.requant_args(acc, sign, bias, M0, shift, zp, lo, hi, in_shift)[0]
    return _requant(acc, *requant_params(acc.shape[2], sign, bias, M0, shift, zp, lo, hi, in_shift))
