"""Reference kernels of the integer-only runtime: readable numpy, one loop over kernel taps.

Layout: one image, channels last. Activations ``(H, W, C)``; weights ``(Cout, kh, kw, Cin)``; packed
tensors carry ``nwords = ceil(C / 64)`` uint64 words in place of C (``bitpack``). Every function here
has a numba twin of the same name and signature in ``ops_fast`` that must return identical arrays.

The style follows the TFLite/gemmlowp reference kernels and larq compute-engine: clarity over speed.
Each conv loops over the ``kh * kw`` taps; for a tap ``(ky, kx)`` the input rows/columns it reads for
all outputs at once are a strided slice of the padded input (``_tap``). Arithmetic is done in int64
and the result is cast to int32 only after ``checks.acc_bound`` proved it fits.
Quantization background: Jacob et al. CVPR 2018 (int8), Courbariaux et al. 2016 (binary),
Zhou et al. 2016 DoReFa-Net (bit planes), Zhou et al. ICLR 2017 INQ (power-of-two weights).
"""

from __future__ import annotations

import numpy as np

from seglearn.runtime import checks, fixedpoint
from seglearn.runtime.bitpack import pack_bits, popcount, unpack_bits
from seglearn.runtime.checks import INT32_MAX, INT32_MIN, KernelError
from seglearn.runtime.fold import fold_bn_sign_threshold, thresholds_from_monotone  # noqa: F401


def _pad(x: np.ndarray, p: int, fill=0) -> np.ndarray:
    return np.pad(x, [(p, p), (p, p)] + [(0, 0)] * (x.ndim - 2), constant_values=fill)


def _tap(xpad: np.ndarray, ky: int, kx: int, s: int, ho: int, wo: int) -> np.ndarray:
    """Input pixels that tap (ky, kx) reads for every output pixel: ``xpad[oy s + ky, ox s + kx]``."""
    return xpad[ky: ky + s * (ho - 1) + 1: s, kx: kx + s * (wo - 1) + 1: s]


def _valid(h: int, w: int, p: int) -> np.ndarray:
    """1 where the padded input is a real pixel, 0 in the padding (for kernels that need to know)."""
    return _pad(np.ones((h, w), dtype=np.int64), p, 0)


# --- int8 ------------------------------------------------------------------------------------------


def conv2d_int8(x, x_zp, w, bias=None, stride=1, padding=0) -> np.ndarray:
    """``acc[o] = bias[o] + sum_{taps, c} (x - x_zp) w[o]`` -> int32 ``(Ho, Wo, Cout)``.

    uint8 codes ``x`` with zero-point ``x_zp``; int8 symmetric weights (zero-point 0); int32 bias with
    scale ``S_x S_w``. Padding holds ``x_zp`` (real 0), i.e. ``x - x_zp = 0``: padded taps add nothing.
    Overflow: ``|acc| <= |bias| + max(x_zp, 255 - x_zp) sum|w_o| <= |bias| + 255 * 128 * K`` with
    ``K = Cin kh kw``; ``checks`` rejects layers where this exceeds int32 (K > ~65k).
    """
    x, zp, w, b, s, p, ho, wo = checks.conv_int8_args(x, x_zp, w, bias, stride, padding)
    xc = _pad(x.astype(np.int64) - zp, p, 0)
    acc = np.broadcast_to(b.astype(np.int64), (ho, wo, w.shape[0])).copy()
    for ky in range(w.shape[1]):
        for kx in range(w.shape[2]):
            acc += _tap(xc, ky, kx, s, ho, wo) @ w[:, ky, kx, :].T.astype(np.int64)
    return acc.astype(np.int32)


def requantize(acc, M0, shift, zp, lo=0, hi=255) -> np.ndarray:
    """int32 ``(..., C)`` -> uint8: ``clamp(zp + MultiplyByQuantizedMultiplier(acc, M0_c, shift_c))``."""
    acc = np.asarray(acc)
    if acc.dtype != np.int32 or acc.ndim < 1:
        raise KernelError(f"acc must be an int32 array (..., C), got {acc.dtype} {acc.shape}")
    m0, sh = checks.multiplier(M0, shift, acc.shape[-1], "requantize")
    zp = checks.zp_u8(zp, "zp")
    lo, hi = checks.clamp_u8(lo, hi)
    return fixedpoint.requantize(acc, m0, sh, zp, lo, hi).astype(np.uint8)


