"""The integer graph and its interpreter (numpy + numba only; never torch).

A graph is the ``graph.json`` dict of a .slq file: ``ops`` in topological order, each
``{"op": kind, "in": [tensor names], "out": name, "attrs": {...}, "arrays": {role: array name}}``.
Tensors are channels-last ``(H, W, C)``: uint8 activation codes, or int32 accumulators.
The input tensor ``"image"`` is the uint8 image (H, W, 3); the float step of METHODS.md section 5
(image -> first code) was done at export time and is a 256-entry lookup table here.

Op kinds (reference kernels from ``ops_ref``, fast ones from ``ops_fast``, both written by the
kernel engineer; the two ``*_lut`` convs are defined here, with a numpy reference and a BLAS twin):

=============  ==========================================================================
lut_u8         codes = table[c, image[..., c]]                     (the input quantizer)
threshold      codes = #{j : acc > t[c, j]} (or < for direction -1)  (BN + ReLU + act quant)
maxpool        2x2 max of codes (codes are monotone in the real value)
upsample       nearest x2 of codes
concat         channel concatenation of codes quantized by one consumer quantizer
conv_int8      uint8 codes (zero point z) x int8 weights                      (IAO, ELQ ...)
conv_pow2      uint8 codes x sign * 2^shift weights (shift-and-add)           (INQ)
conv_binary    +-1 codes packed 64 to a word x +-1 weights: XNOR-popcount     (BinaryNet)
conv_ternary   k-bit codes as bit planes x {-1, 0, 1} weights as two masks    (TWN, TSQ, SYQ ...)
conv_offset    k-bit codes x offset weights 2u - (2^m - 1), bit planes        (DoReFa, 1-bit w)
conv_lut       codes -> int32 values by a per-channel table, x int32 weights  (general fallback)
convt_int8     2x2 stride-2 transposed conv, uint8 codes x int8 weights
convt_lut      2x2 stride-2 transposed conv, table values x int32 weights
requant        codes = clamp(zp + M (sign (acc << k) + bias)), per-channel M, k (gemmlowp; IAO ...)
conv_int8_requant      conv_int8 fused with requant (k = 0; sign folded into the weights)
threshold_pack         +-1 bits acc >= tau (or <= tau), packed 64 to a uint64 word
conv_binary_threshold  XNOR-popcount conv fused with threshold_pack: packed in, packed out
maxpool_packed         2x2 max pool of packed +-1 bits (bitwise OR)
concat_packed          channel concatenation of packed bits
=============  ==========================================================================

``conv_binary`` / ``conv_binary_threshold`` with ``attrs.packed`` read packed words; otherwise they
pack their uint8 0/1 codes first. ``export.optimize`` writes the packed and fused kinds.
"""

from __future__ import annotations

import numpy as np

from seglearn.runtime import checks, fixedpoint, ops_ref
from seglearn.runtime.bitpack import bitplanes, pack_bits, unpack_bits
from seglearn.runtime.checks import INT32_MAX, KernelError

KERNELS = ("fast", "ref")


class GraphError(ValueError):
    """A graph that names an unknown op, tensor or array, or has malformed attributes."""


# ----------------------------------------------------------------------------- the lut conv

def lut_conv_bound(table: np.ndarray, w: np.ndarray) -> int:
    """Worst case ``|acc|`` of ``conv_lut``: ``max|table| * max_o sum|w_o|`` (the no-overflow proof)."""
    if table.size == 0 or w.size == 0:
        return 0
    return int(np.abs(table.astype(np.int64)).max()) * int(
        np.abs(w.astype(np.int64)).reshape(w.shape[0], -1).sum(1).max())


def _lut_args(codes, table, w, padding):
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


def conv_lut_ref(codes, table, w, padding=0) -> np.ndarray:
    """``acc[o] = sum_{taps, c} table[c, codes[., ., c]] w[o, ky, kx, c]``, zero padding, stride 1."""
    codes, table, w, p = _lut_args(codes, table, w, padding)
    x = table[np.arange(codes.shape[2]), codes].astype(np.int64)
    x = np.pad(x, [(p, p), (p, p), (0, 0)])
    cout, kh, kw, _ = w.shape
    ho, wo = x.shape[0] - kh + 1, x.shape[1] - kw + 1
    acc = np.zeros((ho, wo, cout), np.int64)
    for ky in range(kh):
        for kx in range(kw):
            acc += x[ky:ky + ho, kx:kx + wo] @ w[:, ky, kx, :].T.astype(np.int64)
    return acc.astype(np.int32)


