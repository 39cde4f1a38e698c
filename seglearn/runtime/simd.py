"""Register-blocked XNOR-popcount micro-kernel written as LLVM vector IR (a numba intrinsic).

Why IR and not a numba loop: the binary conv's work is ``pc[q, o] += popcount(x[q] xor w[o])``
over taps for a block of ``PB`` output pixels ``q`` and a run of output channels ``o``. Written as
a numba loop, the accumulators ``pc[q, o]`` live in a heap array that LLVM cannot keep in
registers (it cannot prove the array does not alias the weights), so every popcount pays a load
and a store of its accumulator, and the loop ran at a fraction of the popcount rate
(``bench/runtime.py``). Here the ``PB`` accumulators are ``<V x i64>`` values that stay in
registers for the whole tap loop: per tap and pixel one broadcast activation word, one xor with
the loaded weight vector (``V`` output channels, loaded once per tap and reused ``PB`` times), one
``llvm.ctpop.v{V}i64`` and one add, which LLVM lowers to ``vpopcntq`` on AVX-512 VPOPCNTDQ.

On AVX2 (no vector popcount instruction) LLVM's ``ctpop`` is the nibble lookup of Mula, Kurz and
Lemire (arXiv 1611.07612) per vector: mask, shift, mask, two ``vpshufb``, add, ``vpsadbw``, add.
The kernels there (``nibble_mode``) take the activations and weights already split into low and
high nibbles (``ops_fast_binary.split_nibbles``, once per layer input and per loaded weight) and
keep byte accumulators, summed by ``vpsadbw`` every 31 words: xor, xor, two ``vpshufb``, two
byte adds, 6 operations in place of 9. Measured on a 2-core Zen 3 (3x3 64->64 at 128^2, one
thread): 2.57 ms -> 2.08 ms, the fused threshold kernel 2.56 -> 2.05 ms. ``bench/runtime.py``
reports the instructions found.

The block shape is chosen for the target's registers (``block_shape``): 4 pixels x 16 channels on
AVX-512 (8 zmm accumulators), 4 x 8 on AVX2 (8 ymm byte accumulators, 4 weight vectors, the
lookup table and temporaries: the 16 ymm registers, no spill in the tap loop; 6 x 4, 3 x 8 and
2 x 16 measured the same or slower). Counts are exact: ``pc <= 64 nw kh kw`` is far below 2^63,
and a byte accumulator holds at most 31 x 8 = 248.
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


def is_c_array(t, dtype, ndim) -> bool:
    """Whether the numba type ``t`` is a C-contiguous ``ndim`` array of ``dtype`` (what the
    intrinsics' index arithmetic assumes)."""
    return isinstance(t, types.Array) and t.dtype == dtype and t.ndim == ndim and t.layout == "C"


def _words_args(xp, xh, wt, wh) -> bool:
    """The micro-kernels' word arrays: ``xp``, ``xh`` uint64 (H, W, nw), ``wt``, ``wh`` uint64
    (kh, kw, nw, Coutp), all C-contiguous (``xh``/``wh``: see ``_finished_accumulators``)."""
    return (is_c_array(xp, types.uint64, 3) and is_c_array(xh, types.uint64, 3)
            and is_c_array(wt, types.uint64, 4) and is_c_array(wh, types.uint64, 4))


def splat(builder, value, v):
    """``<v x ty>`` with every lane ``value``."""
    vec = ir.VectorType(value.type, v)
    undef = ir.Constant(vec, ir.Undefined)
    return builder.shuffle_vector(builder.insert_element(undef, value, ir.IntType(64)(0)), undef,
                                  ir.Constant(ir.VectorType(ir.IntType(32), v), [0] * v))


def target_has_vpopcntdq() -> bool:
    """Whether numba compiles for AVX-512 VPOPCNTDQ (a vector popcount instruction)."""
    return "+avx512vpopcntdq" in target_features()


def nibble_mode() -> bool:
    """Whether the micro-kernels count bits by the split-nibble lookup (``_nibble_accumulators``):
    on x86 with AVX2 and without a vector popcount instruction (AVX2-only machines such as Zen 3,
    AVX-512 machines before Ice Lake). Elsewhere LLVM's vector ``ctpop`` is used as it is."""
    return "+avx2" in target_features() and not target_has_vpopcntdq()


def block_shape() -> tuple[int, int]:
    """(PB output pixels, V output channels) of the micro-kernel for the compile target."""
    return (4, 16) if target_has_avx512() else (4, 8)


# bit counts of the nibbles 0..15, twice (vpshufb looks up within each 128-bit lane)
_NIBBLE_COUNTS = [bin(i).count("1") for i in range(16)] * 2
# bytes of a byte accumulator grow by at most 8 per word (4 per nibble): 31 words fit in 255
_WORDS_PER_FLUSH = 31
NIBBLE_MASK = 0x0F0F0F0F0F0F0F0F


def _check_block(pb: int, v: int) -> None:
    """Refuse a block shape the target's micro-kernel cannot emit: the split-nibble kernel works
    on 4-channel ymm chunks joined pairwise (``_concat``), so ``v`` must be 4 times a power of two
    there (``split_nibbles`` has already split the words: no silent fallback to ``ctpop``)."""
    if pb < 1 or v < 1:
        raise ValueError(f"micro-kernel block {pb} x {v}: both must be positive")
    chunks = v // 4
    if nibble_mode() and (v % 4 or chunks & (chunks - 1)):
        raise ValueError(f"micro-kernel block {pb} x {v}: v must be 4 x a power of two on this "
                         "target (split-nibble popcount)")


def _concat(builder, parts):
    """One vector of the parts' lanes in order (the parts of equal width, a power-of-two count)."""
    while len(parts) > 1:
        n = parts[0].type.count
        parts = [builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(ir.IntType(32), 2 * n),
                                                          list(range(2 * n))))
                 for a, b in zip(parts[::2], parts[1::2])]
    return parts[0]


