"""Exact uint8 x int8 convolutions on AVX-512 VNNI (``vpdpbusd``), where the CPU has it.

An int8 conv (``conv_int8``: ``bias + sum (code - zp) w``) and a ternary conv on 8-bit codes
(``sum code (pos - neg)``) are the integer GEMM ``acc[m, n] = sum_k a[m, k] w[k, n]`` of
``ops_gemm``. Here it runs on the codes themselves, padded with the zero point (``code - zp = 0``
there):

    acc[m, n] = bias[n] - zp colsum[n] + sum_k code[m, k] w[k, n],   colsum[n] = sum_k w[k, n].

``vpdpbusd`` multiplies 4 unsigned bytes by 4 signed bytes and adds the four products to an int32
lane: 64 multiply-adds per zmm instruction, 4x a float32 FMA's 16 (``ops_gemm``'s float GEMM needs
one FMA per multiply-add, and K split where 2^24 would be exceeded).

Exactness: every lane adds exact products in int32 arithmetic, which wraps modulo 2^32; the result
is the true sum as long as the true sum fits int32: ``255 * 128 * K <= 2^31 - 1`` (K <= 65793),
checked when the weights are prepared (``vnni_weights``: a larger K takes the float GEMM). The corrected accumulator is bounded by
the callers' int32 check (``checks.acc_bound``, as for the reference kernels). So results equal
``ops_ref`` bit for bit.

Layout: an implicit GEMM (no im2col matrix). The register block is ``MR`` output pixels of one row
x ``NV`` vectors of 16 output channels, int32 accumulators held in zmm registers over the whole
K loop; per step one broadcast int32 (4 codes) per pixel, read straight from the padded input,
and ``NV`` loads of the packed weights ``B[(ky kw + kx) Cq + cq, n] = w[n, ky, kx, 4cq : 4cq + 4]``
(Cin padded to ``4 Cq``, N to ``16 NV``, with zeros). Used only where numba's target has AVX-512
VNNI (``available``); elsewhere ``ops_gemm``'s float GEMM runs. ``ENABLED = False`` switches it
off (the benchmark's A/B).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from seglearn.runtime import checks, weight_cache
from seglearn.runtime.simd import is_c_array, splat, target_features

MAX_K = checks.INT32_MAX // (255 * 128)  # the true uint8 x int8 sum fits int32 (see above)
ENABLED = True
# (pixels MR) per register block by NV = min(4, ceil(Cout / 16)) vectors of 16 channels: MR NV
# accumulators + NV weight vectors within the 32 zmm registers, no block much wider than the layer
SHAPES = {4: 6, 3: 8, 2: 12, 1: 24}
TILE_M = 2048  # output pixels per tile (a worker's share of rows, at least one row)


def available() -> bool:
    """Whether the compile target has AVX-512 F + VNNI (and ``ENABLED``)."""
    feats = target_features()
    return ENABLED and "+avx512f" in feats and "+avx512vnni" in feats


def _make_block(mr: int, nv: int):
    """The intrinsic ``block(c, x32, b32, row0, col0, s, kh, r0, n0)``: ``mr`` pixels x ``nv``
    16-lane vectors. Pixel ``q`` reads its taps from the padded codes,

        c[r0 + q, n0 + n] = sum_{ky, kx, cq} dot4(x32[row0 + ky, col0 + q s + kx, cq],
                                                 b32[(ky kw + kx) Cq + cq, n0 + n])

    for ``n < 16 nv``. A pixel's ``kw Cq`` words of one kernel row are consecutive in ``x32``, as
    the weight rows are in ``b32``: one flat loop over them. All arrays int32, C-contiguous;
    ``x32`` (Hp, Wp, Cq) holds every tap the block reads (the caller pads it)."""

    @intrinsic
    def block(typingctx, c, x32, b32, row0, col0, s, kh, r0, n0):
        if not (is_c_array(c, types.int32, 2) and is_c_array(x32, types.int32, 3)
                and is_c_array(b32, types.int32, 2)):
            return None
        sig = types.void(c, x32, b32, *(types.intp,) * 6)

        def codegen(context, builder, signature, args):
            cv, xv, bv, *ints = args
            row0, col0, s, kh, r0, n0 = (context.cast(builder, a, t, types.intp)
                                         for a, t in zip(ints, signature.args[3:]))
            ca, xa, ba = (context.make_array(t)(context, builder, v)
                          for t, v in zip(signature.args[:3], (cv, xv, bv)))
            i32, i64 = ir.IntType(32), ir.IntType(64)
            vec = ir.VectorType(i32, 16)
            dp = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vec, [vec] * 3),
                                                "llvm.x86.avx512.vpdpbusd.512")
            _, wp, cq = cgutils.unpack_tuple(builder, xa.shape)
            kt, np_cols = cgutils.unpack_tuple(builder, ba.shape)
            _, c_cols = cgutils.unpack_tuple(builder, ca.shape)
            run = builder.sdiv(kt, kh)  # kw Cq words per kernel row
            # allocas in the entry block: mem2reg keeps the accumulators in registers
            accs = [[cgutils.alloca_once(builder, vec) for _ in range(nv)] for _ in range(mr)]
            for row in accs:
                for acc in row:
                    builder.store(ir.Constant(vec, None), acc)
            with cgutils.for_range(builder, kh) as ly:
                xrow = builder.mul(builder.add(builder.mul(builder.add(row0, ly.index), wp),
                                               col0), cq)
                brow = builder.mul(ly.index, run)
                with cgutils.for_range(builder, run) as lt:
                    t = lt.index
                    boff = builder.add(builder.mul(builder.add(brow, t), np_cols), n0)
                    bvecs = [builder.load(builder.bitcast(
                        builder.gep(ba.data, [builder.add(boff, i64(16 * j))], inbounds=True),
                        vec.as_pointer()), align=4) for j in range(nv)]
                    for q in range(mr):
                        xoff = builder.add(builder.add(xrow, builder.mul(builder.mul(s, i64(q)),
                                                                         cq)), t)
                        word = builder.load(builder.gep(xa.data, [xoff], inbounds=True))
                        codes = splat(builder, word, 16)
                        for j in range(nv):
                            acc = accs[q][j]
                            builder.store(builder.call(dp, [builder.load(acc), codes, bvecs[j]]),
                                          acc)
            for q in range(mr):
                crow = builder.add(builder.mul(builder.add(r0, i64(q)), c_cols), n0)
                for j in range(nv):
                    ptr = builder.bitcast(builder.gep(ca.data, [builder.add(crow, i64(16 * j))],
                                                      inbounds=True), vec.as_pointer())
                    builder.store(builder.load(accs[q][j]), ptr, align=4)
            return context.get_dummy_value()

        return sig, codegen

    return block


_BLOCK_1, _BLOCK_2, _BLOCK_3, _BLOCK_4 = (_make_block(SHAPES[nv], nv) for nv in (1, 2, 3, 4))
_MR = tuple(SHAPES.get(nv, 0) for nv in range(5))  # SHAPES as a tuple numba can index


@njit(nogil=True, cache=True)
def _block(nv, c, x32, b32, row0, col0, s, kh, r0, n0):  # pragma: no cover - numba
    """The register block for ``nv`` vectors (module-level intrinsics: numba caches the compiled
    kernels on disk, which it cannot for closures made by a factory)."""
    if nv == 4:
        _BLOCK_4(c, x32, b32, row0, col0, s, kh, r0, n0)
    elif nv == 3:
        _BLOCK_3(c, x32, b32, row0, col0, s, kh, r0, n0)
    elif nv == 2:
        _BLOCK_2(c, x32, b32, row0, col0, s, kh, r0, n0)
    else:
        _BLOCK_1(c, x32, b32, row0, col0, s, kh, r0, n0)


@njit(nogil=True, cache=True)
def _rows(nv, pieces, base, x32, xu8, b32, corr, toff, tky, tkx, tci, tw, s, kh, oy0, nrows, wo,
          c, acc):  # pragma: no cover - numba
    """Output rows ``oy0 .. oy0 + nrows`` into ``acc`` (nrows wo, N) int32:

        acc[m, j] = corr[j] + sum_i c_i[m, j] 2^(7 i + base) + sum_{e of channel j} tw[e] code(m, e)

    over the ``pieces`` digit column groups of ``c`` (nrows wop, P Np) and the sparse tail
    (``toff``: channel j's entries are ``toff[j] .. toff[j + 1]``, each at tap ``(tky, tkx, tci)``
    of the padded codes ``xu8``), formed in int64 (``wop`` a multiple of the block's pixels).
    ``nogil``: tiles run on concurrent threads. Compiled only on first use, so only on a VNNI
    target (LLVM cannot select ``vpdpbusd`` elsewhere)."""
    mr = _MR[nv]
    wop = c.shape[0] // nrows
    npad = c.shape[1] // pieces
    n = acc.shape[1]
    tail = toff[n] > 0
    v = np.empty(n, np.int64)
    for r in range(nrows):
        for ox0 in range(0, wo, mr):
            for n0 in range(0, c.shape[1], 16 * nv):
                _block(nv, c, x32, b32, (oy0 + r) * s, ox0 * s, s, kh, r * wop + ox0, n0)
        row = (oy0 + r) * s
        for ox in range(wo):
            m = r * wop + ox
            # Channel loops without inner loops or branches, so LLVM vectorises each of them:
            # the former per-channel loop over digits and tail entries ran scalar, ~2.5 ns an
            # output value on one core (measured at 256^2 32 -> 32 int8), more than the block.
            if pieces == 1 and not tail:
                for j in range(n):
                    acc[r * wo + ox, j] = corr[j] + (np.int64(c[m, j]) << base)
                continue
            for j in range(n):
                v[j] = corr[j] + (np.int64(c[m, j]) << base)
            for i in range(1, pieces):
                sh = 7 * i + base
                for j in range(n):
                    v[j] += np.int64(c[m, i * npad + j]) << sh
            if tail:
                col = ox * s
                for j in range(n):
                    for e in range(toff[j], toff[j + 1]):
                        v[j] += tw[e] * np.int64(xu8[row + tky[e], col + tkx[e], tci[e]])
            for j in range(n):
                acc[r * wo + ox, j] = v[j]


MAX_PIECES = 4  # beyond this many base-128 digits the float GEMM's two halves are cheaper


def digits(w64: np.ndarray) -> list[np.ndarray]:
    """Integer weights as int8 digits: ``[w]`` where every ``|w|`` fits int8, else the balanced
    base-128 digits ``w = sum_i d_i 128^i``, ``d_i = ((r + 64) mod 128) - 64`` in [-64, 63], as many
    as the largest ``|w|`` needs. An INQ power of two ``+-2^e`` has one nonzero digit."""
    if w64.size == 0 or (w64.min() >= -128 and w64.max() <= 127):
        return [w64]
    out, r = [], w64.copy()
    while np.any(r):
        d = ((r + 64) & 127) - 64
        out.append(d)
        r = (r - d) >> 7  # exact: r - d is a multiple of 128
    return out


# What a sparse tail weight costs per output pixel, in vpdpbusd instructions (one scalar load,
# multiply and add against a 16-lane instruction per 4 codes): the split below keeps a weight out
# of the dense digit planes when that is cheaper.
TAIL_COST = 2.0


def pow2_split(w64: np.ndarray, plane_cost: float):
    """Powers of two ``+-2^e`` (and zeros) as ``(pieces, base, tail)``: the weights with
    ``e >= base`` are ``2^base sum_i d_i 128^i`` with one nonzero int8 digit ``d_i = +-2^(e - base
    - 7 i)`` each (``q`` pieces hold a window of ``7 q`` exponents under the largest), and the
    rest, the *tail* ``e < base``, is a bool mask of weights run one by one (sparse).

    Why: an INQ-7 layer's exponents span 14-18 levels (3 base-128 digits of the lowest-aligned
    split), but the bottom levels hold a few weights of thousands (the log-domain projection's
    smallest levels: 0-61 of 2k-150k weights in a trained GlaS model), so a window of 14 levels
    from the top and a sparse tail cost 2 planes instead of 3. ``q`` minimises
    ``q plane_cost + TAIL_COST tail size`` (``plane_cost``: a plane's instructions per pixel).
    None when ``w64`` is not all zeros and powers of two."""
    a = np.abs(w64)
    nz = a != 0
    if not nz.any() or np.any(a[nz] & (a[nz] - 1)):
        return None
    e = np.zeros(w64.shape, np.int64)
    e[nz] = np.frexp(a[nz].astype(np.float64))[1] - 1  # exact: |w| <= 2^52
    emax = int(e[nz].max())
    best = None
    for q in range(1, -(-(emax + 1) // 7) + 1):
        base = max(0, emax - 7 * q + 1)
        tail = nz & (e < base)
        cost = q * plane_cost + TAIL_COST * int(tail.sum())
        if best is None or cost < best[0]:
            best = (cost, q, base, tail)
    _, q, base, tail = best
    dense = nz & ~tail
    t = e - base
    sign = np.sign(w64)
    pieces = [np.where(dense & (t >= 7 * i) & (t < 7 * i + 7), sign << np.clip(t - 7 * i, 0, 6), 0)
              for i in range(q)]
    return pieces, base, tail


def vnni_weights(w_int, zp, bias):
    """(Cout, kh, kw, Cin) integer weights -> (packed B int32 (kh kw Cq, P Np), corr int64 (N,),
    NV, P, base, tail), or None: ``ops_gemm``'s float GEMM runs those (more than ``MAX_PIECES``
    digits, or K past ``MAX_K``).

    The weights are split into ``P`` int8 digits: int8 weights are one piece; powers of two
    (INQ-7) take ``pow2_split``'s window of the top exponents, ``2^base sum_i d_i 128^i``, and its
    sparse tail; other integers the balanced base-128 ``digits``. Digit i's columns are ``[i Np,
    (i + 1) Np)`` of one GEMM and the result is ``sum_i acc_i 2^(7 i + base) + tail terms`` (exact
    in int64: every ``acc_i`` is an exact int32 sum, the whole is bounded by the callers' int32
    check). ``B[(ky kw + kx) Cq + cq, n]`` holds ``w[n, ky, kx, 4 cq + t]`` in byte t
    (little-endian), Cin padded to ``4 Cq`` and N to ``Np``, a multiple of ``16 NV``, with zeros,
    ``NV = min(4, ceil(N / 16))``. ``corr = bias - zp colsum`` of all the weights (the tail runs
    on the codes, as the planes do). ``tail = (toff, ky, kx, ci, w)``: channel n's tail weights
    are entries ``toff[n] .. toff[n + 1]``. Made once per loaded model (``weight_cache``).
    """
    def build():
        cout, kh, kw, cin = w_int.shape
        if cout == 0 or kh * kw * cin > MAX_K or not np.issubdtype(np.asarray(w_int).dtype,
                                                                  np.integer):
            return None
        w64 = np.asarray(w_int, np.int64)
        nv = min(4, -(-cout // 16))
        cq, npad = -(-cin // 4), -(-cout // (16 * nv)) * 16 * nv
        fits_int8 = w64.size == 0 or (w64.min() >= -128 and w64.max() <= 127)
        split = None if fits_int8 else pow2_split(w64, kh * kw * cq * npad / 16)
        pieces, base, tail = split or (digits(w64), 0, np.zeros(w64.shape, bool))
        if len(pieces) > MAX_PIECES:
            return None
        wb = np.zeros((kh, kw, 4 * cq, len(pieces) * npad), np.int8)
        for i, d in enumerate(pieces):
            wb[:, :, :cin, i * npad:i * npad + cout] = d.transpose(1, 2, 3, 0)
        cols = wb.shape[3]
        b32 = np.ascontiguousarray(wb.reshape(kh, kw, cq, 4, cols).transpose(0, 1, 2, 4, 3))
        b32 = np.ascontiguousarray(b32.view(np.int32).reshape(kh * kw * cq, cols))
        tn, tky, tkx, tci = np.nonzero(tail)  # row-major: sorted by output channel
        toff = np.searchsorted(tn, np.arange(cout + 1)).astype(np.int64)
        tails = (toff, tky.astype(np.int64), tkx.astype(np.int64), tci.astype(np.int64),
                 w64[tail].astype(np.int64))
        return (b32, -int(zp) * w64.reshape(cout, -1).sum(axis=1), nv, len(pieces), base, tails)

    # the bias is added per call (N values): callers often pass a fresh bias array, which would
    # defeat a cache keyed on it (weight_cache serves read-only sources only)
    prep = weight_cache.cached((w_int,), ("vnni", int(zp)), build)
    if prep is None or bias is None:
        return prep
    return (prep[0], prep[1] + np.asarray(bias, np.int64)) + prep[2:]


def conv(x, pad, prep, kh, kw, s, p, ho, wo, epilogue=None) -> np.ndarray:
    """int32 (ho, wo, N) conv of the uint8 codes ``x`` (H, W, C) with ``prep = vnni_weights(..)``
    (padding ``p`` holds ``pad``: the zero point, or 0 for raw codes), or with an ``epilogue``
    that of ``fn(acc_rows, out_rows, *args)`` per tile (as ``ops_gemm.gemm_conv``, k results too). Tiles of whole output rows run on ``ops_gemm``'s workers."""
    from seglearn.runtime import ops_gemm  # lazy: ops_gemm imports this module (its conv dispatch)

    b32, corr, nv, pieces, base, (toff, tky, tkx, tci, tw) = prep
    n = corr.shape[0]
    h, w, cin = x.shape
    cq = b32.shape[0] // (kh * kw)
    mr = SHAPES[nv]
    wop = -(-wo // mr) * mr  # output columns the blocks compute (the extra ones are dropped)
    # one padded copy of the codes (1 byte a value): the pad code around, zero channels up to
    # 4 Cq, and wide enough that the last block's taps stay inside
    wp = max(w + 2 * p, (wop - 1) * s + kw)
    xpad = np.zeros((h + 2 * p, wp, 4 * cq), np.uint8)
    xpad[:, :, :cin] = pad
    xpad[p:p + h, p:p + w, :cin] = x
    x32 = xpad.view(np.int32)
    out = ops_gemm.epilogue_out(epilogue, ho, wo, n)

    def tile(oy0, r):
        c = np.empty((r * wop, b32.shape[1]), np.int32)
        rows_out = ops_gemm.tile_rows(out, oy0, r)
        acc = rows_out if epilogue is None else np.empty((r * wo, n), np.int32)
        _rows(nv, pieces, base, x32, xpad, b32, corr, toff, tky, tkx, tci, tw, s, kh, oy0, r, wo,
              c, acc)
        if epilogue is not None:
            epilogue[0](acc, rows_out, *epilogue[1])

    ops_gemm.run_row_tiles(tile, ho, max(1, TILE_M // max(wo, 1)))
    return out
