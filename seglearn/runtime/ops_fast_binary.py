"""Fast (numba) packed kernels: binary XNOR-popcount conv, thresholds, bit-plane and ternary convs.

Same names, signatures and results as ``ops_ref`` (tests check equality exactly). Loop order is
chosen for the CPU: output rows in parallel (``prange``), and the innermost loop runs over output
channels with the weights transposed to ``(..., Cout)`` so that one activation word is xor-ed/and-ed
with a contiguous run of weight words. The binary conv's micro-kernels (``simd``) block ``PB``
output pixels so each loaded weight vector is reused PB times, and count bits with ``vpopcntq``
on AVX-512 VPOPCNTDQ, by the split-nibble lookup ``vpshufb`` with byte accumulators summed by
``vpsadbw`` on AVX2 (Mula, Kurz, Lemire, arXiv 1611.07612); ``bench/runtime.py`` reports the
instructions found.
Math and overflow bounds: see the reference twins in ``ops_ref``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange, types
from numba.extending import intrinsic

from seglearn.runtime import checks, weight_cache
from seglearn.runtime.bitpack import popcount
from seglearn.runtime.simd import (NIBBLE_MASK, block_shape, make_xor_popcount_block,
                                   make_xor_popcount_threshold_block, nibble_mode)


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
# the micro-kernels read words as (low, high) nibbles on AVX2 without a vector popcount (``simd``)
NIBBLES = nibble_mode()


def split_nibbles(words: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What the micro-kernels read for packed words: ``(w & 0x0F..0F, (w >> 4) & 0x0F..0F)``
    where ``NIBBLES`` (then ``popcount(x xor w)`` is the sum of the nibble counts of ``xl xor wl``
    and ``xh xor wh``, looked up without a mask and a shift per xor-ed vector), else ``(w, w)``."""
    if not NIBBLES:
        return words, words
    m = np.uint64(NIBBLE_MASK)
    return np.ascontiguousarray(words & m), np.ascontiguousarray((words >> np.uint64(4)) & m)


@njit(cache=True)
def _row_taps(h, kh, oy, s, p):
    """(row0, ky0, ky1): output row ``oy`` reads input rows ``row0 + ky`` for ``ky0 <= ky < ky1``."""
    row0 = oy * s - p
    return row0, max(0, -row0), min(kh, h - row0)


@njit(cache=True)
def _touches_padding(ox0, nq, s, p, kw, w):
    """Whether a pixel of the block of ``nq`` pixels from ``ox0`` reads a left/right padding column
    (input columns ``ox s - p + kx`` outside ``0 .. w``)."""
    return ox0 * s < p or (ox0 + nq - 1) * s + kw > p + w


@njit(cache=True)
def _fix_padding(acc, r0, ox0, nq, pk, cin, ky0, ky1, s, p, w):
    """Undo the zero words of the padding columns for the block's pixels ``q < nq`` (rows ``r0 + q``
    of ``acc``): the micro-kernel ran on the input padded left and right with all-0 words, so a
    padding tap added ``Cin - 2 popcount(0 xor w) = Cin - 2 pk[ky, kx, o]`` where the reference adds
    0; here it is taken off again, ``acc += 2 pk - Cin`` per such tap and valid row ``ky``. Exact:
    the same integers, and the block's result already fit int32 (its taps are a superset)."""
    kh, kw, coutp = pk.shape
    for q in range(nq):
        for kx in range(kw):
            ix = (ox0 + q) * s + kx  # a column of the padded input
            if ix >= p and ix < p + w:
                continue
            for ky in range(ky0, ky1):
                for o in range(coutp):
                    acc[r0 + q, o] += 2 * pk[ky, kx, o] - cin


@njit(cache=True)
def _block_acc(acc, r0, xq, xh, wt, wh, pk, cin, row0, ky0, ky1, ox0, nq, s, p, w, base):
    """The int32 accumulators of the ``PB``-pixel block from ``ox0`` into rows ``r0 ..`` of ``acc``:
    the micro-kernel over every ``VC``-channel run on the column-padded input ``xq``, then
    ``_fix_padding`` where a pixel of its ``nq`` read a padding column."""
    kw, coutp = wt.shape[1], wt.shape[3]
    for o0 in range(0, coutp, VC):
        _xor_popcount_block(acc, xq, xh, wt, wh, row0, ky0, ky1, ox0 * s, s, o0, r0, base)
    if _touches_padding(ox0, nq, s, p, kw, w):
        _fix_padding(acc, r0, ox0, nq, pk, cin, ky0, ky1, s, p, w)


