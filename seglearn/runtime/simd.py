"""Register-blocked XNOR-popcount micro-kernel written as LLVM vector IR (a numba intrinsic).

Why IR and not a numba loop: the binary conv's work is ``pc[q, o] += popcount(x[q] xor w[o])``
over taps for a block of ``PB`` output pixels ``q`` and a run of output channels ``o``. Written as
a numba loop, the accumulators ``pc[q, o]`` live in a heap array that LLVM cannot keep in
registers (it cannot prove the array does not alias the weights), so every popcount pays a load
and a store of its accumulator, and the loop ran at a fraction of the popcount rate
(``bench/runtime.py``). Here the ``PB`` accumulators are ``<V x i64>`` values that stay in
registers for the whole tap loop: per tap and pixel one broadcast activation word, one xor with
the loaded weight vector (``V`` output channels, loaded once per tap and reused ``PB`` times), one
``llvm.ctpop.v{V}i64`` and one add. LLVM lowers the vector ``ctpop`` to ``vpopcntq`` on AVX-512
VPOPCNTDQ and to the nibble lookup ``vpshufb`` + ``vpsadbw`` on AVX2 (Mula, Kurz, Lemire 2016,
arXiv 1611.07612); ``bench/runtime.py`` reports which it found.

The block shape is chosen for the target's registers (``block_shape``): 4 pixels x 16 channels on
AVX-512 (8 zmm accumulators), 4 x 8 on AVX2 (8 ymm accumulators, leaving registers for the lookup
table, the nibble mask and temporaries). Counts are exact: ``pc <= 64 nw kh kw`` is far below
2^63.
"""

from __future__ import annotations

from llvmlite import binding as llvm
from llvmlite import ir
from numba import types
from numba.core import cgutils, config
from numba.extending import intrinsic


# numba's environment for an AVX2-only x86-64 target (AMD Zen 3, the deployment machines of issue
# 16): the CPU name alone keeps the host's features in numba, so AVX-512 is switched off
# explicitly. Used to build and check the AVX2 code path on an AVX-512 host (bench, tests).
AVX2_TARGET_ENV = {
    "NUMBA_CPU_NAME": "znver3",
    "NUMBA_CPU_FEATURES": "+64bit,+avx,+avx2,+bmi,+bmi2,+cmov,+cx16,+f16c,+fma,+lzcnt,+mmx,+movbe,"
                          "+popcnt,+sahf,+sse,+sse2,+sse3,+sse4.1,+sse4.2,+ssse3,+xsave,"
                          "-avx512f,-avx512bw,-avx512cd,-avx512dq,-avx512vl,-avx512vpopcntdq,"
                          "-avx512bitalg,-avx512vnni,-avx512vbmi,-avx512vbmi2,-avx512ifma,"
                          "-avx512bf16,-avx512fp16,-avxvnni"}


def target_features() -> list[str]:
    """numba's compile-target features (``+avx2``, ``-avx512f``, ...): the host's, or
    ``NUMBA_CPU_FEATURES`` where it is set."""
    return (config.CPU_FEATURES or llvm.get_host_cpu_features().flatten()).split(",")


def target_has_avx512() -> bool:
    """Whether numba compiles for AVX-512 (the host, or ``NUMBA_CPU_FEATURES`` where it is set)."""
    return "+avx512f" in target_features()


def block_shape() -> tuple[int, int]:
    """(PB output pixels, V output channels) of the micro-kernel for the compile target."""
    return (4, 16) if target_has_avx512() else (4, 8)


def is_c_array(t, dtype, ndim) -> bool:
    """Whether the numba type ``t`` is a C-contiguous ``ndim`` array of ``dtype`` (what the
    intrinsics' index arithmetic assumes)."""
    return isinstance(t, types.Array) and t.dtype == dtype and t.ndim == ndim and t.layout == "C"


def splat(builder, value, v):
    """``<v x ty>`` with every lane ``value``."""
    vec = ir.VectorType(value.type, v)
    undef = ir.Constant(vec, ir.Undefined)
    return builder.shuffle_vector(builder.insert_element(undef, value, ir.IntType(64)(0)), undef,
                                  ir.Constant(ir.VectorType(ir.IntType(32), v), [0] * v))