def conv2d_int8_requant(x, x_zp, w, bias, M0, shift, y_zp, lo=0, hi=255, stride=1, padding=0) -> np.ndarray:
    """``conv2d_int8`` then ``requantize`` per output channel -> uint8; fused ReLU is ``lo = y_zp``."""
    return requantize(conv2d_int8(x, x_zp, w, bias, stride, padding), M0, shift, y_zp, lo, hi)


def conv_transpose2x2_int8(x, x_zp, w, bias=None) -> np.ndarray:
    """Transposed conv, kernel 2, stride 2: ``out[2i+a, 2j+b, o] = bias[o] + sum_c (x[i,j,c] - x_zp) w[o,a,b,c]``.

    Weights ``(Cout, 2, 2, Cin)`` (torch's ``(Cin, Cout, 2, 2)`` transposed). Each output pixel has
    exactly one input pixel, so ``|acc| <= |bias| + 255 * 128 * Cin``.
    """
    x, zp, w, b, _, _, _, _ = checks.conv_int8_args(x, x_zp, w, bias, 1, 1)
    if w.shape[1:3] != (2, 2):
        raise KernelError(f"transposed conv weights must be (Cout, 2, 2, Cin), got {w.shape}")
    h, wd = x.shape[:2]
    xc = x.astype(np.int64) - zp
    out = np.empty((2 * h, 2 * wd, w.shape[0]), dtype=np.int64)
    for a in range(2):
        for bb in range(2):
            out[a::2, bb::2] = xc @ w[:, a, bb, :].T.astype(np.int64) + b
    return out.astype(np.int32)


def pow2_conv2d(x, x_zp, wsign, wshift, bias=None, stride=1, padding=0) -> np.ndarray:
    """INQ power-of-two weights as shift-and-add: ``acc = bias + sum sign (x - x_zp) << (e - e_min)``.

    ``w = sign 2^e`` with ``e >= e_min``; the integer weight is ``sign 2^(e - e_min)`` and the scale
    ``2^e_min S_x`` goes to the requantizer. ``wsign`` int8 in {-1, 0, 1}, ``wshift = e - e_min`` uint8.
    Overflow: ``|acc| <= |bias| + 255 sum_taps 2^wshift`` per channel, checked.
    """
    x, zp, wsign, wshift, b, s, p, ho, wo = checks.pow2_args(x, x_zp, wsign, wshift, bias, stride, padding)
    xc = _pad(x.astype(np.int64) - zp, p, 0)
    acc = np.broadcast_to(b.astype(np.int64), (ho, wo, wsign.shape[0])).copy()
    for ky in range(wsign.shape[1]):
        for kx in range(wsign.shape[2]):
            xt = _tap(xc, ky, kx, s, ho, wo)[:, :, None, :]  # (Ho, Wo, 1, Cin)
            shifted = xt << wshift[:, ky, kx, :].astype(np.int64)  # (Ho, Wo, Cout, Cin)
            acc += (shifted * wsign[:, ky, kx, :]).sum(axis=-1)
    return acc.astype(np.int32)


# --- binary (XNOR-popcount) -----------------------------------------------------------------------