def _tap_loop(builder, xa, wa, row0, ky0, ky1, col0, s, o0, body):
    """Emit the loops over the block's taps: ``body(xoff_of(q), woff)`` per kernel row ``ky`` and
    flat tap ``t = kx nw + j`` (an interior block's taps of one kernel row are ``kw nw``
    consecutive words of the input row and ``kw nw`` consecutive weight vectors: one loop, so the
    usual ``nw = 1`` does not pay a loop per word). ``xoff_of(q)``: the word of pixel ``q``, which
    starts ``q s`` input pixels (``q s nw`` words) to the right; ``woff``: the weight vector's."""
    i64 = ir.IntType(64)
    _, width, nw = cgutils.unpack_tuple(builder, xa.shape)
    _, kw, _, coutp = cgutils.unpack_tuple(builder, wa.shape)
    taps = builder.mul(kw, nw)
    with cgutils.for_range(builder, ky1, start=ky0) as ly:
        xrow = builder.mul(builder.add(builder.mul(builder.add(row0, ly.index), width), col0), nw)
        wrow = builder.mul(ly.index, taps)
        with cgutils.for_range(builder, taps) as lt:
            t = lt.index
            woff = builder.add(builder.mul(builder.add(wrow, t), coutp), o0)
            body(lambda q: builder.add(builder.add(xrow, builder.mul(builder.mul(s, i64(q)), nw)), t),
                 woff)


def _ctpop_accumulators(builder, xa, wa, row0, ky0, ky1, col0, s, o0, pb, v):
    """The ``pb`` popcount sums (<v x i64>) of the block with LLVM's vector ``ctpop``: per tap
    and pixel one broadcast activation word, one xor with the loaded weight vector, one ctpop,
    one add (``vpopcntq`` on AVX-512 VPOPCNTDQ)."""
    vec = ir.VectorType(ir.IntType(64), v)
    ctpop = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vec, [vec]),
                                           f"llvm.ctpop.v{v}i64")
    # allocas in the entry block: mem2reg turns them into registers (vector phis)
    accs = [cgutils.alloca_once(builder, vec) for _ in range(pb)]
    for acc in accs:
        builder.store(ir.Constant(vec, None), acc)

    def body(xoff_of, woff):
        wvec = builder.load(builder.bitcast(builder.gep(wa.data, [woff], inbounds=True),
                                            vec.as_pointer()), align=8)
        for q, acc in enumerate(accs):
            word = builder.load(builder.gep(xa.data, [xoff_of(q)], inbounds=True))
            count = builder.call(ctpop, [builder.xor(splat(builder, word, v), wvec)])
            builder.store(builder.add(builder.load(acc), count), acc)

    _tap_loop(builder, xa, wa, row0, ky0, ky1, col0, s, o0, body)
    return [builder.load(acc) for acc in accs]


