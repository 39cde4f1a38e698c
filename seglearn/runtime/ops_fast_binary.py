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

from seglearn.runtime import checks, weight_cache
from seglearn.runtime.simd import (block_shape, make_xor_popcount_block,
                                   make_xor_popcount_threshold_block)


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
    """Bits ``acc[o] >= tau[o]`` (direction +1) or ``acc[o] <= tau[o]`` (-1), ``o < len(tau)``,
    into ``out_words`` (bit o%64 of word o//64); ``acc`` may be longer (padded channels).

    Branch-free, so LLVM vectorises it: with ``m = direction >> 1`` (0 for +1, all ones for -1) the
    bit is ``(acc ^ m) >= (tau ^ m)``, since ``~a = -a - 1`` reverses the order. The branchy form
    ran ~0.7 us a pixel and dominated the binary FCN's time."""
    c = tau.shape[0]
    for wi in range(out_words.shape[0]):
        word = np.uint64(0)
        for b in range(min(64, c - 64 * wi)):
            o = 64 * wi + b
            m = np.int64(direction[o]) >> 1
            on = (np.int64(acc[o]) ^ m) >= (np.int64(tau[o]) ^ m)
            word |= np.uint64(on) << np.uint64(b)
        out_words[wi] = word


@njit(cache=True)
def _count_row(acc, t, d, out):
    """``out[o] = #{j : acc[o] > t[o, j]}`` (``acc[o] < t[o, j]`` for direction -1), ``o < len(t)``:
    multi-threshold codes; branch-free as in ``_pack_row`` (``(acc ^ m) > (t ^ m)``)."""
    for o in range(t.shape[0]):
        m = np.int64(d[o]) >> 1
        a = np.int64(acc[o]) ^ m
        n = 0
        for j in range(t.shape[1]):
            n += a > (np.int64(t[o, j]) ^ m)
        out[o] = n


# output pixels x output channels per micro-kernel block (``simd.block_shape``: the target's registers)
PB, VC = block_shape()
_xor_popcount_block = make_xor_popcount_block(PB, VC)
_xor_popcount_threshold_block = make_xor_popcount_threshold_block(PB, VC)


@njit(cache=True)
def _row_taps(h, kh, oy, s, p):
    """(row0, ky0, ky1): output row ``oy`` reads input rows ``row0 + ky`` for ``ky0 <= ky < ky1``."""
    row0 = oy * s - p
    return row0, max(0, -row0), min(kh, h - row0)


@njit(cache=True)
def _interior(ox0, nq, s, p, kw, w):
    """Whether the block of ``nq`` pixels from ``ox0`` is a full ``PB`` block with every tap inside."""
    col0 = ox0 * s - p
    return nq == PB and col0 >= 0 and col0 + (PB - 1) * s + kw <= w


@njit(cache=True)
def _edge_block(xp, wt, cin, row0, ky0, ky1, col0, s, nq, pc, nv, acc, r0):
    """The per-pixel path of a block touching the left/right padding: ``acc[r0 + q, o]`` for
    ``q < nq`` (``pc``, ``nv``: scratch). The inner loop runs over Coutp weight words."""
    h, w, nw = xp.shape
    kh, kw, _, cout = wt.shape
    pc[:nq] = 0
    nv[:nq] = 0
    for ky in range(ky0, ky1):
        iy = row0 + ky
        for q in range(nq):
            for kx in range(kw):
                ix = col0 + q * s + kx
                if ix < 0 or ix >= w:
                    continue  # zero padding: the tap contributes 0, not Cin - 2 popcount
                nv[q] += 1
                for j in range(nw):
                    xq = xp[iy, ix, j]
                    for o in range(cout):
                        pc[q, o] += popcount64(xq ^ wt[ky, kx, j, o])
    for q in range(nq):
        for o in range(cout):
            acc[r0 + q, o] = nv[q] * cin - 2 * pc[q, o]