def bconv2d(xp, wp, cin, stride=1, padding=0) -> np.ndarray:
    """Binary conv: ``acc = sum_{valid taps} (Cin - 2 popcount(x xor w))`` -> int32 ``(Ho, Wo, Cout)``.

    For +-1 vectors packed with 1 = +1: matching bits contribute +1, differing bits -1, so a tap's
    dot product is ``Cin - 2 popcount(x xor w)``. Taps in the zero padding contribute 0, as in a float
    conv with zero padding; channel-padding bits are 0 in both operands so their xor is 0.
    Overflow: ``|acc| <= Cin kh kw``.
    """
    xp, wp, cin, s, p, ho, wo = checks.bconv_args(xp, wp, cin, stride, padding)
    h, w = xp.shape[:2]
    xpad, valid = _pad(xp, p, 0), _valid(h, w, p)
    acc = np.zeros((ho, wo, wp.shape[0]), dtype=np.int64)
    for ky in range(wp.shape[1]):
        for kx in range(wp.shape[2]):
            xt = _tap(xpad, ky, kx, s, ho, wo)[:, :, None, :]  # (Ho, Wo, 1, nw)
            pc = popcount(xt ^ wp[:, ky, kx, :]).sum(axis=-1)  # (Ho, Wo, Cout)
            acc += _tap(valid, ky, kx, s, ho, wo)[:, :, None] * (cin - 2 * pc)
    return acc.astype(np.int32)


def threshold_pack(acc, tau, direction) -> np.ndarray:
    """int32 ``(H, W, C)`` -> packed bits ``(H, W, nwords(C))``: bit = ``acc >= tau`` (direction +1)
    or ``acc <= tau`` (direction -1); bit 1 = +1 for the next binary layer (``fold_bn_sign_threshold``)."""
    acc, tau, d = checks.threshold_args(acc, tau, direction)
    bits = np.where(d > 0, acc >= tau, acc <= tau)
    return pack_bits(bits.astype(np.uint8))


def bconv2d_threshold(xp, wp, cin, tau, direction, stride=1, padding=0) -> np.ndarray:
    """``bconv2d`` fused with BN + sign folded to thresholds -> packed uint64 ``(Ho, Wo, nwords(Cout))``."""
    return threshold_pack(bconv2d(xp, wp, cin, stride, padding), tau, direction)


# --- bit planes (DoReFa) ---------------------------------------------------------------------------


def _plane_dot(xplanes, wplane_set, coef, s, p, ho, wo):
    """``sum_b sum_m 2^b coef[m] popcount(c_b(x) and w_m)`` over the taps (zero padding is all-0 bits)."""
    _, cout, kh, kw, _ = wplane_set.shape
    acc = np.zeros((ho, wo, cout), dtype=np.int64)
    for b in range(xplanes.shape[0]):
        xpad = _pad(xplanes[b], p, 0)
        for m in range(wplane_set.shape[0]):
            for ky in range(kh):
                for kx in range(kw):
                    xt = _tap(xpad, ky, kx, s, ho, wo)[:, :, None, :]
                    acc += (coef[m] << b) * popcount(xt & wplane_set[m, :, ky, kx, :]).sum(axis=-1)
    return acc


def bitplane_conv2d(xplanes, wplanes, stride=1, padding=0) -> np.ndarray:
    """Unsigned k-bit codes x times unsigned m-bit codes u: ``x.u = sum_b sum_m 2^(b+m) popcount(c_b(x) and c_m(u))``.

    ``xplanes (k, H, W, nw)``, ``wplanes (m, Cout, kh, kw, nw)`` from ``bitpack.bitplanes``.
    Zero padding is code 0 (all planes 0). Overflow: ``|acc| <= (2^k - 1)(2^m - 1) K``, checked.
    """
    xplanes, wplanes, s, p, ho, wo = checks.planes_conv_args(
        xplanes, wplanes, stride, padding, lambda k, m: (2**k - 1) * (2**m - 1), "bit-plane conv")
    m = wplanes.shape[0]
    return _plane_dot(xplanes, wplanes, [1 << j for j in range(m)], s, p, ho, wo).astype(np.int32)


def _code_sum(xplanes, kh, kw, s, p, ho, wo):
    """``sum_{taps, c} x = sum_b 2^b popcount(c_b(x))`` over each output window -> (Ho, Wo, 1)."""
    acc = np.zeros((ho, wo), dtype=np.int64)
    for b in range(xplanes.shape[0]):
        xpad = _pad(popcount(xplanes[b]).sum(axis=-1), p, 0)
        for ky in range(kh):
            for kx in range(kw):
                acc += _tap(xpad, ky, kx, s, ho, wo) << b
    return acc[:, :, None]