@njit(cache=True)
def _bconv_row(xq, xh, wt, wh, pk, cin, oy, s, p, w, wo, scratch, acc):
    """acc[ox, o] = sum over valid taps of (Cin - 2 popcount(x xor w)) for output row ``oy``.

    Every block of ``PB`` pixels runs the register-blocked micro-kernel
    ``simd.make_xor_popcount_block``, ``VC`` output channels at a time: each loaded weight vector
    is xor-ed with PB broadcast activation words, the PB accumulators stay in registers over all
    taps and are stored finished. ``xq`` is the input padded left and right with all-0 words
    (``_padded_columns``), so blocks at the left/right edge run the micro-kernel too and
    ``_fix_padding`` takes the padding taps' terms off their few pixels (the former per-pixel path
    of those blocks cost ~10% of a 3x3 64->64 conv at 128^2); rows touching the top/bottom padding
    pass the valid ``ky`` range. The last block of a row whose width is no multiple of PB is
    computed whole into ``scratch`` (PB, Coutp) and its ``nq`` pixels copied. ``wt``'s Cout and
    ``acc``'s columns are padded to a multiple of ``VC`` (``_transpose_pad_w``). ``acc``: int32
    (wo, Coutp); |acc| <= Cin kh kw is checked to fit int32 by the callers (``checks.bconv_args``).
    """
    kh, kw = wt.shape[0], wt.shape[1]
    row0, ky0, ky1 = _row_taps(xq.shape[0], kh, oy, s, p)
    base = (ky1 - ky0) * kw * cin
    for ox0 in range(0, wo, PB):
        nq = min(PB, wo - ox0)
        dst, r0 = (acc, ox0) if nq == PB else (scratch, 0)
        _block_acc(dst, r0, xq, xh, wt, wh, pk, cin, row0, ky0, ky1, ox0, nq, s, p, w, base)
        if nq < PB:
            acc[ox0:ox0 + nq] = scratch[:nq]


@njit(parallel=True, cache=True)
def _bconv(xq, xh, wt, wh, pk, cin, s, p, w, ho, wo):
    """int32 (ho, wo, Coutp): rows written in place by ``_bconv_row`` (no copy)."""
    coutp = wt.shape[3]
    out = np.empty((ho, wo, coutp), np.int32)
    for oy in prange(ho):
        scratch = np.empty((PB, coutp), np.int32)
        _bconv_row(xq, xh, wt, wh, pk, cin, oy, s, p, w, wo, scratch, out[oy])
    return out


@njit(parallel=True, cache=True)
def _bconv_threshold(xq, xh, wt, wh, pk, cin, tau, direction, tau_p, flip_p, s, p, w, ho, wo, out8,
                     out64):
    """Packed ``acc >= tau`` / ``acc <= tau`` bits of the binary conv into ``out8`` / ``out64``
    (one zeroed buffer viewed as bytes and as uint64 words). Full blocks inside the row: the fused
    micro-kernel (``simd.make_xor_popcount_threshold_block``) compares in registers and stores
    the bits, no int32 map; blocks touching the left/right padding or short: the micro-kernel
    into an int32 scratch, ``_fix_padding``, ``_pack_row``. ``tau_p``/``flip_p``: per padded
    channel (``flip = direction >> 1``); the padded channels' bits land beyond Cout and are
    cleared by the caller. ``xq``: as in ``_bconv_row``."""
    kh, kw, _, coutp = wt.shape
    for oy in prange(ho):
        edge = np.empty((PB, coutp), np.int32)
        row0, ky0, ky1 = _row_taps(xq.shape[0], kh, oy, s, p)
        base = (ky1 - ky0) * kw * cin
        for ox0 in range(0, wo, PB):
            nq = min(PB, wo - ox0)
            if nq == PB and not _touches_padding(ox0, nq, s, p, kw, w):
                for o0 in range(0, coutp, VC):
                    _xor_popcount_threshold_block(out8[oy], xq, xh, wt, wh, row0, ky0, ky1, ox0 * s,
                                                  s, o0, ox0, base, tau_p, flip_p)
            else:
                _block_acc(edge, 0, xq, xh, wt, wh, pk, cin, row0, ky0, ky1, ox0, nq, s, p, w, base)
                for q in range(nq):
                    _pack_row(edge[q], tau, direction, out64[oy, ox0 + q])


@njit(parallel=True, cache=True)
def _bconv_multi_threshold(xq, xh, wt, wh, pk, cin, t, d, s, p, w, ho, wo):
    cout, coutp = t.shape[0], wt.shape[3]
    out = np.empty((ho, wo, cout), np.uint8)
    for oy in prange(ho):
        scratch = np.empty((PB, coutp), np.int32)
        acc = np.empty((wo, coutp), np.int32)
        _bconv_row(xq, xh, wt, wh, pk, cin, oy, s, p, w, wo, scratch, acc)
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