@njit(cache=True)
def _bconv_row(xp, wt, cin, oy, s, p, wo, pc, nv, acc):
    """acc[ox, o] = sum over valid taps of (Cin - 2 popcount(x xor w)) for output row ``oy``.

    Interior blocks of ``PB`` pixels (every tap inside the row) run the register-blocked
    micro-kernel ``simd.make_xor_popcount_block``, ``VC`` output channels at a time: each loaded
    weight vector is xor-ed with PB broadcast activation words, the PB accumulators stay in
    registers over all taps and are stored finished into ``acc``. Blocks touching the left/right
    padding take ``_edge_block``; rows touching the top/bottom padding pass the valid ``ky``
    range. ``wt``'s Cout and ``acc``'s columns are padded to a multiple of ``VC``
    (``_transpose_pad_w``). ``acc``: int32 (wo, Coutp); |acc| <= Cin kh kw is checked to fit
    int32 by the callers (``checks.bconv_args``).
    """
    kh, kw, _, cout = wt.shape
    row0, ky0, ky1 = _row_taps(xp.shape[0], kh, oy, s, p)
    for ox0 in range(0, wo, PB):
        nq = min(PB, wo - ox0)
        col0 = ox0 * s - p
        if _interior(ox0, nq, s, p, kw, xp.shape[1]):
            base = (ky1 - ky0) * kw * cin
            for o0 in range(0, cout, VC):
                _xor_popcount_block(acc, xp, wt, row0, ky0, ky1, col0, s, o0, ox0, base)
        else:
            _edge_block(xp, wt, cin, row0, ky0, ky1, col0, s, nq, pc, nv, acc, ox0)


@njit(parallel=True, cache=True)
def _bconv(xp, wt, cin, s, p, ho, wo):
    """int32 (ho, wo, Coutp): rows written in place by ``_bconv_row`` (no copy)."""
    coutp = wt.shape[3]
    out = np.empty((ho, wo, coutp), np.int32)
    for oy in prange(ho):
        pc = np.empty((PB, coutp), np.int64)
        nv = np.empty(PB, np.int64)
        _bconv_row(xp, wt, cin, oy, s, p, wo, pc, nv, out[oy])
    return out


@njit(parallel=True, cache=True)
def _bconv_threshold(xp, wt, cin, tau, direction, tau_p, flip_p, s, p, ho, wo, out8, out64):
    """Packed ``acc >= tau`` / ``acc <= tau`` bits of the binary conv into ``out8`` / ``out64``
    (one zeroed buffer viewed as bytes and as uint64 words). Interior blocks: the fused
    micro-kernel (``simd.make_xor_popcount_threshold_block``) compares in registers and stores
    the bits, no int32 map; edge blocks: ``_edge_block`` + ``_pack_row``. ``tau_p``/``flip_p``:
    per padded channel (``flip = direction >> 1``); the padded channels' bits land beyond Cout
    and are cleared by the caller."""
    kh, kw, _, coutp = wt.shape
    for oy in prange(ho):
        pc = np.empty((PB, coutp), np.int64)
        nv = np.empty(PB, np.int64)
        edge = np.empty((PB, coutp), np.int32)
        row0, ky0, ky1 = _row_taps(xp.shape[0], kh, oy, s, p)
        for ox0 in range(0, wo, PB):
            nq = min(PB, wo - ox0)
            col0 = ox0 * s - p
            if _interior(ox0, nq, s, p, kw, xp.shape[1]):
                base = (ky1 - ky0) * kw * cin
                for o0 in range(0, coutp, VC):
                    _xor_popcount_threshold_block(out8[oy], xp, wt, row0, ky0, ky1, col0, s, o0,
                                                  ox0, base, tau_p, flip_p)
            else:
                _edge_block(xp, wt, cin, row0, ky0, ky1, col0, s, nq, pc, nv, edge, 0)
                for q in range(nq):
                    _pack_row(edge[q], tau, direction, out64[oy, ox0 + q])