def conv_lut_fast(codes, table, w, padding=0) -> np.ndarray:
    """Fast twin of :func:`conv_lut_ref` (identical results): an exact GEMM, ``ops_gemm.conv_lut``."""
    from seglearn.runtime import ops_gemm  # numba: loaded with the fast kernels only

    return ops_gemm.conv_lut(*_lut_args(codes, table, w, padding))


def convt_lut_fast(codes, table, w) -> np.ndarray:
    """Fast twin of :func:`convt_lut` (identical results): one exact GEMM, ``ops_gemm.convt_lut``."""
    from seglearn.runtime import ops_gemm

    return ops_gemm.convt_lut(*_convt_lut_args(codes, table, w))


def _convt_lut_args(codes, table, w):
    codes, table, w, _ = _lut_args(codes, table, w, 0)
    if w.shape[1:3] != (2, 2):
        raise KernelError(f"convt_lut weights must be (Cout, 2, 2, Cin), got {w.shape}")
    return codes, table, w


def convt_lut(codes, table, w) -> np.ndarray:
    """2x2 stride-2 transposed conv: ``out[2i+a, 2j+b, o] = sum_c table[c, codes[i, j, c]] w[o, a, b, c]``.

    Each output pixel reads exactly one input pixel, so this is four matrix products (the reference;
    :func:`convt_lut_fast` is the BLAS twin).
    """
    codes, table, w = _convt_lut_args(codes, table, w)
    x = table[np.arange(codes.shape[2]), codes].astype(np.int64)
    h, wd = x.shape[:2]
    out = np.empty((2 * h, 2 * wd, w.shape[0]), np.int64)
    for a in range(2):
        for b in range(2):
            out[a::2, b::2] = x @ w[:, a, b, :].T.astype(np.int64)
    return out.astype(np.int32)


# ----------------------------------------------------------------------------- requant, packed concat

def _requant_args(acc, sign, bias, M0, shift, zp, lo, hi, in_shift):
    acc = np.asarray(acc)
    if acc.dtype != np.int32 or acc.ndim != 3:
        raise KernelError(f"requant needs int32 accumulators (H, W, C), got {acc.dtype} {acc.shape}")
    c = acc.shape[2]
    sign = checks.per_channel(sign, "sign", c, np.int8)
    bias = checks.per_channel(bias, "bias", c, np.int32)
    k = checks.per_channel(in_shift, "in_shift", c, np.int8)
    if sign.size and not np.all(np.abs(sign) == 1):
        raise KernelError("requant sign must be +1 or -1 per channel")
    if k.size and (k.min() < 0 or k.max() > 31):
        raise KernelError("requant in_shift must be in [0, 31]")
    m0, sh = checks.multiplier(M0, shift, c, "requant")
    zp = checks.zp_u8(zp, "zp")
    lo, hi = checks.clamp_u8(lo, hi)
    return acc, sign, bias, m0, sh, zp, lo, hi, k


def requant_ref(acc, sign, bias, M0, shift, zp, lo=0, hi=255, in_shift=0) -> np.ndarray:
    """uint8 ``clamp(zp + MultiplyByQuantizedMultiplier(v, M0, shift), lo, hi)``, ``v = sign (acc << k) + bias``.

    Per channel ``sign``, ``bias``, ``M0``, ``shift``, ``k = in_shift`` (``export.requant`` derives
    them from ``y = A acc + B`` and the consumer's ``(S, Z)``: ``y / S = M v``). ``v`` is computed in
    int64 and saturated to int32; the lowering proves ``|acc| << k + |bias|`` fits, so it never bites.
    """
    acc, sign, bias, m0, sh, zp, lo, hi, k = _requant_args(acc, sign, bias, M0, shift, zp, lo, hi, in_shift)
    v = sign.astype(np.int64) * (acc.astype(np.int64) << k.astype(np.int64)) + bias
    v = np.clip(v, -INT32_MAX - 1, INT32_MAX)
    return fixedpoint.requantize(v.astype(np.int32), m0, sh, zp, lo, hi).astype(np.uint8)