def _nibble_accumulators(builder, xa, xh, wa, wh, row0, ky0, ky1, col0, s, o0, pb, v):
    """The ``pb`` popcount sums (<v x i64>) of the block by the split-nibble lookup (AVX2).

    The activations and weights come as their low and high nibbles (``split_nibbles``), so per
    tap, pixel and 4 channels the work is: xor the low nibbles, xor the high ones, two ``vpshufb``
    lookups of the nibble counts and two byte adds into a byte accumulator (6 vector ops, against
    9 for LLVM's ``ctpop``: mask, shift, mask, 2 lookups, add, ``vpsadbw``, add). The byte
    accumulators are summed into the 64-bit lanes (``vpsadbw`` against 0: the sum of each lane's
    8 bytes is the lane's popcount) every 31 words, since a byte grows by at most 8 a word, and
    at the end. Mula, Kurz and Lemire (arXiv 1611.07612) accumulate bytes the same way.
    """
    i8, i64 = ir.IntType(8), ir.IntType(64)
    bvec, qvec = ir.VectorType(i8, 32), ir.VectorType(i64, 4)
    nchunk = v // 4
    pshufb = cgutils.get_or_insert_function(builder.module, ir.FunctionType(bvec, [bvec, bvec]),
                                            "llvm.x86.avx2.pshuf.b")
    psad = cgutils.get_or_insert_function(builder.module, ir.FunctionType(qvec, [bvec, bvec]),
                                          "llvm.x86.avx2.psad.bw")
    lut = ir.Constant(bvec, _NIBBLE_COUNTS)
    zero_b = ir.Constant(bvec, None)
    bytes_ = [[cgutils.alloca_once(builder, bvec) for _ in range(nchunk)] for _ in range(pb)]
    wide = [[cgutils.alloca_once(builder, qvec) for _ in range(nchunk)] for _ in range(pb)]
    for row_b, row_w in zip(bytes_, wide):
        for b, w in zip(row_b, row_w):
            builder.store(zero_b, b)
            builder.store(ir.Constant(qvec, None), w)
    count = cgutils.alloca_once_value(builder, i64(0))

    def flush():
        for row_b, row_w in zip(bytes_, wide):
            for b, w in zip(row_b, row_w):
                builder.store(builder.add(builder.load(w), builder.call(psad, [builder.load(b),
                                                                              zero_b])), w)
                builder.store(zero_b, b)

    def body(xoff_of, woff):
        def chunk(arr, c):
            ptr = builder.gep(arr.data, [builder.add(woff, i64(4 * c))], inbounds=True)
            return builder.bitcast(builder.load(builder.bitcast(ptr, qvec.as_pointer()), align=8),
                                   bvec)
        wl = [chunk(wa, c) for c in range(nchunk)]
        whi = [chunk(wh, c) for c in range(nchunk)]
        for q in range(pb):
            xoff = xoff_of(q)
            xl = builder.bitcast(splat(builder, builder.load(
                builder.gep(xa.data, [xoff], inbounds=True)), 4), bvec)
            xhv = builder.bitcast(splat(builder, builder.load(
                builder.gep(xh.data, [xoff], inbounds=True)), 4), bvec)
            for c in range(nchunk):
                lo = builder.call(pshufb, [lut, builder.xor(xl, wl[c])])
                hi = builder.call(pshufb, [lut, builder.xor(xhv, whi[c])])
                b = bytes_[q][c]
                builder.store(builder.add(builder.add(builder.load(b), lo), hi), b)
        n = builder.add(builder.load(count), i64(1))
        full = builder.icmp_unsigned("==", n, i64(_WORDS_PER_FLUSH))
        builder.store(builder.select(full, i64(0), n), count)
        with cgutils.if_unlikely(builder, full):
            flush()

    _tap_loop(builder, xa, wa, row0, ky0, ky1, col0, s, o0, body)
    flush()
    return [_concat(builder, [builder.load(w) for w in row_w]) for row_w in wide]


def _finished_accumulators(builder, xa, xh, wa, wh, row0, ky0, ky1, col0, s, o0, base, pb, v):
    """Emit the tap loop of one block; returns the ``pb`` vectors ``base - 2 popcounts`` (<v x i64>).

    ``xh``, ``wh``: the high nibbles where ``nibble_mode()`` (``xa``, ``wa`` then hold the low
    ones), else unused (``_ctpop_accumulators`` reads the words themselves)."""
    if nibble_mode():
        pcs = _nibble_accumulators(builder, xa, xh, wa, wh, row0, ky0, ky1, col0, s, o0, pb, v)
    else:
        pcs = _ctpop_accumulators(builder, xa, wa, row0, ky0, ky1, col0, s, o0, pb, v)
    vec = ir.VectorType(ir.IntType(64), v)
    vbase = splat(builder, base, v)
    one = ir.Constant(vec, [1] * v)
    return [builder.sub(vbase, builder.shl(pc, one)) for pc in pcs]