@njit(parallel=True, cache=True)
def _bconv_multi_threshold(xp, wt, cin, t, d, s, p, ho, wo):
    cout, coutp = t.shape[0], wt.shape[3]
    out = np.empty((ho, wo, cout), np.uint8)
    for oy in prange(ho):
        pc = np.empty((PB, coutp), np.int64)
        nv = np.empty(PB, np.int64)
        acc = np.empty((wo, coutp), np.int32)
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


def _transpose_pad_w(wp: np.ndarray) -> np.ndarray:
    """(Cout, kh, kw, nw) -> (kh, kw, nw, Coutp), Cout zero-padded to a multiple of ``VC`` (the
    micro-kernel's channel run; the padded outputs are computed and dropped). Made once per loaded
    model (``weight_cache``)."""
    def build():
        cout = wp.shape[0]
        wt = np.zeros(wp.shape[1:] + (-(-cout // VC) * VC,), np.uint64)
        wt[..., :cout] = _transpose_w(wp)
        return wt
    return weight_cache.cached((wp,), ("bconv", VC), build)


def bconv2d(xp, wp, cin, stride=1, padding=0) -> np.ndarray:
    """Binary conv ``sum_{valid taps} (Cin - 2 popcount(x xor w))`` -> int32 (see ``ops_ref.bconv2d``)."""
    xp, wp, cin, s, p, ho, wo = checks.bconv_args(xp, wp, cin, stride, padding)
    out = _bconv(xp, _transpose_pad_w(wp), cin, s, p, ho, wo)
    cout = wp.shape[0]
    return out if out.shape[2] == cout else np.ascontiguousarray(out[..., :cout])


def bconv2d_threshold(xp, wp, cin, tau, direction, stride=1, padding=0) -> np.ndarray:
    """Binary conv fused with the folded BN + sign threshold -> packed uint64 (Ho, Wo, nwords(Cout))."""
    xp, wp, cin, s, p, ho, wo = checks.bconv_args(xp, wp, cin, stride, padding)
    tau = checks.per_channel(tau, "tau", wp.shape[0], np.int32)
    d = checks.per_channel(direction, "direction", wp.shape[0], np.int8)
    if d.size and not np.all(np.abs(d) == 1):
        raise checks.KernelError("direction must be +1 or -1 per channel")
    wt = _transpose_pad_w(wp)
    cout, coutp = wp.shape[0], wt.shape[3]
    tau_p = np.full(coutp, np.iinfo(np.int32).max, np.int32)
    tau_p[:cout] = tau
    flip_p = np.zeros(coutp, np.int32)
    flip_p[:cout] = d.astype(np.int32) >> 1
    nwords = (cout + 63) >> 6
    out8 = np.zeros((ho, wo, 8 * nwords), np.uint8)
    out64 = out8.view(np.uint64)
    _bconv_threshold(xp, wt, cin, tau, d, tau_p, flip_p, s, p, ho, wo, out8, out64)
    if cout % 64:  # the padded channels' bits (cout <= o < coutp) are not outputs
        out64[..., -1] &= np.uint64((1 << (cout % 64)) - 1)
    return out64


def bconv2d_multi_threshold(xp, wp, cin, thresholds, direction, stride=1, padding=0) -> np.ndarray:
    """``multi_threshold(bconv2d(xp, wp, cin, stride, padding), thresholds, direction)`` in one pass
    (identical results; the binary middle's last layer into the multi-bit head): each row's
    accumulators become codes while in cache, the int32 map never exists whole."""
    xp, wp, cin, s, p, ho, wo = checks.bconv_args(xp, wp, cin, stride, padding)
    _, t, d = checks.multi_threshold_args(np.empty((0, 0, wp.shape[0]), np.int32), thresholds, direction)
    return _bconv_multi_threshold(xp, _transpose_pad_w(wp), cin, t, d, s, p, ho, wo)


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
