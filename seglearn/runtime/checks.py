"""Input validation shared by the reference and fast kernels (numpy only).

Every kernel validates shapes, dtypes and the accumulator bound here before any arithmetic, so bad
input raises a ``KernelError`` (a ValueError) naming the problem instead of a numba typing error or a
silently wrapped int32.
"""

from __future__ import annotations

import numpy as np

# The one definition of the int32 range in seglearn (runtime, export and quant import it from here).
INT32_MAX = 2**31 - 1
INT32_MIN = -(2**31)


class KernelError(ValueError):
    """Bad input to a runtime kernel: wrong shape, dtype, value range, or an accumulator bound."""


def array(a, name: str, ndim: int, dtype=None, kinds: str | None = None) -> np.ndarray:
    """``a`` as a C-contiguous array with ``ndim`` axes and (optionally) exactly ``dtype``."""
    a = np.asarray(a)
    if a.ndim != ndim:
        raise KernelError(f"{name} must have {ndim} axes, got shape {a.shape}")
    if dtype is not None and a.dtype != np.dtype(dtype):
        raise KernelError(f"{name} must have dtype {np.dtype(dtype)}, got {a.dtype}")
    if kinds is not None and a.dtype.kind not in kinds:
        raise KernelError(f"{name} must be an integer array, got dtype {a.dtype}")
    return np.ascontiguousarray(a)


def int_param(v, name: str, lo: int, hi: int) -> int:
    """A Python int in ``[lo, hi]`` (zero-points, strides, clamp bounds...)."""
    try:
        iv = int(v)
    except (TypeError, ValueError):
        raise KernelError(f"{name} must be an integer, got {v!r}") from None
    if iv != v or not lo <= iv <= hi:
        raise KernelError(f"{name} must be an integer in [{lo}, {hi}], got {v!r}")
    return iv


def per_channel(v, name: str, c: int, dtype, default=None) -> np.ndarray:
    """A per-channel vector of length ``c`` (a scalar broadcasts; ``None`` gives ``default``)."""
    if v is None:
        v = default
    a = np.asarray(v)
    if a.dtype.kind not in "iub":
        raise KernelError(f"{name} must be integer-valued, got dtype {a.dtype}")
    if a.ndim == 0:
        a = np.full(c, a)
    if a.shape != (c,):
        raise KernelError(f"{name} must have shape ({c},), got {a.shape}")
    info = np.iinfo(dtype)
    if a.size and (a.min() < info.min or a.max() > info.max):
        raise KernelError(f"{name} does not fit {np.dtype(dtype)}")
    return np.ascontiguousarray(a.astype(dtype))


def conv_geometry(h: int, w: int, kh: int, kw: int, stride, padding) -> tuple[int, int, int, int]:
    """Validated ``(stride, padding, Ho, Wo)`` with ``Ho = (H + 2p - kh) // s + 1``."""
    s = int_param(stride, "stride", 1, 1 << 16)
    p = int_param(padding, "padding", 0, 1 << 16)
    ho = (h + 2 * p - kh) // s + 1
    wo = (w + 2 * p - kw) // s + 1
    if h + 2 * p < kh or w + 2 * p < kw:
        raise KernelError(f"kernel {kh}x{kw} larger than padded input {h + 2 * p}x{w + 2 * p}")
    return s, p, ho, wo


def acc_bound(bound, what: str) -> None:
    """Raise unless every per-channel worst-case ``|acc|`` fits int32 (the no-overflow proof)."""
    b = int(np.max(bound)) if np.size(bound) else 0
    if b > INT32_MAX:
        raise KernelError(f"{what}: worst-case |accumulator| {b} exceeds int32; split the layer")


def zp_u8(x_zp, name: str = "x_zp") -> int:
    return int_param(x_zp, name, 0, 255)


def max_abs_centered(x_zp: int) -> int:
    """Largest ``|x - x_zp|`` over uint8 codes: the input side of every int8 overflow bound."""
    return max(x_zp, 255 - x_zp)