def _finished_accumulators(builder, xa, wa, row0, ky0, ky1, col0, s, o0, base, pb, v):
    """Emit the tap loop of one block; returns the ``pb`` vectors ``base - 2 popcounts`` (<v x i64>).

    An interior block's taps ``(kx, j)`` of one kernel row are ``kw nw`` consecutive words of the
    input row and ``kw nw`` consecutive weight vectors: one flat loop over ``t = kx nw + j``, so
    the usual ``nw = 1`` does not pay a loop per word.
    """
    i64 = ir.IntType(64)
    vec = ir.VectorType(i64, v)
    ctpop = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vec, [vec]),
                                           f"llvm.ctpop.v{v}i64")
    _, width, nw = cgutils.unpack_tuple(builder, xa.shape)
    _, kw, _, coutp = cgutils.unpack_tuple(builder, wa.shape)
    # allocas in the entry block: mem2reg turns them into registers (vector phis)
    accs = [cgutils.alloca_once(builder, vec) for _ in range(pb)]
    for acc in accs:
        builder.store(ir.Constant(vec, None), acc)
    taps = builder.mul(kw, nw)
    with cgutils.for_range(builder, ky1, start=ky0) as ly:
        xrow = builder.mul(builder.add(builder.mul(builder.add(row0, ly.index), width), col0), nw)
        wrow = builder.mul(ly.index, taps)
        with cgutils.for_range(builder, taps) as lt:
            t = lt.index
            woff = builder.add(builder.mul(builder.add(wrow, t), coutp), o0)
            wvec = builder.load(builder.bitcast(builder.gep(wa.data, [woff], inbounds=True),
                                                vec.as_pointer()), align=8)
            for q, acc in enumerate(accs):
                # pixel q starts q s input pixels (q s nw words) to the right
                xoff = builder.add(builder.add(xrow, builder.mul(builder.mul(s, i64(q)), nw)), t)
                word = builder.load(builder.gep(xa.data, [xoff], inbounds=True))
                count = builder.call(ctpop, [builder.xor(splat(builder, word, v), wvec)])
                builder.store(builder.add(builder.load(acc), count), acc)
    vbase = splat(builder, base, v)
    two = ir.Constant(vec, [1] * v)
    return [builder.sub(vbase, builder.shl(builder.load(acc), two)) for acc in accs]


def make_xor_popcount_block(pb: int, v: int):
    """The intrinsic ``xor_popcount_block(acc, xp, wt, row0, ky0, ky1, col0, s, o0, r0, base)``.

    For the ``pb`` pixels ``q`` of one output row, whose taps read ``xp[row0 + ky, col0 + q s + kx]``
    (all inside ``xp``: the caller passes interior blocks and the valid ``ky0 <= ky < ky1`` only),
    and the ``v`` output channels ``o0 <= o < o0 + v``::

        acc[r0 + q, o] = base - 2 sum_{ky0 <= ky < ky1} sum_{kx < kw} sum_{j < nw}
                         popcount(xp[row0 + ky, col0 + q s + kx, j] xor wt[ky, kx, j, o])

    (the binary conv's ``Cin taps - 2 popcount``, ``base = Cin taps``), stored as int32: the
    caller's ``checks.acc_bound`` proves ``|acc| <= Cin kh kw`` fits. Writing the finished
    accumulators from the registers halves the conv's time against a separate epilogue pass over
    an int64 array (measured: 0.55 ms of popcounts, 1.0 ms with the pass, 64->64 at 128^2).

    ``acc``: int32 (rows, Coutp) C-contiguous; ``xp``: uint64 (H, W, nw) C-contiguous; ``wt``:
    uint64 (kh, kw, nw, Coutp) C-contiguous with ``Coutp`` a multiple of ``v``.
    """

    @intrinsic
    def xor_popcount_block(typingctx, acc, xp, wt, row0, ky0, ky1, col0, s, o0, r0, base):
        if not (is_c_array(acc, types.int32, 2) and is_c_array(xp, types.uint64, 3)
                and is_c_array(wt, types.uint64, 4)):
            return None
        sig = types.void(acc, xp, wt, *(types.intp,) * 8)

        def codegen(context, builder, signature, args):
            av, xv, wv, *ints = args
            row0, ky0, ky1, col0, s, o0, r0, base = (context.cast(builder, a, t, types.intp)
                                                     for a, t in zip(ints, signature.args[3:]))
            aa, xa, wa = (context.make_array(t)(context, builder, a)
                          for t, a in zip(signature.args[:3], (av, xv, wv)))
            vals = _finished_accumulators(builder, xa, wa, row0, ky0, ky1, col0, s, o0, base,
                                          pb, v)
            i32 = ir.IntType(32)
            out_vec = ir.VectorType(i32, v)
            _, cols = cgutils.unpack_tuple(builder, aa.shape)
            for q, val in enumerate(vals):
                off = builder.add(builder.mul(builder.add(r0, ir.IntType(64)(q)), cols), o0)
                ptr = builder.bitcast(builder.gep(aa.data, [off], inbounds=True),
                                      out_vec.as_pointer())
                builder.store(builder.trunc(val, out_vec), ptr, align=4)
            return context.get_dummy_value()

        return sig, codegen

    return xor_popcount_block