def bitplane_conv2d_offset(xplanes, wplanes, stride=1, padding=0) -> np.ndarray:
    """Unsigned x times offset-signed m-bit weights ``w = 2u - (2^m - 1)`` (odd levels, e.g. DoReFa).

    Derivation: ``x.w = sum x_i (2 u_i - (2^m - 1)) = 2 x.u - (2^m - 1) sum_i x_i``, with ``x.u`` the
    bit-plane sum and ``sum_i x_i = sum_b 2^b popcount(c_b(x))`` (padding channels/pixels have x = 0,
    so the constant term sees only real inputs). Overflow: ``|acc| <= (2^k - 1)(2^m - 1) K``.
    """
    xplanes, wplanes, s, p, ho, wo = checks.planes_conv_args(  # 2 x.u is the largest intermediate
        xplanes, wplanes, stride, padding, lambda k, m: (2**k - 1) * 2 * (2**m - 1), "offset bit-plane conv")
    m = wplanes.shape[0]
    xu = _plane_dot(xplanes, wplanes, [1 << j for j in range(m)], s, p, ho, wo)
    sx = _code_sum(xplanes, wplanes.shape[2], wplanes.shape[3], s, p, ho, wo)
    return (2 * xu - (2**m - 1) * sx).astype(np.int32)


def ternary_conv2d(xplanes, wpos, wneg, stride=1, padding=0) -> np.ndarray:
    """Unsigned x times ternary weights {-1, 0, +1} as two masks: ``x.w = x.pos - x.neg``.

    ``wpos``/``wneg`` ``(Cout, kh, kw, nw)`` packed masks of w = +1 / w = -1 (disjoint);
    ``x.mask = sum_b 2^b popcount(c_b(x) and mask)``. Overflow: ``|acc| <= (2^k - 1) K``.
    """
    wpos, wneg = checks.ternary_args(wpos, wneg)
    wset = np.stack([wpos, wneg])
    xplanes, wset, s, p, ho, wo = checks.planes_conv_args(
        xplanes, wset, stride, padding, lambda k, _: 2**k - 1, "ternary conv")
    return _plane_dot(xplanes, wset, [1, -1], s, p, ho, wo).astype(np.int32)


# --- activations -----------------------------------------------------------------------------------


def multi_threshold(acc, thresholds, direction=None) -> np.ndarray:
    """int32 ``(H, W, C)`` -> uint8 codes ``#{j : acc > t[c, j]}`` (direction +1, the default) or
    ``#{j : acc < t[c, j]}`` (direction -1, a negative scale). Thresholds ``(C, L-1)`` ascending,
    ``L <= 256``. Any monotone quantizer of an affine function of acc is exactly such a step function
    (``fold.thresholds_from_monotone`` builds them)."""
    acc, t, d = checks.multi_threshold_args(acc, thresholds, direction)
    a = acc[..., None].astype(np.int64)
    up = (a > t).sum(axis=-1)
    down = (a < t).sum(axis=-1)
    return np.where(d > 0, up, down).astype(np.uint8)


def lut(codes, table) -> np.ndarray:
    """``table[codes]`` (table ``(L,)``) or per channel ``table[c, codes[..., c]]`` (table ``(C, L)``)."""
    codes, table = checks.lut_args(codes, table)
    if table.ndim == 1:
        return table[codes]
    return table[np.arange(codes.shape[2]), codes]


# --- pooling, resampling, merging ------------------------------------------------------------------


def maxpool2x2(x) -> np.ndarray:
    """2x2 stride-2 max pool of codes ``(H, W, C)`` -> ``(H//2, W//2, C)`` (odd edge dropped, as torch).
    Max of codes is max of reals because the affine map ``S (q - Z)`` has ``S > 0``."""
    x = checks.array(x, "x", 3, kinds="iu")
    h, w = x.shape[0] // 2 * 2, x.shape[1] // 2 * 2
    return np.maximum(np.maximum(x[0:h:2, 0:w:2], x[1:h:2, 0:w:2]), np.maximum(x[0:h:2, 1:w:2], x[1:h:2, 1:w:2]))