def conv_int8_args(x, x_zp, w, bias, stride, padding, wdtype=np.int8):
    """Validate an int8 conv: uint8 (H, W, Cin), int8 (Cout, kh, kw, Cin), int32 bias (Cout,)."""
    x = array(x, "x", 3, np.uint8)
    w = array(w, "w", 4, wdtype)
    if w.shape[3] != x.shape[2]:
        raise KernelError(f"w has Cin={w.shape[3]} but x has {x.shape[2]} channels")
    zp = zp_u8(x_zp)
    b = per_channel(bias, "bias", w.shape[0], np.int32, default=0)
    s, p, ho, wo = conv_geometry(x.shape[0], x.shape[1], w.shape[1], w.shape[2], stride, padding)
    # |acc_o| <= |bias_o| + max|x - zp| * sum_taps |w_o|: int32 is safe when this bound fits.
    w_abs_sum = np.abs(w.astype(np.int64)).reshape(w.shape[0], -1).sum(axis=1)
    bound = np.abs(b.astype(np.int64)) + max_abs_centered(zp) * w_abs_sum
    acc_bound(bound, "int8 conv")
    return x, zp, w, b, s, p, ho, wo


def packed_args(xp, wp, name_x="xp", name_w="wp"):
    """Validate packed activations (H, W, nw) and packed weights (Cout, kh, kw, nw), both uint64."""
    xp = array(xp, name_x, 3, np.uint64)
    wp = array(wp, name_w, 4, np.uint64)
    if wp.shape[3] != xp.shape[2]:
        raise KernelError(f"{name_w} has {wp.shape[3]} words per tap but {name_x} has {xp.shape[2]}")
    return xp, wp


def planes_args(xplanes, wplanes):
    """Validate bit planes: x (kx, H, W, nw), w (mw, Cout, kh, kw, nw), both uint64."""
    xplanes = array(xplanes, "xplanes", 4, np.uint64)
    wplanes = array(wplanes, "wplanes", 5, np.uint64)
    if wplanes.shape[4] != xplanes.shape[3]:
        raise KernelError(f"wplanes has {wplanes.shape[4]} words per tap but xplanes has {xplanes.shape[3]}")
    if xplanes.shape[0] < 1 or wplanes.shape[0] < 1:
        raise KernelError("need at least one bit plane in xplanes and wplanes")
    return xplanes, wplanes


def multiplier(m0, shift, c: int, name: str):
    """Per-channel (M0, shift) from ``quantize_multipliers``: M0 int32 >= 0, shift in [-31, 30]."""
    m0 = per_channel(m0, f"{name} M0", c, np.int32)
    sh = per_channel(shift, f"{name} shift", c, np.int32)
    if m0.size and m0.min() < 0:
        raise KernelError(f"{name} M0 must be >= 0 (a Q31 mantissa of a positive multiplier)")
    if sh.size and (sh.min() < -31 or sh.max() > 30):
        raise KernelError(f"{name} shift must be in [-31, 30]")
    return m0, sh


def clamp_u8(lo, hi) -> tuple[int, int]:
    lo = int_param(lo, "lo", 0, 255)
    hi = int_param(hi, "hi", 0, 255)
    if lo > hi:
        raise KernelError(f"clamp range is empty: lo={lo} > hi={hi}")
    return lo, hi


def multi_threshold_args(acc, thresholds, direction):
    """Validate int32 acc (H, W, C), ascending int32 thresholds (C, L-1), L <= 256, direction +-1."""
    acc = array(acc, "acc", 3, np.int32)
    t = array(thresholds, "thresholds", 2, kinds="iu")
    if t.shape[0] != acc.shape[2] or not 1 <= t.shape[1] <= 255:
        raise KernelError(f"thresholds must be (C={acc.shape[2]}, L-1) with L <= 256, got {t.shape}")
    if t.size and (t.min() < INT32_MIN or t.max() > INT32_MAX):
        raise KernelError("thresholds must fit int32")
    if np.any(np.diff(t, axis=1) < 0):
        raise KernelError("thresholds must be ascending along each channel")
    d = per_channel(direction, "direction", acc.shape[2], np.int8, default=1)
    if d.size and not np.all(np.abs(d) == 1):
        raise KernelError("direction must be +1 or -1 per channel")
    return acc, t.astype(np.int32), d