def _transpose_pad_w(wp: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Cout, kh, kw, nw) -> ``wt``, ``wh`` (kh, kw, nw, Coutp): the transposed words, Cout
    zero-padded to a multiple of ``VC`` (the micro-kernel's channel run; the padded outputs are
    computed and dropped), as ``split_nibbles`` gives them to the micro-kernels, and ``pk`` int32
    (kh, kw, Coutp), each tap's weight popcount ``sum_j popcount(w[ky, kx, j, o])``
    (``_fix_padding``). Made once per loaded model (``weight_cache``)."""
    def build():
        cout = wp.shape[0]
        wt = np.zeros(wp.shape[1:] + (-(-cout // VC) * VC,), np.uint64)
        wt[..., :cout] = _transpose_w(wp)
        return (*split_nibbles(wt), popcount(wt).sum(axis=2).astype(np.int32))  # <= 64 nw: int32
    return weight_cache.cached((wp,), ("bconv", VC, NIBBLES), build)


def _padded_columns(xp: np.ndarray, p: int, s: int, kw: int, wo: int) -> np.ndarray:
    """The packed input with ``p`` all-0 word columns on the left and enough on the right that the
    last ``PB``-pixel block's taps stay inside: (H, max(W + 2p, (last block + PB - 1) s + kw), nw).
    One copy of the packed words (8 bytes per 64 channels of a pixel), none where ``xp`` is already
    that (no padding and a width the blocks fit in)."""
    h, w, nw = xp.shape
    last = (wo - 1) // PB * PB
    wq = max(w + 2 * p, (last + PB - 1) * s + kw)
    if p == 0 and wq == w:
        return xp
    xq = np.zeros((h, wq, nw), np.uint64)
    xq[:, p:p + w] = xp
    return xq


def bconv2d(xp, wp, cin, stride=1, padding=0) -> np.ndarray:
    """Binary conv ``sum_{valid taps} (Cin - 2 popcount(x xor w))`` -> int32 (see ``ops_ref.bconv2d``)."""
    xp, wp, cin, s, p, ho, wo = checks.bconv_args(xp, wp, cin, stride, padding)
    wt, wh, pk = _transpose_pad_w(wp)
    xq, xh = split_nibbles(_padded_columns(xp, p, s, wp.shape[2], wo))
    out = _bconv(xq, xh, wt, wh, pk, cin, s, p, xp.shape[1], ho, wo)
    cout = wp.shape[0]
    return out if out.shape[2] == cout else np.ascontiguousarray(out[..., :cout])


def bconv2d_threshold(xp, wp, cin, tau, direction, stride=1, padding=0) -> np.ndarray:
    """Binary conv fused with the folded BN + sign threshold -> packed uint64 (Ho, Wo, nwords(Cout))."""
    xp, wp, cin, s, p, ho, wo = checks.bconv_args(xp, wp, cin, stride, padding)
    tau = checks.per_channel(tau, "tau", wp.shape[0], np.int32)
    d = checks.per_channel(direction, "direction", wp.shape[0], np.int8)
    if d.size and not np.all(np.abs(d) == 1):
        raise checks.KernelError("direction must be +1 or -1 per channel")
    wt, wh, pk = _transpose_pad_w(wp)
    cout, coutp = wp.shape[0], wt.shape[3]
    tau_p = np.full(coutp, np.iinfo(np.int32).max, np.int32)
    tau_p[:cout] = tau
    flip_p = np.zeros(coutp, np.int32)
    flip_p[:cout] = d.astype(np.int32) >> 1
    nwords = (cout + 63) >> 6
    out8 = np.zeros((ho, wo, 8 * nwords), np.uint8)
    out64 = out8.view(np.uint64)
    xq, xh = split_nibbles(_padded_columns(xp, p, s, wp.shape[2], wo))
    _bconv_threshold(xq, xh, wt, wh, pk, cin, tau, d, tau_p, flip_p, s, p, xp.shape[1], ho, wo, out8,
                     out64)
    if cout % 64:  # the padded channels' bits (cout <= o < coutp) are not outputs
        out64[..., -1] &= np.uint64((1 << (cout % 64)) - 1)
    return out64


def bconv2d_multi_threshold(xp, wp, cin, thresholds, direction, stride=1, padding=0) -> np.ndarray:
    """``multi_threshold(bconv2d(xp, wp, cin, stride, padding), thresholds, direction)`` in one pass
    (identical results; the binary middle's last layer into the multi-bit head): each row's
    accumulators become codes while in cache, the int32 map never exists whole."""
    xp, wp, cin, s, p, ho, wo = checks.bconv_args(xp, wp, cin, stride, padding)
    _, t, d = checks.multi_threshold_args(np.empty((0, 0, wp.shape[0]), np.int32), thresholds, direction)
    wt, wh, pk = _transpose_pad_w(wp)
    xq, xh = split_nibbles(_padded_columns(xp, p, s, wp.shape[2], wo))
    return _bconv_multi_threshold(xq, xh, wt, wh, pk, cin, t, d, s, p, xp.shape[1], ho, wo)


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