_fast_requant = None


def _compile_fast_requant():
    global _fast_requant
    if _fast_requant is None:
        from numba import njit, prange

        @njit(parallel=True, cache=True)
        def kernel(acc, sign, bias, m0, left, right, zp, lo, hi, k):  # pragma: no cover - numba
            # gemmlowp's MultiplyByQuantizedMultiplier written branch-free (selects) so that LLVM
            # vectorises the channel loop; the same integers as fixedpoint.multiply_by_quantized_multiplier:
            # saturating << left, SaturatingRoundingDoublingHighMul (m0 >= 0: no INT32_MIN * INT32_MIN
            # case), RoundingDivideByPOT(right).
            h, w, c = acc.shape
            out = np.empty((h, w, c), np.uint8)
            mask = (np.int64(1) << right) - 1
            half = mask >> 1
            for y in prange(h):
                for x in range(w):
                    for o in range(c):
                        v = sign[o] * (np.int64(acc[y, x, o]) << k[o]) + bias[o]
                        v = min(max(v, -2147483648), 2147483647)  # saturate, as requant_ref
                        v = min(max(v << left[o], -2147483648), 2147483647)
                        ab = v * m0[o]
                        num = ab + (1073741824 if ab >= 0 else -1073741823)
                        hm = (num >> 31) if num >= 0 else -((-num) >> 31)
                        r = (hm >> right[o]) + ((hm & mask[o]) > (half[o] + (hm < 0)))
                        out[y, x, o] = min(max(r + zp, lo), hi)
            return out

        _fast_requant = kernel
    return _fast_requant


def requant_fast(acc, sign, bias, M0, shift, zp, lo=0, hi=255, in_shift=0) -> np.ndarray:
    """numba twin of :func:`requant_ref` (identical results)."""
    acc, sign, bias, m0, sh, zp, lo, hi, k = _requant_args(acc, sign, bias, M0, shift, zp, lo, hi, in_shift)
    sh = sh.astype(np.int64)
    return _compile_fast_requant()(acc, sign.astype(np.int64), bias.astype(np.int64), m0.astype(np.int64),
                                   np.maximum(sh, 0), np.maximum(-sh, 0), zp, lo, hi, k.astype(np.int64))