def maxpool2x2_packed(xp) -> np.ndarray:
    """2x2 stride-2 max pool of packed +-1 bits: the max of +-1 values is +1 iff any is +1, i.e. OR."""
    xp = checks.array(xp, "xp", 3, np.uint64)
    h, w = xp.shape[0] // 2 * 2, xp.shape[1] // 2 * 2
    return xp[0:h:2, 0:w:2] | xp[1:h:2, 0:w:2] | xp[0:h:2, 1:w:2] | xp[1:h:2, 1:w:2]


def upsample2x(x) -> np.ndarray:
    """Nearest-neighbour x2 upsample ``(H, W, C) -> (2H, 2W, C)``; works unchanged on packed words."""
    x = checks.array(x, "x", 3)
    return np.repeat(np.repeat(x, 2, axis=0), 2, axis=1)


def concat_requant(a, a_zp, a_M0, a_shift, b, b_zp, b_M0, b_shift, out_zp) -> np.ndarray:
    """Concatenate two uint8 tensors with scales (S_a, Z_a), (S_b, Z_b) into one (S, Z) along channels.

    ``q = Z + MBQM(q_a - Z_a, M_a)`` with ``M_a = S_a / S`` (likewise b), clamped to uint8.
    ``|q_a - Z_a| <= 255``; a left shift (``M >= 1``) saturates, so nothing wraps.
    """
    a, b = checks.merge_args(a, b, concat=True)
    out_zp = checks.zp_u8(out_zp, "out_zp")
    parts = []
    for t, zp, m0, sh in ((a, a_zp, a_M0, a_shift), (b, b_zp, b_M0, b_shift)):
        zp = checks.zp_u8(zp)
        m0, sh = checks.multiplier(m0, sh, 1, "concat")
        d = t.astype(np.int32) - np.int32(zp)
        parts.append(fixedpoint.requantize(d, m0[0], sh[0], out_zp, 0, 255))
    return np.concatenate(parts, axis=-1).astype(np.uint8)


def add_requant(a, a_zp, a_M0, a_shift, b, b_zp, b_M0, b_shift, out_M0, out_shift, out_zp,
                lo=0, hi=255, left_shift=20) -> np.ndarray:
    """Integer add of two affine uint8 tensors (TFLite ``Add``; multipliers from ``fixedpoint.add_multipliers``).

    ``d_a = MBQM((q_a - Z_a) << left_shift, M_a)``, likewise b; ``q = clamp(Z + MBQM(d_a + d_b, M_out))``.
    Bounds: ``|q - Z| <= 255 < 2^8``, shifted ``< 2^28``; ``M_a, M_b <= 1/2`` so ``|d_a + d_b| < 2^28``.
    """
    a, b = checks.merge_args(a, b, concat=False)
    ls = checks.int_param(left_shift, "left_shift", 0, 22)
    lo, hi = checks.clamp_u8(lo, hi)
    ds = []
    for t, zp, m0, sh in ((a, a_zp, a_M0, a_shift), (b, b_zp, b_M0, b_shift)):
        m0, sh = checks.multiplier(m0, sh, 1, "add input")
        d = (t.astype(np.int32) - np.int32(checks.zp_u8(zp))) << ls
        ds.append(fixedpoint.multiply_by_quantized_multiplier(d, m0[0], sh[0]).astype(np.int64))
    om0, osh = checks.multiplier(out_M0, out_shift, 1, "add output")
    total = (ds[0] + ds[1]).astype(np.int32)
    return fixedpoint.requantize(total, om0[0], osh[0], checks.zp_u8(out_zp, "out_zp"), lo, hi).astype(np.uint8)


def argmax_channels(x) -> np.ndarray:
    """Index of the largest channel per pixel ``(H, W, C) -> (H, W)`` int32; ties -> lowest index."""
    x = checks.array(x, "x", 3, kinds="iu")
    if x.shape[2] == 0:
        raise KernelError("argmax over zero channels")
    return np.argmax(x, axis=-1).astype(np.int32)


