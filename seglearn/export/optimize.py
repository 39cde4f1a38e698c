"""Graph rewrites after lowering: fuse int8 conv + requantize, and keep binary chains packed.

0. Identical ops on the same inputs are merged (``dedupe``), so a skip tensor read by two equal
   quantizers is computed once. Both rewrites below change the schedule, never the arithmetic: every rewritten graph computes the same
integers as the one it replaces (tests/export check the runtime against torch and ref == fast).

1. ``conv_int8`` whose only reader is a ``requant`` with every ``in_shift == 0`` becomes one
   ``conv_int8_requant`` (gemmlowp's fused output stage): the per-channel sign goes into the int8
   weights (``sigma (b + sum (x - z) w) = sigma b + sum (x - z) (sigma w)``; |w| <= 127 so the
   negation stays int8) and the bias into the int32 conv bias.
2. BinaryNet layers read +-1 codes. A 2-level ``threshold`` whose codes only reach binary convs
   (through max pools, nearest upsamples and concats) becomes ``threshold_pack`` -- bits
   ``acc >= tau`` with ``tau = t + 1`` (direction +1, ``acc > t``) or ``acc <= tau``, ``tau = t - 1``
   (direction -1) -- or, right after a ``conv_binary`` read by nothing else, one fused
   ``conv_binary_threshold`` (``bconv2d_threshold``). Max pool of bits is OR (``maxpool_packed``),
   nearest upsampling copies words, and a concat joins words (``concat_packed``). The next binary
   conv then reads the words directly (``packed: true``): no unpacking between binary layers.
"""

from __future__ import annotations

import numpy as np

from seglearn.runtime.checks import INT32_MAX, INT32_MIN

_BIT_PATH = ("maxpool", "upsample", "concat")


def _readers(ops: list[dict]) -> dict[str, list[int]]:
    r: dict[str, list[int]] = {}
    for i, op in enumerate(ops):
        for t in op["in"]:
            r.setdefault(t, []).append(i)
    return r


def fuse_int8_requant(ops: list[dict], arrays: dict, keep: set) -> list[dict]:
    """Rewrite 1 of the module docstring."""
    readers = _readers(ops)
    drop: set[int] = set()
    out = list(ops)
    for i, op in enumerate(ops):
        rd = readers.get(op["out"], [])
        if op["op"] != "conv_int8" or op["out"] in keep or len(rd) != 1:
            continue
        rq = ops[rd[0]]
        if rq["op"] != "requant" or np.any(arrays[rq["arrays"]["in_shift"]] != 0):
            continue
        sign = arrays[rq["arrays"]["sign"]].astype(np.int8)
        w = arrays[op["arrays"]["w"]].astype(np.int8) * sign[:, None, None, None]
        name = rq["out"]
        refs = {}
        for role, a in (("w", w), ("bias", arrays[rq["arrays"]["bias"]]),
                        ("M0", arrays[rq["arrays"]["M0"]]), ("shift", arrays[rq["arrays"]["shift"]])):
            refs[role] = f"{name}.{role}"
            arrays[refs[role]] = np.ascontiguousarray(a)
        a = rq["attrs"]
        out[i] = {"op": "conv_int8_requant", "in": op["in"], "out": name, "arrays": refs,
                  "attrs": {"zp": op["attrs"]["zp"], "padding": op["attrs"]["padding"],
                            "y_zp": a["zp"], "lo": a["lo"], "hi": a["hi"]}}
        drop.add(rd[0])
    return [op for j, op in enumerate(out) if j not in drop]


def _bit_tensors(ops: list[dict], arrays: dict, keep: set) -> dict[str, int]:
    """Tensors of +-1 codes that only binary convs read: ``{name: channels}``."""
    chans: dict[str, int] = {}
    for op in ops:
        if op["op"] == "threshold" and arrays[op["arrays"]["t"]].shape[1] == 1:
            chans[op["out"]] = int(arrays[op["arrays"]["t"]].shape[0])
        elif op["op"] in _BIT_PATH and op["in"] and all(t in chans for t in op["in"]):
            chans[op["out"]] = sum(chans[t] for t in op["in"])
    readers = _readers(ops)
    changed = True
    while changed:  # drop any tensor read by something that is not binary (or a dropped bit op)
        changed = False
        for op in ops:
            if op["out"] in chans and op["op"] in _BIT_PATH and not all(t in chans for t in op["in"]):
                del chans[op["out"]]
                changed = True
        for t in list(chans):
            ok = t not in keep and all(
                ops[j]["op"] == "conv_binary" or (ops[j]["op"] in _BIT_PATH and ops[j]["out"] in chans)
                for j in readers.get(t, []))
            if not ok:
                del chans[t]
                changed = True
    return chans


