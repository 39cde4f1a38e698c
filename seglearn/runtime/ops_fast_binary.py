"""Fast (numba) packed kernels: binary XNOR-popcount conv, thresholds, bit-plane and ternary convs.

Same names, signatures and results as ``ops_ref`` (tests check equality exactly). Loop order is
chosen for the CPU: output rows in parallel (``prange``), and the innermost loop runs over output
channels with the weights transposed to ``(..., Cout)`` so that one activation word is xor-ed/and-ed
with a contiguous run of weight words -- LLVM vectorises ``popcount`` over it: on AVX2 the nibble
lookup ``vpshufb`` with byte counts summed by ``vpsadbw`` (Mula, Kurz, Lemire, arXiv 1611.07612),
``vpopcntq`` on AVX-512 VPOPCNTDQ; ``bench/runtime.py`` reports the instructions found. The binary
conv blocks ``PB`` output pixels so each loaded weight vector is reused PB times.
Math and overflow bounds: see the reference twins in ``ops_ref``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange, types
from numba.extending import intrinsic

from seglearn.runtime import checks


@intrinsic
def popcount64(typingctx, x):
    """``llvm.ctpop.i64`` on a uint64, typed int64 so sums stay integer (uint64 + int64 is float in numba)."""
    if not isinstance(x, types.Integer) or x.bitwidth != 64:
        return None

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return types.int64(x), codegen


@njit(cache=True)
def _pack_row(acc, tau, direction, out_words):
    """Bits ``acc >= tau`` (direction +1) or ``acc <= tau`` (-1) into ``out_words`` (bit o%64 of word o//64)."""
    out_words[:] = 0
    for o in range(acc.shape[0]):
        on = acc[o] >= tau[o] if direction[o] > 0 else acc[o] <= tau[o]
        if on:
            out_words[o >> 6] |= np.uint64(1) << np.uint64(o & 63)


@njit(cache=True)
def _count_row(acc, t, d, out):
    """``out[o] = #{j : acc[o] > t[o, j]}`` (``acc[o] < t[o, j]`` for direction -1): multi-threshold codes."""
    for o in range(acc.shape[0]):
        a = acc[o]
        n = 0
        for j in range(t.shape[1]):
            n += (a > t[o, j]) if d[o] > 0 else (a < t[o, j])
        out[o] = n


PB = 4  # output pixels per block: each loaded weight vector is xor-ed with PB activation words


@njit(cache=True)
def _bconv_row(xp, wt, cin, oy, s, p, wo, pc, nv, acc):
    """acc[ox, o] = sum over valid taps of (Cin - 2 popcount(x xor w)) for output row ``oy``.

    Interior blocks of ``PB`` pixels run the weight-stationary inner loop: one weight vector
    (``wt[ky, kx, j, :]``, Cout words) is loaded once and xor-ed with PB broadcast activation words,
    so loads per popcount drop PB-fold and the loop is pure ALU work (xor + LLVM's vectorised
    ``ctpop``: ``vpshufb`` nibble lookups summed by ``vpsadbw`` on AVX2, Mula et al. 2016, or
    ``vpopcntq`` on AVX-512 VPOPCNTDQ). Blocks touching the padding take the per-pixel path.
    """
    h, w, nw = xp.shape
    kh, kw, _, cout = wt.shape
    for ox0 in range(0, wo, PB):
        nq = min(PB, wo - ox0)
        pc[:nq] = 0
        nv[:nq] = 0
        interior = nq == PB and ox0 * s - p >= 0 and (ox0 + PB - 1) * s - p + kw <= w
        for ky in range(kh):
            iy = oy * s - p + ky
            if iy < 0 or iy >= h:
                continue  # zero padding: the tap contributes 0, not Cin - 2 popcount
            if interior:
                for kx in range(kw):
                    for j in range(nw):
                        for q in range(PB):
                            xq = xp[iy, (ox0 + q) * s - p + kx, j]
                            for o in range(cout):
                                pc[q, o] += popcount64(xq ^ wt[ky, kx, j, o])
                for q in range(PB):
                    nv[q] += kw
            else:
                for q in range(nq):
                    for kx in range(kw):
                        ix = (ox0 + q) * s - p + kx
                        if ix < 0 or ix >= w:
                            continue
                        nv[q] += 1
                        for j in range(nw):
                            xq = xp[iy, ix, j]
                            for o in range(cout):
                                pc[q, o] += popcount64(xq ^ wt[ky, kx, j, o])
        for q in range(nq):
            for o in range(cout):
                acc[ox0 + q, o] = nv[q] * cin - 2 * pc[q, o]  # |acc| <= Cin kh kw, checked to fit int32


@njit(parallel=True, cache=True)
def _bconv(xp, wt, cin, s, p, ho, wo):
    cout = wt.shape[3]
    out = np.empty((ho, wo, cout), np.int32)
    for oy in prange(ho):
        pc = np.empty((PB, cout), np.int64)
        nv = np.empty(PB, np.int64)
        acc = np.empty((wo, cout), np.int64)
        _bconv_row(xp, wt, cin, oy, s, p, wo, pc, nv, acc)
        for ox in range(wo):
            for o in range(cout):
                out[oy, ox, o] = acc[ox, o]
    return out


@njit(parallel=True, cache=True)
def _bconv_threshold(xp, wt, cin, tau, direction, s, p, ho, wo):
    cout = wt.shape[3]
    out = np.empty((ho, wo, (cout + 63) >> 6), np.uint64)
    for oy in prange(ho):
        pc = np.empty((PB, cout), np.int64)
        nv = np.empty(PB, np.int64)
        acc = np.empty((wo, cout), np.int64)
        _bconv_row(xp, wt, cin, oy, s, p, wo, pc, nv, acc)
        for ox in range(wo):
            _pack_row(acc[ox], tau, direction, out[oy, ox])
    return out


@njit(parallel=True, cache=True)
def _bconv_multi_threshold(xp, wt, cin, t, d, s, p, ho, wo):
    cout = wt.shape[3]
    out = np.empty((ho, wo, cout), np.uint8)
    for oy in prange(ho):
        pc = np.empty((PB, cout), np.int64)
        nv = np.empty(PB, np.int64)
        acc = np.empty((wo, cout), np.int64)
        _bconv_row(xp, wt, cin, oy, s, p, wo, pc, nv, acc)
        for ox in range(wo):
            _count_row(acc[ox], t, d, out[oy, ox])
    return out


@njit(parallel=True, cache=True)
def _threshold_pack(acc, tau, direction):
    h, w, c = acc.shape
    out = np.empty((h, w, (c + 63) >> 6), np.uint64)
    for y in prange(h):
        for x in range(w):
            _pack_row(acc[y, x], tau, direction, out[y, x])
    return out


@njit(parallel=True, cache=True)
def _planes_conv(xplanes, wt, coef, sum_coef, s, p, ho, wo):
    """acc[o] = sum_{valid taps} sum_b 2^b [sum_m coef[m] popcount(x_b and w_m[o]) + sum_coef popcount(x_b)].

    Unsigned weights: coef = 2^m, sum_coef = 0; offset weights 2u - (2^m - 1): coef = 2^(m+1),
    sum_coef = -(2^m - 1); ternary (pos, neg) masks: coef = (1, -1), sum_coef = 0.
    """
    nb, h, w, nw = xplanes.shape
    nm, kh, kw, _, cout = wt.shape
    out = np.empty((ho, wo, cout), np.int32)
    for oy in prange(ho):
        acc = np.empty(cout, np.int64)
        for ox in range(wo):
            acc[:] = 0
            sx = 0
            for ky in range(kh):
                iy = oy * s - p + ky
                if iy < 0 or iy >= h:
                    continue
                for kx in range(kw):
                    ix = ox * s - p + kx
                    if ix < 0 or ix >= w:
                        continue
                    for b in range(nb):
                        for j in range(nw):
                            xv = xplanes[b, iy, ix, j]
                            sx += popcount64(xv) << b
                            for m in range(nm):
                                cf = coef[m] << b
                                for o in range(cout):
                                    acc[o] += cf * popcount64(xv & wt[m, ky, kx, j, o])
            for o in range(cout):
                out[oy, ox, o] = acc[o] + sum_coef * sx  # bound checked in checks.planes_conv_args
    return out


def _transpose_w(wp: np.ndarray) -> np.ndarray:
    """(..., Cout, kh, kw, nw) -> (..., kh, kw, nw, Cout): output channels innermost for the vector loop."""
    nd = wp.ndim
    lead = tuple(range(nd - 4))
    return np.ascontiguousarray(wp.transpose(lead + (nd - 3, nd - 2, nd - 1, nd - 4)))


def bconv2d(xp, wp, cin, stride=1, padding=0) -> np.ndarray:
    """Binary conv ``sum_{valid taps} (Cin - 2 popcount(x xor w))`` -> int32 (see ``ops_ref.bconv2d``)."""
    xp, wp, cin, s, p, ho, wo = checks.bconv_args(xp, wp, cin, stride, padding)
    return _bconv(xp, _transpose_w(wp), cin, s, p, ho, wo)


def bconv2d_threshold(xp, wp, cin, tau, direction, stride=1, padding=0) -> np.ndarray:
    """Binary conv fused with the folded BN + sign threshold -> packed uint64 (Ho, Wo, nwords(Cout))."""
    xp, wp, cin, s, p, ho, wo = checks.bconv_args(xp, wp, cin, stride, padding)
    tau = checks.per_channel(tau, "tau", wp.shape[0], np.int32)
    d = checks.per_channel(direction, "direction", wp.shape[0], np.int8)
    if d.size and not np.all(np.abs(d) == 1):
        raise checks.KernelError("direction must be +1 or -1 per channel")
    return _bconv_threshold(xp, _transpose_w(wp), cin, tau, d, s, p, ho, wo)


def bconv2d_multi_threshold(xp, wp, cin, thresholds, direction, stride=1, padding=0) -> np.ndarray:
    """``multi_threshold(bconv2d(xp, wp, cin, stride, padding), thresholds, direction)`` in one pass
    (identical results; the binary middle's last layer into the multi-bit head): each row's
    accumulators become codes while in cache, the int32 map never exists whole."""
    xp, wp, cin, s, p, ho, wo = checks.bconv_args(xp, wp, cin, stride, padding)
    _, t, d = checks.multi_threshold_args(np.empty((0, 0, wp.shape[0]), np.int32), thresholds, direction)
    return _bconv_multi_threshold(xp, _transpose_w(wp), cin, t, d, s, p, ho, wo)


def threshold_pack(acc, tau, direction) -> np.ndarray:
    """int32 (H, W, C) -> packed bits ``acc >= tau`` / ``acc <= tau`` per channel direction."""
    acc, tau, d = checks.threshold_args(acc, tau, direction)
    return _threshold_pack(acc, tau, d)


def _planes(xplanes, wset, coefs, stride, padding, per_tap_max, what):
    """Validate, then run ``_planes_conv`` with ``(coef, sum_coef) = coefs(m)`` for m weight planes."""
    xplanes, wset, s, p, ho, wo = checks.planes_conv_args(xplanes, wset, stride, padding, per_tap_max, what)
    coef, sum_coef = coefs(wset.shape[0])
    return _planes_conv(xplanes, _transpose_w(wset), np.asarray(coef, np.int64), np.int64(sum_coef), s, p, ho, wo)


def bitplane_conv2d(xplanes, wplanes, stride=1, padding=0) -> np.ndarray:
    """Unsigned k-bit x unsigned m-bit: ``sum_b sum_m 2^(b+m) popcount(c_b(x) and c_m(u))``."""
    return _planes(xplanes, wplanes, lambda m: ([1 << j for j in range(m)], 0), stride, padding,
                   lambda k, m: (2**k - 1) * (2**m - 1), "bit-plane conv")


def bitplane_conv2d_offset(xplanes, wplanes, stride=1, padding=0) -> np.ndarray:
    """Unsigned x times offset weights ``2u - (2^m - 1)``: ``2 x.u - (2^m - 1) sum(x)``."""
    return _planes(xplanes, wplanes, lambda m: ([2 << j for j in range(m)], -(2**m - 1)), stride, padding,
                   lambda k, m: (2**k - 1) * 2 * (2**m - 1), "offset bit-plane conv")


def ternary_conv2d(xplanes, wpos, wneg, stride=1, padding=0) -> np.ndarray:
    """Unsigned x times ternary weights as (pos, neg) masks: ``x.pos - x.neg``."""
    wpos, wneg = checks.ternary_args(wpos, wneg)
    return _planes(xplanes, np.stack([wpos, wneg]), lambda m: ([1, -1], 0), stride, padding,
                   lambda k, _: 2**k - 1, "ternary conv")