def make_xor_popcount_block(pb: int, v: int):
    """The intrinsic ``xor_popcount_block(acc, xp, xh, wt, wh, row0, ky0, ky1, col0, s, o0, r0, base)``.

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
    uint64 (kh, kw, nw, Coutp) C-contiguous with ``Coutp`` a multiple of ``v``. Where
    ``nibble_mode()``, ``xp``/``xh`` and ``wt``/``wh`` are the low/high nibbles of those words
    (``ops_fast_binary.split_nibbles``); elsewhere ``xh``, ``wh`` are not read (pass the same
    arrays).
    """

    _check_block(pb, v)

    @intrinsic
    def xor_popcount_block(typingctx, acc, xp, xh, wt, wh, row0, ky0, ky1, col0, s, o0, r0, base):
        if not (is_c_array(acc, types.int32, 2) and _words_args(xp, xh, wt, wh)):
            return None
        sig = types.void(acc, xp, xh, wt, wh, *(types.intp,) * 8)

        def codegen(context, builder, signature, args):
            arrays, ints = args[:5], args[5:]
            row0, ky0, ky1, col0, s, o0, r0, base = (context.cast(builder, a, t, types.intp)
                                                     for a, t in zip(ints, signature.args[5:]))
            aa, xa, xha, wa, wha = (context.make_array(t)(context, builder, a)
                                    for t, a in zip(signature.args[:5], arrays))
            vals = _finished_accumulators(builder, xa, xha, wa, wha, row0, ky0, ky1, col0, s, o0,
                                          base, pb, v)
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
    """The intrinsic ``xor_popcount_threshold_block(bits, xp, xh, wt, wh, row0, ky0, ky1, col0, s,
    o0, r0, base, tau, flip)``: the block of ``make_xor_popcount_block`` fused with the folded BN + sign
    threshold, packed. With ``acc`` as there, bit ``o`` of pixel ``r0 + q`` is

        (acc[q, o] ^ flip[o]) >= (tau[o] ^ flip[o])

    (``flip = 0``: ``acc >= tau``; ``flip = -1`` for direction -1: ``~a = -a - 1`` reverses the
    order, so it is ``acc <= tau``). The ``v`` compare results (an ``<v x i1>`` mask) are stored as
    one ``v``-bit integer at bit ``o0`` of the pixel's packed words: ``bits`` is the packed uint64
    output viewed as bytes, little-endian, so bit ``o % 64`` of word ``o // 64`` is bit ``o % 8``
    of byte ``o // 8`` and ``o0`` a multiple of ``v`` (8 or 16) is a byte boundary. No int32 map
    is written at all. ``bits``: uint8 (rows, 8 nwords); ``tau``, ``flip``: int32 (Coutp,).
    """

    _check_block(pb, v)

    @intrinsic
    def xor_popcount_threshold_block(typingctx, bits, xp, xh, wt, wh, row0, ky0, ky1, col0, s, o0,
                                     r0, base, tau, flip):
        if not (is_c_array(bits, types.uint8, 2) and _words_args(xp, xh, wt, wh)
                and is_c_array(tau, types.int32, 1) and is_c_array(flip, types.int32, 1)
                and v % 8 == 0):
            return None
        sig = types.void(bits, xp, xh, wt, wh, *(types.intp,) * 8, tau, flip)

        def codegen(context, builder, signature, args):
            arrays, ints, (tv, fv) = args[:5], args[5:13], args[13:]
            row0, ky0, ky1, col0, s, o0, r0, base = (context.cast(builder, a, t, types.intp)
                                                     for a, t in zip(ints, signature.args[5:13]))
            ba, xa, xha, wa, wha, ta, fa = (context.make_array(t)(context, builder, a) for t, a in
                                            zip(signature.args[:5] + signature.args[13:],
                                                arrays + (tv, fv)))
            vals = _finished_accumulators(builder, xa, xha, wa, wha, row0, ky0, ky1, col0, s, o0,
                                          base, pb, v)
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
