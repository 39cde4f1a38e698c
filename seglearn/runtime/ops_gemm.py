"""Exact integer convolutions on float BLAS: im2col tiles x ``numpy.matmul`` (sgemm; dgemm as a fallback).

A convolution is ``acc[m, n] = bias[n] + sum_k a[m, k] w[k, n]``: ``m`` an output pixel, ``k`` a
(tap, input channel) pair (``K = kh kw Cin``), ``a`` the im2col matrix of the integer activations
and ``w`` the integer weights. Every integer conv of the runtime reduces to it:

=================  ============================================  ================================
op                 activation value a                            weight w
=================  ============================================  ================================
conv_int8          code - zp  (``|a| <= max(zp, 255 - zp)``)      int8
conv_pow2 (INQ)    code - zp                                      sign * 2^shift
conv_lut           table[c, code]  (``|a| <= max|table|``)        int32
conv_ternary       code  (``0 <= a <= 2^bits - 1``)               {-1, 0, 1} (pos mask - neg mask)
convt_* (2x2, s2)  as above, a 1x1 conv with N = 4 Cout           as above
=================  ============================================  ================================

Exactness: ``checks.gemm_split_plan`` picks float32 with K split into chunks whose worst-case
partial sums stay <= 2^24 (proof in ``checks.gemm_plan``); where one float32 row would already be
inexact (INQ-7's 2^15 weights) it splits the weights into two halves of their bits, run as one
float32 GEMM of 2N columns and recombined as ``lo + (hi << d)`` in int32 (proof in
``checks.gemm_split_plan``); float64 only where neither fits. Chunk results are converted to int32
exactly and added in int32 under the int32 accumulator bound that the callers' checks prove (the
same checks the reference kernels run, at load time too). So results equal ``ops_ref`` bit for bit.

Why BLAS: OpenBLAS sgemm runs near the FMA peak, the numba loop kernels this replaces ran at a
small fraction of it (measured in ``bench/runtime.py``). The input is im2col-ed one tile of output
rows at a time (``TILE_BYTES``, ``MIN_TILE_M``): uint8 codes straight from the codes (centred and
zero-padded in ``_im2col_codes``: padding holds zp, ``a = 0``), table values from one padded float
copy of ``table[c, code]`` (``H W Cin``, not ``H W K``).
"""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from numba import njit, prange

from seglearn.runtime import checks, ops_vnni, weight_cache
from seglearn.runtime.bitpack import unpack_bits

# im2col tile: a few MB (1-4 MB measured fastest, the GEMM re-reads the tile from cache), but never
# fewer than MIN_TILE_M pixels: OpenBLAS is slow on short products (dgemm K=3456 N=128 at
# 1 GFLOP/s for M = 128 rows vs 30-40 for M >= 1024).
TILE_BYTES = 1 << 22
MIN_TILE_M = 2048

_pool: ThreadPoolExecutor | None = None
_blas = None  # threadpoolctl.ThreadpoolController, or False where threadpoolctl is not installed


def _workers() -> int:
    """Tile workers: numba's thread count (what ``numba.set_num_threads`` / NUMBA_NUM_THREADS set)."""
    global _pool
    n = numba.get_num_threads()
    if _pool is None or _pool._max_workers != n:
        _pool = ThreadPoolExecutor(n, thread_name_prefix="seglearn-gemm")
    return n


def _single_threaded_blas():
    """A context in which BLAS runs one thread per caller (threadpoolctl), or None without it.

    Why: tiles run in parallel on Python threads, each calling a one-thread sgemm. With OpenBLAS's
    own threads instead, every product ends in a barrier, and on a shared (oversubscribed) machine
    the waits dominate: a 512^2 96->32 int8 conv measured 2.2-4.3 s that way vs 0.26 s tiled on
    two Python threads (0.28 s on one thread). Without threadpoolctl the tiles run one after the
    other and BLAS threads itself.
    """
    global _blas
    if _blas is None:
        try:
            from threadpoolctl import ThreadpoolController  # lazy: optional, not a dependency

            _blas = ThreadpoolController()
        except ImportError:  # pragma: no cover - threadpoolctl is optional
            _blas = False
    return _blas.limit(limits=1, user_api="blas") if _blas else None