def make_xor_popcount_threshold_block(pb: int, v: int):
    """The intrinsic ``xor_popcount_threshold_block(bits, xp, wt, row0, ky0, ky1, col0, s, o0, r0,
    base, tau, flip)``: the block of ``make_xor_popcount_block`` fused with the folded BN + sign
    threshold, packed. With ``acc`` as there, bit ``o`` of pixel ``r0 + q`` is

        (acc[q, o] ^ flip[o]) >= (tau[o] ^ flip[o])

    (``flip = 0``: ``acc >= tau``; ``flip = -1`` for direction -1: ``~a = -a - 1`` reverses the
    order, so it is ``acc <= tau``). The ``v`` compare results (an ``<v x i1>`` mask) are stored as
    one ``v``-bit integer at bit ``o0`` of the pixel's packed words: ``bits`` is the packed uint64
    output viewed as bytes, little-endian, so bit ``o % 64`` of word ``o // 64`` is bit ``o % 8``
    of byte ``o // 8`` and ``o0`` a multiple of ``v`` (8 or 16) is a byte boundary. No int32 map
    is written at all. ``bits``: uint8 (rows, 8 nwords); ``tau``, ``flip``: int32 (Coutp,).
    """

    @intrinsic
    def xor_popcount_threshold_block(typingctx, bits, xp, wt, row0, ky0, ky1, col0, s, o0, r0,
                                     base, tau, flip):
        if not (is_c_array(bits, types.uint8, 2) and is_c_array(xp, types.uint64, 3)
                and is_c_array(wt, types.uint64, 4) and is_c_array(tau, types.int32, 1)
                and is_c_array(flip, types.int32, 1) and v % 8 == 0):
            return None
        sig = types.void(bits, xp, wt, *(types.intp,) * 8, tau, flip)

        def codegen(context, builder, signature, args):
            bv, xv, wv, *rest = args
            ints, (tv, fv) = rest[:8], rest[8:]
            row0, ky0, ky1, col0, s, o0, r0, base = (context.cast(builder, a, t, types.intp)
                                                     for a, t in zip(ints, signature.args[3:11]))
            ba, xa, wa, ta, fa = (context.make_array(t)(context, builder, a) for t, a in
                                  zip(signature.args[:3] + signature.args[11:],
                                      (bv, xv, wv, tv, fv)))
            vals = _finished_accumulators(builder, xa, wa, row0, ky0, ky1, col0, s, o0, base,
                                          pb, v)
            i64 = ir.IntType(64)
            vec = ir.VectorType(i64, v)
            in_vec = ir.VectorType(ir.IntType(32), v)

            def load_channels(arr):
                ptr = builder.bitcast(builder.gep(arr.data, [o0], inbounds=True),
                                      in_vec.as_pointer())
                return builder.sext(builder.load(ptr, align=4), vec)

            flipv = load_channels(fa)
            tauv = builder.xor(load_channels(ta), flipv)
            _, row_bytes = cgutils.unpack_tuple(builder, ba.shape)
            byte0 = builder.udiv(o0, i64(8))
            mask_int = ir.IntType(v)
            for q, val in enumerate(vals):
                on = builder.icmp_signed(">=", builder.xor(val, flipv), tauv)
                word = builder.bitcast(on, mask_int)
                off = builder.add(builder.mul(builder.add(r0, i64(q)), row_bytes), byte0)
                ptr = builder.bitcast(builder.gep(ba.data, [off], inbounds=True),
                                      mask_int.as_pointer())
                builder.store(word, ptr, align=1)
            return context.get_dummy_value()

        return sig, codegen

    return xor_popcount_threshold_block