def concat_packed(parts: list, channels: list) -> np.ndarray:
    """Channel concat of packed bits ``(H, W, nwords(c_i))``: word concat when every part but the
    last fills whole words (channel ``c`` is bit ``c % 64`` of word ``c // 64``), else unpack/repack."""
    if len(parts) != len(channels):
        raise KernelError("concat_packed needs one channel count per input")
    for p, c in zip(parts, channels):
        if p.dtype != np.uint64 or p.ndim != 3 or p.shape[2] != -(-int(c) // 64):
            raise KernelError(f"concat_packed: {c} channels need (H, W, {-(-int(c) // 64)}) uint64, got {p.shape}")
    if all(int(c) % 64 == 0 for c in channels[:-1]):
        return np.ascontiguousarray(np.concatenate(parts, axis=-1))
    return pack_bits(np.concatenate([unpack_bits(p, int(c)) for p, c in zip(parts, channels)], axis=-1))


# ----------------------------------------------------------------------------- interpreter

def _ops_module(kernels: str):
    if kernels not in KERNELS:
        raise ValueError(f"kernels must be one of {KERNELS}, not {kernels!r}")
    if kernels == "ref":
        return ops_ref
    from seglearn.runtime import ops_fast

    return ops_fast


def _run_op(op: dict, ins: list, A: dict, K, fast: bool) -> np.ndarray:
    kind, at = op["op"], op.get("attrs", {})
    p = int(at.get("padding", 0))
    if kind == "lut_u8":
        return K.lut(ins[0], A["table"]).astype(np.uint8)
    if kind == "threshold":
        return K.multi_threshold(ins[0], A["t"], A["direction"])
    if kind == "maxpool":
        return K.maxpool2x2(ins[0])
    if kind == "upsample":
        return K.upsample2x(ins[0])
    if kind == "concat":
        return np.concatenate(ins, axis=-1)
    if kind == "conv_int8":
        return K.conv2d_int8(ins[0], int(at["zp"]), A["w"], None, 1, p)
    if kind == "conv_pow2":
        return K.pow2_conv2d(ins[0], int(at["zp"]), A["wsign"], A["wshift"], None, 1, p)
    if kind == "conv_binary":
        return K.bconv2d(ins[0] if at.get("packed") else pack_bits(ins[0]), A["wp"], int(at["cin"]), 1, p)
    if kind == "conv_binary_threshold":
        xp = ins[0] if at.get("packed") else pack_bits(ins[0])
        return K.bconv2d_threshold(xp, A["wp"], int(at["cin"]), A["tau"], A["direction"], 1, p)
    if kind == "threshold_pack":
        return K.threshold_pack(ins[0], A["tau"], A["direction"])
    if kind == "maxpool_packed":
        return K.maxpool2x2_packed(ins[0])
    if kind == "concat_packed":
        return concat_packed(ins, at["channels"])
    if kind == "requant":
        return (requant_fast if fast else requant_ref)(ins[0], A["sign"], A["bias"], A["M0"], A["shift"],
                                                       int(at["zp"]), int(at["lo"]), int(at["hi"]),
                                                       A["in_shift"])
    if kind == "conv_int8_requant":
        return K.conv2d_int8_requant(ins[0], int(at["zp"]), A["w"], A["bias"], A["M0"], A["shift"],
                                     int(at["y_zp"]), int(at["lo"]), int(at["hi"]), 1, p)
    if kind == "conv_ternary":
        return K.ternary_conv2d(bitplanes(ins[0], int(at["bits"])), A["wpos"], A["wneg"], 1, p)
    if kind == "conv_offset":
        return K.bitplane_conv2d_offset(bitplanes(ins[0], int(at["bits"])), A["wplanes"], 1, p)
    if kind == "conv_lut":
        return (conv_lut_fast if fast else conv_lut_ref)(ins[0], A["table"], A["w"], p)
    if kind == "convt_int8":
        return K.conv_transpose2x2_int8(ins[0], int(at["zp"]), A["w"], None)
    if kind == "convt_lut":
        return (convt_lut_fast if fast else convt_lut)(ins[0], A["table"], A["w"])
    raise GraphError(f"unknown op {kind!r}")


OP_KINDS = ("lut_u8", "threshold", "maxpool", "upsample", "concat", "conv_int8", "conv_pow2",
            "conv_binary", "conv_ternary", "conv_offset", "conv_lut", "convt_int8", "convt_lut",
            "requant", "conv_int8_requant", "threshold_pack", "conv_binary_threshold", "maxpool_packed",
            "concat_packed")


def validate(graph: dict, arrays: dict) -> dict:
    """Check the whole graph against its schema before anything runs (``schema.validate_graph``):
    types, ranges, every reference resolved, array shapes and accumulator bounds consistent with
    the ops. Raises ``GraphError`` naming the field; returns ``{output: schema.Tensor}``."""
    from seglearn.runtime.schema import validate_graph

    return validate_graph(graph, arrays)  # imported here: schema dry-runs ops with _run_op


def run(graph: dict, arrays: dict, image: np.ndarray, kernels: str = "fast") -> dict[str, np.ndarray]:
    """Run the graph on one uint8 image (H, W, C_in) whose sides are multiples of ``graph['multiple']``.

    Returns ``{output name: int32 accumulator (H, W, C)}``. Tensors are dropped after their last use,
    so peak memory is a few feature maps.
    """
    K = _ops_module(kernels)
    ops = graph["ops"]
    last_use: dict[str, int] = {}
    for i, op in enumerate(ops):
        for t in op.get("in", []):
            last_use[t] = i
    outputs = graph.get("outputs", {})
    keep = set(outputs.values())
    env = {"image": np.ascontiguousarray(image)}
    for i, op in enumerate(ops):
        ins = [env[t] for t in op.get("in", [])]
        A = {role: arrays[name] for role, name in op.get("arrays", {}).items()}
        env[op["out"]] = _run_op(op, ins, A, K, kernels == "fast")
        for t in op.get("in", []):
            if last_use.get(t) == i and t not in keep:
                env.pop(t, None)
    return {k: env[v] for k, v in outputs.items()}