@njit(nogil=True, cache=True)
def _im2col(xf, oy0, rows, wo, s, kh, kw, out):
    """``out[r wo + ox, (ky kw + kx) C + c] = xf[(oy0 + r) s + ky, ox s + kx, c]`` (xf pre-padded).

    Serial and ``nogil``: it runs inside the tile workers, concurrently."""
    cin = xf.shape[2]
    for r in range(rows):
        iy0 = (oy0 + r) * s
        for ox in range(wo):
            m = r * wo + ox
            ix0 = ox * s
            for ky in range(kh):
                for kx in range(kw):
                    base = (ky * kw + kx) * cin
                    for c in range(cin):
                        out[m, base + c] = xf[iy0 + ky, ix0 + kx, c]


@njit(nogil=True, cache=True)
def _im2col_codes(x, zp, p, oy0, rows, wo, s, kh, kw, out):
    """``out[r wo + ox, (ky kw + kx) C + c] = x[iy, ix, c] - zp`` with ``iy = (oy0 + r) s + ky - p``,
    ``ix = ox s + kx - p``, and 0 where that is outside ``x`` (the padding holds zp: ``a = 0``).

    The uint8 codes are centred and converted here, one tile at a time, so the conv never makes a
    padded float copy of its whole input (4 bytes per input value, 100 MB at 512^2 x 96): measured
    7-15% less CPU time than im2col from that copy (512^2 96->32 3x3 int8: 222 vs 261 ms, one thread)."""
    h, w, cin = x.shape
    for r in range(rows):
        iy0 = (oy0 + r) * s - p
        for ox in range(wo):
            m = r * wo + ox
            ix0 = ox * s - p
            for ky in range(kh):
                iy = iy0 + ky
                for kx in range(kw):
                    ix = ix0 + kx
                    base = (ky * kw + kx) * cin
                    if 0 <= iy < h and 0 <= ix < w:
                        for c in range(cin):
                            out[m, base + c] = np.int32(x[iy, ix, c]) - zp
                    else:
                        for c in range(cin):
                            out[m, base + c] = 0


@njit(nogil=True, cache=True)
def _store(r, d, bias, out, add):  # pragma: no cover - numba
    """``out (+)= int32(r) + bias``, or with ``d > 0`` ``int32(r_lo) + (int32(r_hi) << d) + bias`` for
    ``r = [r_lo | r_hi]`` (M, 2N): one pass from the GEMM's float result into the output rows.

    Exact: ``r`` holds exact integers (``checks.gemm_plan``), every partial result is bounded by the
    int32 accumulator bound the callers prove (``checks.gemm_split_plan``); it is formed in int64
    here and stored as int32, the same integers numpy's int32 ``astype``, shift and adds gave.
    Why one kernel: the former ``astype``, recombination, copy into the output and bias pass each
    read and wrote the whole tile (4 passes over a 32 MB int32 output at 512^2 x 32)."""
    m, n = out.shape
    for i in range(m):
        if d == 0:
            for j in range(n):
                v = np.int64(r[i, j])
                out[i, j] = (out[i, j] + v) if add else (v + bias[j])
        else:
            for j in range(n):
                v = np.int64(r[i, j]) + (np.int64(r[i, j + n]) << d)
                out[i, j] = (out[i, j] + v) if add else (v + bias[j])


def _gemm_tile(a, wm, chunks, split, bias, out2d) -> None:
    """Exact ``a @ W + bias`` into the int32 rows ``out2d``: one product per K-chunk, each stored
    or added exactly by ``_store``; with ``split = d > 0`` ``wm`` is ``[W_lo | W_hi]``."""
    for i, (k0, k1) in enumerate(chunks):
        r = a @ wm if len(chunks) == 1 else a[:, k0:k1] @ wm[k0:k1]
        _store(r, split, bias, out2d, i > 0)