def lut_args(codes, table):
    """Validate unsigned codes (H, W, C) and a table (L,) or (C, L) covering every code."""
    codes = array(codes, "codes", 3, kinds="u")
    table = np.ascontiguousarray(table)
    if table.ndim not in (1, 2) or (table.ndim == 2 and table.shape[0] != codes.shape[2]):
        raise KernelError(f"table must be (L,) or (C={codes.shape[2]}, L), got {table.shape}")
    if codes.size and codes.max() >= table.shape[-1]:
        raise KernelError(f"code {codes.max()} outside a table of {table.shape[-1]} entries")
    return codes, table


def merge_args(a, b, concat: bool):
    """Validate two uint8 tensors: same (H, W) for concat, same shape for add."""
    a = array(a, "a", 3, np.uint8)
    b = array(b, "b", 3, np.uint8)
    if (concat and a.shape[:2] != b.shape[:2]) or (not concat and a.shape != b.shape):
        raise KernelError(f"cannot {'concat' if concat else 'add'} shapes {a.shape} and {b.shape}")
    return a, b


def pow2_args(x, x_zp, wsign, wshift, bias, stride, padding):
    """Validate INQ weights: sign int8 in {-1, 0, 1}, shift uint8 <= 30, one shape (Cout, kh, kw, Cin)."""
    wsign = array(wsign, "wsign", 4, np.int8)
    wshift = array(wshift, "wshift", 4, np.uint8)
    if wsign.shape != wshift.shape:
        raise KernelError(f"wsign {wsign.shape} and wshift {wshift.shape} must have one shape")
    if wsign.size and np.abs(wsign.astype(np.int64)).max() > 1:
        raise KernelError("wsign must be in {-1, 0, 1}")
    if wshift.size and wshift.max() > 30:
        raise KernelError("wshift must be <= 30")
    w_int = wsign.astype(np.int64) << wshift.astype(np.int64)  # only for the overflow bound
    x, zp, _, b, s, p, ho, wo = conv_int8_args(x, x_zp, w_int, bias, stride, padding, wdtype=np.int64)
    return x, zp, wsign, wshift, b, s, p, ho, wo


