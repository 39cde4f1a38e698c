"""The integer graph and its interpreter (numpy + numba only; never torch).

A graph is the ``graph.json`` dict of a .slq file: ``ops`` in topological order, each
``{"op": kind, "in": [tensor names], "out": name, "attrs": {...}, "arrays": {role: array name}}``.
Tensors are channels-last ``(H, W, C)``: uint8 activation codes, or int32 accumulators.
The input tensor ``"image"`` is the uint8 image (H, W, 3); the float step of METHODS.md section 5
(image -> first code) was done at export time and is a 256-entry lookup table here.

Op kinds (``ops.OPS``, the one table the interpreter and the schema read: reference kernels from
``ops_ref``, their numba/BLAS twins of the same names from ``ops_fast``):

=============  ==========================================================================
lut_u8         codes = table[c, image[..., c]]                     (the input quantizer)
threshold      codes = #{j : acc > t[c, j]} (or < for direction -1)  (BN + ReLU + act quant)
maxpool        2x2 max of codes (codes are monotone in the real value)
upsample       nearest x2 of codes
concat         channel concatenation of codes quantized by one consumer quantizer
conv_int8      uint8 codes (zero point z) x int8 weights                      (IAO, ELQ ...)
conv_pow2      uint8 codes x sign * 2^shift weights (shift-and-add)           (INQ)
conv_binary    +-1 codes packed 64 to a word x +-1 weights: XNOR-popcount     (BinaryNet)
conv_ternary   k-bit codes x {-1, 0, 1} weights as two masks (ref: bit planes) (TWN, TSQ, SYQ ...)
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

import time

import numpy as np

from seglearn.runtime import ops_ref
from seglearn.runtime.checks import lut_conv_bound  # noqa: F401  (public since the lut convs lived here)
from seglearn.runtime.ops import OPS

KERNELS = ("fast", "ref")
OP_KINDS = tuple(OPS)

# The kernels that lived in this module, under their old names (``ops_ref`` / ``ops_fast`` hold them).
conv_lut_ref = ops_ref.conv_lut
convt_lut = ops_ref.convt_lut
requant_ref = ops_ref.requant
concat_packed = ops_ref.concat_packed
_FAST_NAMES = {"conv_lut_fast": "conv_lut", "convt_lut_fast": "convt_lut", "requant_fast": "requant"}


def __getattr__(name: str):
    if name in _FAST_NAMES:
        from seglearn.runtime import ops_fast  # lazy: ops_fast imports numba (compiled kernels)

        return getattr(ops_fast, _FAST_NAMES[name])
    raise AttributeError(f"module 'seglearn.runtime.graph' has no attribute {name!r}")


class GraphError(ValueError):
    """A graph that names an unknown op, tensor or array, or has malformed attributes."""


def run_op(op: dict, ins: list, A: dict, kernels: str = "fast") -> np.ndarray:
    """Run one op dict on its input tensors and ``{role: array}`` with the ``kernels`` of ``OPS``."""
    entry = OPS.get(op["op"])
    if entry is None:
        raise GraphError(f"unknown op {op['op']!r}")
    run1 = entry.fast if kernels == "fast" else entry.ref
    return run1(ins, A, op.get("attrs", {}))


def validate(graph: dict, arrays: dict) -> dict:
    """Check the whole graph against its schema before anything runs (``schema.validate_graph``):
    types, ranges, every reference resolved, array shapes and accumulator bounds consistent with
    the ops. Raises ``GraphError`` naming the field; returns ``{output: schema.Tensor}``."""
    # lazy: cycle, schema imports GraphError from this module
    from seglearn.runtime.schema import validate_graph

    return validate_graph(graph, arrays)


def run(graph: dict, arrays: dict, image: np.ndarray, kernels: str = "fast",
        profile: list | None = None) -> dict[str, np.ndarray]:
    """Run the graph on one uint8 image (H, W, C_in) whose sides are multiples of ``graph['multiple']``.

    Returns ``{output name: int32 accumulator (H, W, C)}``. Tensors are dropped after their last use,
    so peak memory is a few feature maps. With the fast kernels a conv whose accumulators are read
    only by the next op runs fused with it (``Op.fast_fused``), and one read only by several
    ``requant`` ops runs with all of them in one pass (``Op.fast_requants``): the later ones' codes
    are kept instead of the int32 map (a quarter of the memory).

    ``profile``: a list that gets one ``{"op", "ops", "in", "out", "ms"}`` per step as it ran (a
    fused pair or a conv with its requants is one step, ``op`` their kinds joined by ``+``, ``ops``
    their indices, ``in`` / ``out`` the shapes of what it read and stored), wall ms: what
    ``bench/runtime.py --profile`` reports.
    """
    if kernels not in KERNELS:
        raise ValueError(f"kernels must be one of {KERNELS}, not {kernels!r}")
    ops = graph["ops"]
    readers: dict[str, list[int]] = {}
    for i, op in enumerate(ops):
        for t in op.get("in", []):
            readers.setdefault(t, []).append(i)
    last_use = {t: idx[-1] for t, idx in readers.items()}
    outputs = graph.get("outputs", {})
    keep = set(outputs.values())
    env = {"image": np.ascontiguousarray(image)}
    done: set[int] = set()  # requants already computed with the conv they read
    i = 0
    while i < len(ops):
        op = ops[i]
        if i in done:
            i += 1
            continue
        ins = [env[t] for t in op.get("in", [])]
        A = {role: arrays[name] for role, name in op.get("arrays", {}).items()}
        nxt = ops[i + 1] if i + 1 < len(ops) else None
        fused = _fused(op, nxt, last_use, keep, i) if kernels == "fast" else None
        requants = _requant_readers(op, ops, readers, keep) if kernels == "fast" and fused is None else None
        t0 = time.perf_counter()
        if requants is not None:
            outs = OPS[op["op"]].fast_requants(
                ins, A, op.get("attrs", {}),
                [({role: arrays[n] for role, n in ops[j].get("arrays", {}).items()}, ops[j].get("attrs", {}))
                 for j in requants])
            for j, out in zip(requants, outs):
                env[ops[j]["out"]] = out
            done.update(requants)  # the accumulators were never stored
            step = 1
        elif fused is not None:
            nA = {role: arrays[name] for role, name in nxt.get("arrays", {}).items()}
            env[nxt["out"]] = fused(ins, A, op.get("attrs", {}), nA, nxt.get("attrs", {}))
            step = 2  # the accumulators were never stored: nothing of op's output to drop
        else:
            env[op["out"]] = run_op(op, ins, A, kernels)
            step = 1
        if profile is not None:
            idx = [i] + (requants if requants is not None else [i + 1] if fused is not None else [])
            profile.append({"op": "+".join(ops[j]["op"] for j in idx), "ops": idx,
                            "in": [list(x.shape) for x in ins],
                            "out": [list(env[ops[j]["out"]].shape) for j in (idx[1:] or idx)],
                            "ms": (time.perf_counter() - t0) * 1e3})
        for t in op.get("in", []):
            if last_use.get(t) == i and t not in keep:
                env.pop(t, None)
        i += step
    return {k: env[v] for k, v in outputs.items()}


def _requant_readers(op: dict, ops: list, readers: dict, keep: set) -> list[int] | None:
    """The indices of the ``requant`` ops that are all of ``op``'s readers, when there are at least
    two, each reads nothing else and ``op`` has ``fast_requants`` and is not a graph output: they
    run with ``op`` in one pass (``ops.Op.fast_requants``); else None."""
    entry = OPS.get(op["op"])
    idx = readers.get(op["out"], [])
    if entry is None or entry.fast_requants is None or len(idx) < 2 or op["out"] in keep:
        return None
    if any(ops[j]["op"] != "requant" or ops[j].get("in") != [op["out"]] for j in idx):
        return None
    return idx


def _fused(op: dict, nxt: dict | None, last_use: dict, keep: set, i: int):
    """The fused kernel of ``op`` and ``nxt`` (``ops.Op.fast_fused``) when ``nxt`` is the op that alone
    reads ``op``'s accumulators (right after it, their last use, not a graph output); else None."""
    entry = OPS.get(op["op"])
    if nxt is None or entry is None or nxt["op"] not in entry.fast_fused:
        return None
    if nxt.get("in") != [op["out"]] or last_use.get(op["out"]) != i + 1 or op["out"] in keep:
        return None
    return entry.fast_fused[nxt["op"]]