def gemm_conv(xf, wm, chunks, kh, kw, s, ho, wo, bias=None, split=0, zp=0, p=0, epilogue=None) -> np.ndarray:
    """int32 (ho, wo, N) conv of the zero-padded float values ``xf`` (Hp, Wp, C) with ``wm`` (K, N),
    or (K, 2N) halves ``[W_lo | W_hi]`` when ``split = d > 0`` (``checks.gemm_split_plan``).

    ``xf`` may instead be the uint8 codes themselves (H, W, C): then the values are ``code - zp``,
    padded by ``p`` with zeros, made tile by tile in ``wm``'s dtype (``_im2col_codes``).
    ``wm`` rows are ordered (ky, kx, c) and hold exact integers of the float dtype; ``chunks`` comes
    from ``checks.gemm_split_plan``. Output rows are cut into tiles, run on ``_workers()`` threads; a
    1x1 stride-1 conv without padding skips im2col (the input rows are the matrix).

    ``epilogue = (fn, args, channels, dtype)``: the result is instead ``(ho, wo, channels)`` of
    ``dtype``, ``fn(acc_rows, out_rows, *args)`` of each tile's int32 rows, run in the tile's worker
    (a conv fused with its requant or threshold): the int32 map is never written whole (32 MB at
    512^2 x 32) and the epilogue runs in the tile workers. ``(fn, args, channels, dtype, k)``: ``k``
    results at once, ``(k, ho, wo, channels)``, ``out_rows`` then ``(k, rows, channels)`` (a conv
    read by several requants: ``epilogue_out``).
    """
    codes = xf.dtype == np.uint8
    dtype = wm.dtype
    cin, n = xf.shape[2], wm.shape[1] // (2 if split else 1)
    k = kh * kw * cin
    out = epilogue_out(epilogue, ho, wo, n)
    b = np.zeros(n, np.int64) if bias is None else np.asarray(bias, np.int64)
    direct = kh == kw == 1 and s == 1 and (p == 0 or not codes)  # wo == Wp: rows are pixel runs
    rows = max(TILE_BYTES // max(1, wo * k * dtype.itemsize), -(-MIN_TILE_M // wo), 1)

    def tile(oy0, r):
        if direct and codes:
            a = np.empty((r * wo, cin), dtype)
            np.subtract(xf[oy0:oy0 + r].reshape(r * wo, cin), dtype.type(zp), out=a, casting="unsafe")
        elif direct:
            a = xf[oy0:oy0 + r].reshape(r * wo, cin)
        else:
            a = np.empty((r * wo, k), dtype)
            if codes:
                _im2col_codes(xf, zp, p, oy0, r, wo, s, kh, kw, a)
            else:
                _im2col(xf, oy0, r, wo, s, kh, kw, a)
        rows_out = tile_rows(out, oy0, r)
        if epilogue is None:
            _gemm_tile(a, wm, chunks, split, b, rows_out)
        else:
            acc = np.empty((r * wo, n), np.int32)
            _gemm_tile(a, wm, chunks, split, b, acc)
            epilogue[0](acc, rows_out, *epilogue[1])

    run_row_tiles(tile, ho, rows, blas=True)
    return out


def epilogue_out(epilogue, ho: int, wo: int, n: int) -> np.ndarray:
    """The result array of a conv with ``n`` outputs and ``epilogue`` (see ``gemm_conv``): int32
    (ho, wo, n) without one, (ho, wo, channels) of its dtype, or (k, ho, wo, channels) for k results."""
    if epilogue is None:
        return np.empty((ho, wo, n), np.int32)
    shape = (ho, wo, epilogue[2])
    return np.empty(shape if len(epilogue) == 4 else (epilogue[4],) + shape, epilogue[3])


def tile_rows(out: np.ndarray, oy0: int, r: int) -> np.ndarray:
    """Output rows ``oy0 .. oy0 + r`` of ``epilogue_out``'s array as (r wo, C), or (k, r wo, C): views,
    since a tile's rows are contiguous in every one of the k results."""
    if out.ndim == 3:
        return out[oy0:oy0 + r].reshape(r * out.shape[1], out.shape[2])
    return out[:, oy0:oy0 + r].reshape(out.shape[0], r * out.shape[2], out.shape[3])


def run_row_tiles(tile, ho: int, rows: int, blas: bool = False) -> None:
    """``tile(oy0, r)`` for the tiles of ``r <= rows`` output rows covering ``0 .. ho``, at least
    one tile per worker (``_workers``), on the worker threads when there are several of both.
    ``blas``: the tiles call BLAS, which then runs one thread per tile (``_single_threaded_blas``;
    without threadpoolctl the tiles run one after the other and BLAS threads itself)."""
    nworkers = _workers()
    rows = max(1, min(rows, -(-ho // nworkers)))
    starts = range(0, ho, rows)
    parallel = nworkers > 1 and len(starts) > 1
    ctx = _single_threaded_blas() if parallel and blas else None
    if not parallel or (blas and ctx is None):
        for oy0 in starts:
            tile(oy0, min(rows, ho - oy0))
        return
    with ctx if ctx is not None else contextlib.nullcontext():
        # list(): re-raises a worker's exception here
        list(_pool.map(lambda oy0: tile(oy0, min(rows, ho - oy0)), starts))


def _weights(w_int, a_max, what):
    """(Cout, kh, kw, Cin) integer weights -> (plan dtype, chunks, split d, GEMM matrix in that dtype):
    (K, Cout), or (K, 2 Cout) halves when ``d > 0`` (``checks.gemm_split_plan``). Made once per
    layer of a loaded model (``weight_cache``)."""
    def build():
        cout = w_int.shape[0]
        w64 = np.asarray(w_int, np.int64).transpose(1, 2, 3, 0).reshape(-1, cout)  # rows (ky, kx, c)
        dtype, chunks, d = checks.gemm_split_plan(a_max, np.abs(w64), what)
        wm = checks.split_weights(w64, d) if d else w64
        return dtype, tuple(chunks), d, np.ascontiguousarray(wm.astype(dtype))

    return weight_cache.cached((w_int,), ("gemm", int(a_max), what), build)


# A conv with at most DIRECT_MAX_N outputs (the logit layer, 32 -> 1) runs as a direct loop
# (``_direct_small_n``) instead of a GEMM: with N = 1 the GEMM is a matrix-vector product whose im2col
# matrix (9x the input, 300 MB of float32 at 512^2 x 32) costs more than the arithmetic; measured
# 39.6 ms (GEMM) vs 14.5 + 6.6 ms (direct + padded copy) for 512^2 32 -> 1 on one thread, when the
# loop still summed int64 products of an int32 copy of the input (now: int32 sums of the codes).
DIRECT_MAX_N = 4


@njit(parallel=True, cache=True)
def _direct_small_n(xv, zp, w, s, ho, wo, bias, out):  # pragma: no cover - numba
    """``out[oy, ox, o] = bias[o] + sum_{ky, kx, c} (xv[oy s + ky, ox s + kx, c] - zp) w[o, ky, kx, c]``
    on the padded input ``xv`` (uint8 codes padded with ``zp``, or int32 values padded with 0 and
    ``zp = 0``). The sums are int32: each partial sum is a sum over a subset of the terms, so
    ``|partial| <= max|x - zp| sum |w_o| < 2^31`` (``_direct_weights`` checks that bound), whatever
    order the vectorised reduction takes; the bias is added in int64 (the callers' accumulator
    bound, bias included, makes the result fit int32). One output row at a time, tap by tap: the
    channel loop is innermost and contiguous in both arrays, so LLVM vectorises it (int32 lanes).
    Measured at 512^2 x 32 against int64 sums of an int32 copy: 5.9 vs 7.5 ms (1x1 -> 1), 32 vs 40
    ms (3x3 -> 2), and the copy itself is gone."""
    n, kh, kw, cin = w.shape
    z = np.int32(zp)
    for oy in prange(ho):
        acc = np.zeros((wo, n), np.int32)
        for ky in range(kh):
            for kx in range(kw):
                for ox in range(wo):
                    for o in range(n):
                        a = np.int32(0)
                        for c in range(cin):
                            a += (np.int32(xv[oy * s + ky, ox * s + kx, c]) - z) * w[o, ky, kx, c]
                        acc[ox, o] += a
        for ox in range(wo):
            for o in range(n):
                out[oy, ox, o] = np.int64(acc[ox, o]) + bias[o]


def _direct_weights(w_int, a_max, what):
    """The (Cout, kh, kw, Cin) weights as contiguous int32 for ``_direct_small_n``, after the int32
    accumulator bound ``a_max * max_o sum |w_o|`` (``checks.acc_bound``; the callers prove it too)."""
    def build():
        w64 = np.asarray(w_int, np.int64)
        checks.acc_bound(int(a_max) * np.abs(w64).reshape(w64.shape[0], -1).sum(axis=1), what)
        return np.ascontiguousarray(w64, dtype=np.int32)  # |w| <= the bound: fits

    return weight_cache.cached((w_int,), ("direct", int(a_max), what), build)


def _conv(x, w_int, a_max, s, ho, wo, bias, what, zp=0, p=0, epilogue=None) -> np.ndarray:
    """Run the conv on ``x``: uint8 codes (centred on ``zp``, padded by ``p`` tile by tile) or
    ``x(dtype)``, a function giving the padded values; a GEMM (``gemm_conv``, with its optional
    ``epilogue``) or, for at most ``DIRECT_MAX_N`` outputs, the direct loop."""
    if w_int.shape[0] <= DIRECT_MAX_N:
        wd = _direct_weights(w_int, a_max, what)
        if isinstance(x, np.ndarray):  # codes, padded with the zero point (1 byte a value)
            xv = x if p == 0 else np.pad(x, ((p, p), (p, p), (0, 0)), constant_values=zp)
        else:
            xv, zp = x(np.int32), 0
        out = np.empty((ho, wo, w_int.shape[0]), np.int32)
        b = np.zeros(w_int.shape[0], np.int64) if bias is None else np.asarray(bias, np.int64)
        _direct_small_n(xv, zp, wd, s, ho, wo, b, out)
        if epilogue is None:
            return out
        res = epilogue_out(epilogue, ho, wo, w_int.shape[0])
        epilogue[0](out.reshape(-1, out.shape[2]), tile_rows(res, 0, ho), *epilogue[1])
        return res
    if isinstance(x, np.ndarray) and x.dtype == np.uint8 and ops_vnni.available():
        prep = ops_vnni.vnni_weights(w_int, zp, bias)
        if prep is not None:  # int8-range weights on an AVX-512 VNNI target: vpdpbusd on the codes
            return ops_vnni.conv(x, zp, prep, w_int.shape[1], w_int.shape[2], s, p, ho, wo,
                                 epilogue)
    dtype, chunks, d, wm = _weights(w_int, a_max, what)
    xf = x if isinstance(x, np.ndarray) else x(dtype)
    return gemm_conv(xf, wm, chunks, w_int.shape[1], w_int.shape[2], s, ho, wo, bias, d, zp, p, epilogue)


@njit(parallel=True, cache=True)
def _pad_centered(x, zp, p, out):  # pragma: no cover - numba
    h, w, c = x.shape
    for y in prange(h):
        for i in range(w):
            for j in range(c):
                out[y + p, i + p, j] = np.int64(x[y, i, j]) - zp


def _centered(x, zp, p, dtype):
    """Integer codes -> ``x - zp`` in ``dtype``, zero-padded by ``p`` (padding holds zp: adds nothing)."""
    xf = np.zeros((x.shape[0] + 2 * p, x.shape[1] + 2 * p, x.shape[2]), dtype)
    _pad_centered(x, np.int64(zp), p, xf)
    return xf


def conv_affine(x, zp, w_int, bias, s, p, ho, wo, what, epilogue=None) -> np.ndarray:
    """``bias + sum (x - zp) w`` for validated uint8 ``x`` and integer ``w`` (int8, or sign 2^shift)."""
    return _conv(x, w_int, checks.max_abs_centered(zp), s, ho, wo, bias, what, zp, p, epilogue)


def conv_ternary(codes, bits, wpos, wneg, cin, s, p, ho, wo, epilogue=None) -> np.ndarray:
    """``sum code * (pos - neg)`` for arguments validated by ``checks.ternary_codes_args``.

    The masks are unpacked to {-1, 0, 1} weights of the ``cin`` real channels (bits past ``cin``
    meet zero-bit planes in the reference, so they add nothing there either); the codes are the
    activations as they are (``a = code``, zero padding is code 0), ``|a| <= 2^bits - 1``.
    """
    w = weight_cache.cached((wpos, wneg), ("ternary", cin), lambda: unpack_bits(wpos, cin).astype(np.int64)
                            - unpack_bits(wneg, cin).astype(np.int64))
    x = codes if codes.dtype == np.uint8 else (lambda dt: _centered(codes, 0, p, dt))  # > 8 bits: wider codes
    return _conv(x, w, 2**bits - 1, s, ho, wo, None, "ternary conv", 0, p, epilogue)


def conv_transpose2x2_affine(x, zp, w_int, bias) -> np.ndarray:
    """2x2 stride-2 transposed conv ``out[2i+a, 2j+b, o] = bias[o] + sum_c (x[i, j, c] - zp) w[o, a, b, c]``."""
    return _convt(lambda dt: _centered(x, zp, 0, dt), w_int, checks.max_abs_centered(zp), bias, "transposed conv")


def _convt(values, w_int, a_max, bias, what):
    """Each output pixel of a 2x2 stride-2 transposed conv reads one input pixel: one 1x1 GEMM with
    the four (a, b) as extra columns, interleaved after. ``values(dtype)``: the input as floats."""
    cout = w_int.shape[0]
    w4 = weight_cache.cached((w_int,), ("convt rows",),  # rows (a, b, o)
                             lambda: np.ascontiguousarray(np.asarray(w_int).transpose(1, 2, 0, 3).reshape(4 * cout, 1, 1, -1)))
    dtype, chunks, d, wm = _weights(w4, a_max, what)
    xf = values(dtype)
    h, w = xf.shape[:2]
    acc = gemm_conv(xf, wm, chunks, 1, 1, 1, h, w, None, d)
    out = acc.reshape(h, w, 2, 2, cout).transpose(0, 2, 1, 3, 4).reshape(2 * h, 2 * w, cout)
    if bias is not None:
        out = out + bias
    return np.ascontiguousarray(out, dtype=np.int32)


@njit(parallel=True, cache=True)
def _pad_table(codes, table, p, out):  # pragma: no cover - numba
    h, w, c = codes.shape
    for y in prange(h):
        for i in range(w):
            for j in range(c):
                out[y + p, i + p, j] = table[j, codes[y, i, j]]


def _table_values(codes, table, p, dtype):
    """uint8 codes -> ``table[c, code]`` in ``dtype``, zero-padded by ``p`` (lut convs pad with 0)."""
    xf = np.zeros((codes.shape[0] + 2 * p, codes.shape[1] + 2 * p, codes.shape[2]), dtype)
    _pad_table(codes, table, p, xf)
    return xf


def _table_max(table) -> int:
    return int(np.abs(table.astype(np.int64)).max()) if table.size else 0


def conv_lut(codes, table, w, p) -> np.ndarray:
    """``sum table[c, codes] w`` (stride 1, zero padding) for arguments validated by ``checks.lut_conv_args``."""
    ho, wo = codes.shape[0] + 2 * p - w.shape[1] + 1, codes.shape[1] + 2 * p - w.shape[2] + 1
    return _conv(lambda dt: _table_values(codes, table, p, dt), w, _table_max(table), 1, ho, wo, None, "conv_lut")


def convt_lut(codes, table, w) -> np.ndarray:
    """2x2 stride-2 transposed lut conv (see ``ops_ref.convt_lut``) as one 1x1 GEMM."""
    return _convt(lambda dt: _table_values(codes, table, 0, dt), w, _table_max(table), None, "convt_lut")