def pack_binary_chains(ops: list[dict], arrays: dict, keep: set) -> list[dict]:
    """Rewrite 2 of the module docstring."""
    bits = _bit_tensors(ops, arrays, keep)
    readers = _readers(ops)
    by_out = {op["out"]: i for i, op in enumerate(ops)}
    out: list[dict | None] = [dict(op, attrs=dict(op["attrs"]), arrays=dict(op["arrays"])) for op in ops]
    for i, op in enumerate(ops):
        kind = op["op"]
        if kind == "conv_binary" and op["in"][0] in bits:
            out[i]["attrs"]["packed"] = True
        if op["out"] not in bits:
            continue
        if kind == "maxpool":
            out[i]["op"] = "maxpool_packed"
        elif kind == "concat":
            out[i]["op"] = "concat_packed"
            out[i]["attrs"]["channels"] = [bits[t] for t in op["in"]]
        elif kind == "threshold":
            t = arrays[op["arrays"]["t"]][:, 0].astype(np.int64)
            d = arrays[op["arrays"]["direction"]].astype(np.int8)
            tau = np.clip(np.where(d > 0, t + 1, t - 1), INT32_MIN, INT32_MAX).astype(np.int32)
            arrays[op["out"] + ".tau"] = tau
            src = by_out.get(op["in"][0])
            fuse = src is not None and ops[src]["op"] == "conv_binary" and \
                readers.get(ops[src]["out"]) == [i] and ops[src]["out"] not in keep
            if fuse:
                conv = out[src]
                out[i] = {"op": "conv_binary_threshold", "in": conv["in"], "out": op["out"],
                          "attrs": conv["attrs"], "arrays": {"wp": conv["arrays"]["wp"],
                                                             "tau": op["out"] + ".tau",
                                                             "direction": op["arrays"]["direction"]}}
                out[src] = None
            else:
                out[i] = {"op": "threshold_pack", "in": op["in"], "out": op["out"], "attrs": {},
                          "arrays": {"tau": op["out"] + ".tau", "direction": op["arrays"]["direction"]}}
    return [op for op in out if op is not None]


def dedupe(ops: list[dict], arrays: dict, keep: set) -> list[dict]:
    """Merge ops of one kind on the same inputs with equal attrs and equal arrays (e.g. the sign
    thresholds of a skip tensor read by two BinaryNet quantizers): later readers use the first."""
    seen: dict = {}
    alias: dict[str, str] = {}
    out = []
    for op in ops:
        op = dict(op, **{"in": [alias.get(t, t) for t in op["in"]]})
        key = (op["op"], tuple(op["in"]), repr(sorted(op["attrs"].items())))
        match = None
        for prev in seen.get(key, []):
            if prev["arrays"].keys() == op["arrays"].keys() and all(
                    np.array_equal(arrays[prev["arrays"][r]], arrays[n]) and
                    arrays[prev["arrays"][r]].dtype == arrays[n].dtype for r, n in op["arrays"].items()):
                match = prev
                break
        if match is not None and op["out"] not in keep:
            alias[op["out"]] = match["out"]
            continue
        seen.setdefault(key, []).append(op)
        out.append(op)
    return out


def optimize(ops: list[dict], arrays: dict, keep: set) -> tuple[list[dict], dict]:
    """Apply both rewrites; ``keep``: tensors that must stay as they are (graph outputs)."""
    arrays = dict(arrays)
    ops = dedupe(ops, arrays, keep)
    ops = fuse_int8_requant(ops, arrays, keep)
    ops = pack_binary_chains(ops, arrays, keep)
    used = {name for op in ops for name in op["arrays"].values()}
    return ops, {k: v for k, v in arrays.items() if k in used}