# ----------------------------------------------------------------------------- lookup-table convs

def conv_lut(codes, table, w, padding=0) -> np.ndarray:
    """``acc[o] = sum_{taps, c} table[c, codes[., ., c]] w[o, ky, kx, c]``, zero padding, stride 1.

    The general fallback of the exporter (INQ-7's ``conv_lut`` layers): any per-channel code ->
    int32 value table times int32 weights; ``checks.lut_conv_bound`` proves int32 holds the sum.
    """
    codes, table, w, p = checks.lut_conv_args(codes, table, w, padding)
    x = table[np.arange(codes.shape[2]), codes].astype(np.int64)
    x = np.pad(x, [(p, p), (p, p), (0, 0)])
    cout, kh, kw, _ = w.shape
    ho, wo = x.shape[0] - kh + 1, x.shape[1] - kw + 1
    acc = np.zeros((ho, wo, cout), np.int64)
    for ky in range(kh):
        for kx in range(kw):
            acc += x[ky:ky + ho, kx:kx + wo] @ w[:, ky, kx, :].T.astype(np.int64)
    return acc.astype(np.int32)


def convt_lut(codes, table, w) -> np.ndarray:
    """2x2 stride-2 transposed conv: ``out[2i+a, 2j+b, o] = sum_c table[c, codes[i, j, c]] w[o, a, b, c]``.

    Each output pixel reads exactly one input pixel, so this is four matrix products.
    """
    codes, table, w = checks.convt_lut_args(codes, table, w)
    x = table[np.arange(codes.shape[2]), codes].astype(np.int64)
    h, wd = x.shape[:2]
    out = np.empty((2 * h, 2 * wd, w.shape[0]), np.int64)
    for a in range(2):
        for b in range(2):
            out[a::2, b::2] = x @ w[:, a, b, :].T.astype(np.int64)
    return out.astype(np.int32)


# ----------------------------------------------------------------------------- requant, packed concat

def requant(acc, sign, bias, M0, shift, zp, lo=0, hi=255, in_shift=0) -> np.ndarray:
    """uint8 ``clamp(zp + MultiplyByQuantizedMultiplier(v, M0, shift), lo, hi)``, ``v = sign (acc << k) + bias``.

    Per channel ``sign``, ``bias``, ``M0``, ``shift``, ``k = in_shift`` (``export.requant`` derives
    them from ``y = A acc + B`` and the consumer's ``(S, Z)``: ``y / S = M v``). ``v`` is computed in
    int64 and saturated to int32; the lowering proves ``|acc| << k + |bias|`` fits, so it never bites.
    """
    acc, sign, bias, m0, sh, zp, lo, hi, k = checks.requant_args(acc, sign, bias, M0, shift, zp, lo, hi,
                                                                 in_shift)
    v = sign.astype(np.int64) * (acc.astype(np.int64) << k.astype(np.int64)) + bias
    v = np.clip(v, INT32_MIN, INT32_MAX)
    return fixedpoint.requantize(v.astype(np.int32), m0, sh, zp, lo, hi).astype(np.uint8)


def concat_packed(parts: list, channels: list) -> np.ndarray:
    """Channel concat of packed bits ``(H, W, nwords(c_i))``: word concat when every part but the
    last fills whole words (channel ``c`` is bit ``c % 64`` of word ``c // 64``), else unpack/repack.
    (Pure data movement: ``ops_fast`` uses this one too.)"""
    if len(parts) != len(channels):
        raise KernelError("concat_packed needs one channel count per input")
    for p, c in zip(parts, channels):
        if p.dtype != np.uint64 or p.ndim != 3 or p.shape[2] != -(-int(c) // 64):
            raise KernelError(f"concat_packed: {c} channels need (H, W, {-(-int(c) // 64)}) uint64, got {p.shape}")
    if all(int(c) % 64 == 0 for c in channels[:-1]):
        return np.ascontiguousarray(np.concatenate(parts, axis=-1))
    return pack_bits(np.concatenate([unpack_bits(p, int(c)) for p, c in zip(parts, channels)], axis=-1))