def bconv_args(xp, wp, cin, stride, padding):
    """Validate a binary conv; |acc| <= Cin kh kw must fit int32."""
    xp, wp = packed_args(xp, wp)
    cin = int_param(cin, "cin", 1, 64 * xp.shape[2])
    if -(-cin // 64) != xp.shape[2]:
        raise KernelError(f"cin={cin} needs {-(-cin // 64)} words, packed input has {xp.shape[2]}")
    s, p, ho, wo = conv_geometry(xp.shape[0], xp.shape[1], wp.shape[1], wp.shape[2], stride, padding)
    acc_bound(cin * wp.shape[1] * wp.shape[2], "binary conv")
    return xp, wp, cin, s, p, ho, wo


def threshold_args(acc, tau, direction):
    """Validate int32 acc (H, W, C), int32 tau (C,), direction (C,) in {+1, -1}."""
    acc = array(acc, "acc", 3, np.int32)
    tau = per_channel(tau, "tau", acc.shape[2], np.int32)
    d = per_channel(direction, "direction", acc.shape[2], np.int8)
    if d.size and not np.all(np.abs(d) == 1):
        raise KernelError("direction must be +1 or -1 per channel")
    return acc, tau, d


def ternary_args(wpos, wneg):
    """Validate ternary weight masks: packed uint64 (Cout, kh, kw, nw), disjoint."""
    wpos = array(wpos, "wpos", 4, np.uint64)
    wneg = array(wneg, "wneg", 4, np.uint64)
    if wpos.shape != wneg.shape:
        raise KernelError(f"wpos {wpos.shape} and wneg {wneg.shape} must have one shape")
    if np.any(wpos & wneg):
        raise KernelError("wpos and wneg overlap: a weight cannot be both +1 and -1")
    return wpos, wneg


def ternary_codes_args(codes, bits, wpos, wneg, stride, padding):
    """Validate a ternary conv on its codes (the GEMM route of ``ops_fast.ternary_conv2d_codes``):
    integer codes (H, W, Cin) in [0, 2^bits), masks (Cout, kh, kw, nwords(Cin)); the accumulator
    bound is the reference's (``ops_ref.ternary_conv2d``, K with channel padding), so both refuse
    the same layers."""
    codes = array(codes, "codes", 3, kinds="iu")
    bits = int_param(bits, "bits", 1, 16)
    if codes.size and (int(codes.min()) < 0 or int(codes.max()) >= 2**bits):
        raise KernelError(f"codes must be in [0, 2^{bits}) for bits={bits}, "
                          f"got range [{codes.min()}, {codes.max()}]")
    wpos, wneg = ternary_args(wpos, wneg)
    if wpos.shape[3] != -(-codes.shape[2] // 64):
        raise KernelError(f"wpos has {wpos.shape[3]} words per tap but {codes.shape[2]} input channels "
                          f"need {-(-codes.shape[2] // 64)}")
    kh, kw = wpos.shape[1], wpos.shape[2]
    s, p, ho, wo = conv_geometry(codes.shape[0], codes.shape[1], kh, kw, stride, padding)
    acc_bound(64 * wpos.shape[3] * kh * kw * (2**bits - 1), "ternary conv")
    return codes, bits, wpos, wneg, s, p, ho, wo


def planes_conv_args(xplanes, wplanes, stride, padding, per_tap_max, what: str):
    """Validate a bit-plane conv; ``|acc| <= K per_tap_max(k, m)`` (k, m: plane counts; K with channel
    padding) must fit int32."""
    xplanes, wplanes = planes_args(xplanes, wplanes)
    per_tap_max = per_tap_max(xplanes.shape[0], wplanes.shape[0])
    h, w, kh, kw = xplanes.shape[1], xplanes.shape[2], wplanes.shape[2], wplanes.shape[3]
    s, p, ho, wo = conv_geometry(h, w, kh, kw, stride, padding)
    k = 64 * xplanes.shape[3] * wplanes.shape[2] * wplanes.shape[3]  # K including channel padding
    acc_bound(k * per_tap_max, what)
    return xplanes, wplanes, s, p, ho, wo


# --- exact integer GEMM on float BLAS (ops_gemm) ---------------------------------------------------

F32_EXACT = 2**24  # every integer |v| <= 2^24 is a float32 (24-bit significand)
F64_EXACT = 2**53  # every integer |v| <= 2^53 is a float64
MIN_F32_CHUNK = 64  # mean K-chunk length below which one float64 product beats many float32 ones


def gemm_plan(a_max: int, w_abs, what: str) -> tuple[type, list[tuple[int, int]]]:
    """Float dtype and K-chunks ``[(k0, k1), ...]`` that make ``A @ W`` exact on float BLAS.

    ``A`` (M, K): integers with ``|a| <= a_max``; ``w_abs`` (K, N): ``|W|`` as integers.

    Proof. Within a chunk, every value that sgemm/dgemm forms for an output ``(m, n)`` -- a product,
    an FMA, a partial sum in whatever order or register blocking the library uses -- is the exact sum
    of a subset of the chunk's products ``a_mk w_kn`` (a classical GEMM, as OpenBLAS is: no Strassen
    or Winograd cancellation). Its magnitude is at most ``a_max * sum_{k in chunk} |w_kn|``. When
    that is <= 2^24 (float32) or 2^53 (float64), each intermediate is an integer the format holds
    exactly, so no rounding ever happens and the chunk's result is the exact integer sum. The chunks
    are then added in int32, exact because the whole sum fits int32 (checked here too, the bound of
    ``acc_bound``). Chunks are cut greedily along K; float32 is used when every chunk is at least
    one row and they average >= ``MIN_F32_CHUNK`` rows (else one float64 product, half the rate
    but no chunk overhead).
    """
    w_abs = np.asarray(w_abs, dtype=np.int64)
    k = w_abs.shape[0]
    colsum = w_abs.sum(axis=0)
    total = int(a_max) * int(colsum.max()) if w_abs.size else 0
    acc_bound(total, what)
    if total <= F32_EXACT:
        return np.float32, [(0, k)]
    if total > F64_EXACT:  # unreachable while the int32 bound holds; kept as the proof's guard
        raise KernelError(f"{what}: worst-case |partial sum| {total} exceeds 2^53")
    max_chunks = k // MIN_F32_CHUNK
    if -(-total // F32_EXACT) > max_chunks:  # each chunk holds <= 2^24 of the largest column's sum
        return np.float64, [(0, k)]
    cum = np.vstack([np.zeros((1, w_abs.shape[1]), np.int64), np.cumsum(w_abs, axis=0)])
    chunks, k0 = [], 0
    while k0 < k and len(chunks) < max_chunks:
        fits = (cum[k0 + 1:] - cum[k0]).max(axis=1) * int(a_max) <= F32_EXACT  # prefix sums: monotone
        n = int(np.argmin(fits)) if not fits.all() else k - k0  # rows in the longest exact chunk
        if n == 0:
            break  # one row alone overflows float32's exact range
        chunks.append((k0, k0 + n))
        k0 += n
    if k0 == k:
        return np.float32, chunks
    return np.float64, [(0, k)]


def gemm_split_plan(a_max: int, w_abs, what: str) -> tuple[type, list[tuple[int, int]], int]:
    """``gemm_plan`` that may first split the weights in two: ``(dtype, chunks, d)``.

    ``d = 0``: no split, ``(dtype, chunks)`` of ``gemm_plan(a_max, w_abs)``. ``d > 0``: the GEMM runs
    on ``[W_lo | W_hi]`` (K, 2N) in float32 with
    ``W_lo = sign(W) (|W| mod 2^d)`` and ``W_hi = sign(W) (|W| >> d)``, and
    ``A W = A W_lo + 2^d (A W_hi)``; ``chunks`` is ``gemm_plan``'s for the concatenated ``|.|``.

    Why: large weights (INQ-7's sign * 2^shift with shift <= 15, lut convs' int32 weights) make
    even one float32 row inexact (255 * 2^15 > 2^24), and the float64 GEMM is 2.3-3x slower than
    float32 at equal N and needs twice the im2col bytes, while float32 at 2N columns costs
    1.4-1.9x (measured: OpenBLAS 0.3.31, one thread, M 2048, K 288-3456, N 32-128).

    Proof of exactness. ``|W_lo| + 2^d |W_hi| = |W|`` entrywise, both parts are integers and
    ``|W_lo|, |W_hi| <= max|W|``. (1) Each part's K-chunk products are exact by ``gemm_plan``'s proof
    (it is called on ``[|W_lo| | |W_hi|]``, so every column of both parts obeys the 2^24 bound).
    (2) A chunk result ``r`` of the hi part satisfies ``2^d |r| <= a_max sum_k 2^d |W_hi|`` and
    every partial sum of ``lo + 2^d hi`` over chunks is at most ``a_max sum_k |W|``: the bound the
    int32 check below proves (``acc_bound``), so the int32 shift and adds never wrap. Used when the
    unsplit plan is float64 and the split one is float32 (``d`` = half the bit length of max|W|).
    """
    w_abs = np.asarray(w_abs, dtype=np.int64)
    dtype, chunks = gemm_plan(a_max, w_abs, what)
    if dtype is np.float32 or not w_abs.size:
        return dtype, chunks, 0
    d = (int(w_abs.max()).bit_length() + 1) // 2
    halves = np.hstack([w_abs & ((1 << d) - 1), w_abs >> d])
    dtype2, chunks2 = gemm_plan(a_max, halves, what)
    if dtype2 is np.float32:
        return dtype2, chunks2, d
    return dtype, chunks, 0


def split_weights(w: np.ndarray, d: int) -> np.ndarray:
    """(K, N) integers -> (K, 2N) ``[sign (|w| mod 2^d) | sign (|w| >> d)]`` (``gemm_split_plan``)."""
    w = np.asarray(w, dtype=np.int64)
    sign, mag = np.sign(w), np.abs(w)
    return np.hstack([sign * (mag & ((1 << d) - 1)), sign * (mag >> d)])


# ----------------------------------------------------------------------------- lookup-table convs, requant

def lut_conv_bound(table: np.ndarray, w: np.ndarray) -> int:
    """Worst case ``|acc|`` of ``conv_lut``: ``max|table| * max_o sum|w_o|`` (the no-overflow proof)."""
    if table.size == 0 or w.size == 0:
        return 0
    return int(np.abs(table.astype(np.int64)).max()) * int(
        np.abs(w.astype(np.int64)).reshape(w.shape[0], -1).sum(1).max())


def lut_conv_args(codes, table, w, padding):
    """Validate a lookup-table conv: uint8 codes (H, W, C), int32 table (C, L) covering every code,
    int32 weights (Cout, kh, kw, C) whose worst-case accumulator fits int32."""
    codes = np.ascontiguousarray(codes)
    table = np.ascontiguousarray(table, dtype=np.int32)
    w = np.ascontiguousarray(w, dtype=np.int32)
    if codes.ndim != 3 or codes.dtype != np.uint8:
        raise KernelError(f"conv_lut needs uint8 codes (H, W, C), got {codes.dtype} {codes.shape}")
    if table.ndim != 2 or table.shape[0] != codes.shape[2] or w.ndim != 4 or w.shape[3] != codes.shape[2]:
        raise KernelError(f"conv_lut shapes disagree: codes {codes.shape}, table {table.shape}, w {w.shape}")
    if codes.size and int(codes.max()) >= table.shape[1]:
        raise KernelError(f"code {int(codes.max())} outside a table of {table.shape[1]} entries")
    if lut_conv_bound(table, w) > INT32_MAX:
        raise KernelError("conv_lut: worst-case |accumulator| exceeds int32")
    return codes, table, w, int(padding)


def convt_lut_args(codes, table, w):
    """:func:`lut_conv_args` for the 2x2 stride-2 transposed lut conv (weights (Cout, 2, 2, C))."""
    codes, table, w, _ = lut_conv_args(codes, table, w, 0)
    if w.shape[1:3] != (2, 2):
        raise KernelError(f"convt_lut weights must be (Cout, 2, 2, Cin), got {w.shape}")
    return codes, table, w


def requant_args(acc, sign, bias, M0, shift, zp, lo, hi, in_shift):
    """Validate ``requant``: int32 (H, W, C) accumulators and per-channel sign (+-1), int32 bias,
    in_shift in [0, 31], gemmlowp multipliers; uint8 zero point and clamp bounds."""
    acc = np.asarray(acc)
    if acc.dtype != np.int32 or acc.ndim != 3:
        raise KernelError(f"requant needs int32 accumulators (H, W, C), got {acc.dtype} {acc.shape}")
    c = acc.shape[2]
    sign = per_channel(sign, "sign", c, np.int8)
    bias = per_channel(bias, "bias", c, np.int32)
    k = per_channel(in_shift, "in_shift", c, np.int8)
    if sign.size and not np.all(np.abs(sign) == 1):
        raise KernelError("requant sign must be +1 or -1 per channel")
    if k.size and (k.min() < 0 or k.max() > 31):
        raise KernelError("requant in_shift must be in [0, 31]")
    m0, sh = multiplier(M0, shift, c, "requant")
    zp = zp_u8(zp, "zp")
    lo, hi = clamp_u8(lo, hi)
    return acc, sign, bias, m0, sh, zp, lo, hi, k
