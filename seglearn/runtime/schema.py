"""The schema of ``graph.json``: everything a .slq file says is checked before anything runs.

A .slq file may come from anyone (issue 19, item 8), so ``validate_graph`` refuses, with one
``GraphError`` naming the field (``ops[3].attrs.zp``, ``scale``, ``decisions.fg.channel`` ...):

* model fields: ``multiple`` in [1, 1024], ``halo`` in [0, 1024], ``in_channels`` = 3, ``scale`` a
  finite number in [2^-10, 4] (``data.scale`` is at most 4), ``postprocess`` a valid
  ``PostprocessConfig`` table, ``decisions`` (``fg`` required) with an existing head channel, an
  integer threshold and a direction of +-1;
* ops: at most ``MAX_OPS``, each a known kind with the right number of inputs, every input written
  before it is read, every output a new name, every attribute of the right type and range, every
  array role present and resolved;
* tensor types, propagated op by op: uint8 codes (with their largest possible code), int32
  accumulators or packed bits, a channel count and a pooling level. Inputs must have the kind the
  op reads (a table covers every code that can reach it, bit planes hold every code), concat
  inputs share a level, the level stays in [0, 10] and ``2^level`` divides ``multiple`` (so every
  max-pool is exact), each tensor has at most ``MAX_CHANNELS * 4^level`` channels (bounded memory
  per pixel), and ``outputs.logits`` is an accumulator at full resolution;
* array shapes, dtypes, values and the accumulator bound of every conv: each op is run once by its
  reference kernel on a 2x2 input of zeros, so the kernels' own checks (``checks.py``: shapes
  against the input channels, the worst-case ``|acc|`` proof against int32, ascending thresholds,
  +-1 directions ...) run at load time on exactly the arrays that will run, and an overflow is
  refused naming the layer. The output's shape gives the op's channels and level (a conv must be
  'same': the output keeps the input's size).

Only tiny dummy tensors are allocated; the arrays themselves were bounded by ``slq.read_slq``.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from seglearn.postprocess import PostprocessConfig
from seglearn.runtime.bitpack import BitpackError, nwords
from seglearn.runtime.checks import INT32_MAX, INT32_MIN
from seglearn.runtime.graph import GraphError
from seglearn.runtime.ops import MAX_KERNEL, OPS

MAX_OPS = 4096
MAX_CHANNELS = 256   # per tensor at full resolution, 4x more per pooling level (seglearn's FCNs: 2 x width)
MAX_LEVEL = 10
SCALE_RANGE = (2.0**-10, 4.0)
# The op kinds and what is checked of each are ``ops.OPS[kind].spec`` (read at every check, so the
# table is the one list). SPECS / CONVS: the same as this module's old names, for readers of those.
SPECS: dict[str, tuple] = {k: (op.spec.n_in, op.spec.reads, op.spec.attrs, op.spec.arrays)
                           for k, op in OPS.items()}
CONVS = tuple(k for k, op in OPS.items() if op.spec.conv)


@dataclass(frozen=True)
class Tensor:
    """Static type of a tensor: ``kind`` codes (uint8) | acc (int32) | packed (uint64 words of
    ``c`` bits), ``c`` channels, pooling ``level`` (side = input side / 2^level), ``vmax`` the
    largest code that can occur (codes only)."""

    kind: str
    c: int
    level: int
    vmax: int = 0


def _fail(msg: str):
    raise GraphError(msg)


def is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def int_field(d: dict, key: str, where: str, lo: int, hi: int, default=None) -> int:
    """``d[key]`` as an int in ``[lo, hi]`` (``default`` when absent and a default is given)."""
    if key not in d:
        if default is None:
            _fail(f"{where}{key} is missing")
        return default
    v = d[key]
    if not is_int(v) or not lo <= v <= hi:
        _fail(f"{where}{key} must be an integer in [{lo}, {hi}], got {v!r}")
    return int(v)


def _dict_field(d: dict, key: str, where: str, required: bool = True) -> dict:
    v = d.get(key, None if required else {})
    if not isinstance(v, dict):
        _fail(f"{where}{key} must be an object, got {'nothing' if v is None else type(v).__name__}")
    return v


# ----------------------------------------------------------------------------- model fields

def _model_fields(graph: dict) -> int:
    """Check the fields ``SlqModel`` reads; returns ``multiple``."""
    multiple = int_field(graph, "multiple", "", 1, 1024, default=1)
    int_field(graph, "halo", "", 0, 1024, default=0)  # the exporter's depth-7 halo is 768
    if graph.get("in_channels", 3) != 3 or isinstance(graph.get("in_channels", 3), bool):
        _fail(f"in_channels must be 3 (RGB; grayscale is repeated), got {graph.get('in_channels')!r}")
    s = graph.get("scale", 1.0)
    lo, hi = SCALE_RANGE
    if isinstance(s, bool) or not isinstance(s, numbers.Real) or not (math.isfinite(s) and lo <= s <= hi):
        _fail(f"scale must be a number in [{lo:g}, {hi:g}], got {s!r}")
    pp = _dict_field(graph, "postprocess", "", required=False)
    try:  # the runtime overrides the probability thresholds (they became integer decisions)
        PostprocessConfig.from_dict(dict(pp, fg_threshold=0.5, contour_threshold=0.5),
                                    where="postprocess")
    except (TypeError, ValueError) as e:
        _fail(str(e))  # names the key: "postprocess: postprocess.min_area must be ..."
    return multiple


def _decisions(graph: dict, logits: Tensor) -> None:
    dec = _dict_field(graph, "decisions", "")
    if "fg" not in dec:
        _fail("decisions has no foreground ('fg') threshold")
    for name, d in dec.items():
        where = f"decisions.{name}."
        if not isinstance(d, dict):
            _fail(f"decisions.{name} must be an object, got {type(d).__name__}")
        int_field(d, "channel", where, 0, logits.c - 1)
        int_field(d, "t", where, -(2**32), 2**32)
        if d.get("direction") not in (1, -1) or isinstance(d.get("direction"), bool):
            _fail(f"{where}direction must be 1 or -1, got {d.get('direction')!r}")


# ----------------------------------------------------------------------------- ops

def _dummy(t: Tensor) -> np.ndarray:
    """A 2x2 tensor of zeros of type ``t`` (the dry run's input)."""
    if t.kind == "packed":
        return np.zeros((2, 2, nwords(t.c)), np.uint64)
    return np.zeros((2, 2, t.c), np.uint8 if t.kind == "codes" else np.int32)


def _attrs(kind: str, at: dict, where: str, ins: list[Tensor]) -> None:
    for key, rule in OPS[kind].spec.attrs.items():
        name = key.rstrip("?")
        if rule is bool:
            if name in at and not isinstance(at[name], bool):
                _fail(f"{where}attrs.{name} must be true or false, got {at[name]!r}")
        elif rule is list:
            v = at.get(name)
            if not isinstance(v, list) or len(v) != len(ins) or not all(is_int(c) for c in v):
                _fail(f"{where}attrs.{name} must list one integer channel count per input, got {v!r}")
            if v != [t.c for t in ins]:
                _fail(f"{where}attrs.{name} is {v} but the inputs have {[t.c for t in ins]} channels")
        else:
            int_field(at, name, f"{where}attrs.", *rule, default=0 if name == "padding" else None)


def _input_kinds(kind: str, at: dict, ins: list[Tensor], A: dict, where: str) -> None:
    want = OPS[kind].spec.reads
    if kind.startswith("conv_binary"):
        want = "packed" if at.get("packed") else "codes"
    for j, t in enumerate(ins):
        if t.kind not in want.split("|"):
            _fail(f"{where}in[{j}] is {t.kind}, but {kind} reads {want}")
    if len({t.level for t in ins}) > 1:
        _fail(f"{where}inputs are at different resolutions (levels {[t.level for t in ins]})")
    x = ins[0]
    if kind.startswith("conv_binary"):
        if not at.get("packed") and x.vmax > 1:
            _fail(f"{where}reads codes up to {x.vmax} as 0/1 bits")
        if at["cin"] != x.c:
            _fail(f"{where}attrs.cin is {at['cin']} but the input has {x.c} channels")
    if kind in ("conv_ternary", "conv_offset") and x.vmax >= 2 ** at["bits"]:
        _fail(f"{where}input codes reach {x.vmax}, more than attrs.bits={at['bits']} bits hold")
    if "table" in A:
        table = A["table"]
        if table.ndim not in (1, 2):  # (a 0-d table would be widened to one entry by the kernel)
            _fail(f"{where}arrays.table must have 1 or 2 axes, got shape {table.shape}")
        if kind == "lut_u8" and table.dtype != np.uint8:
            _fail(f"{where}arrays.table must be uint8, got {table.dtype}")
        if table.shape[-1] <= x.vmax:
            _fail(f"{where}arrays.table has {table.shape[-1]} entries but codes reach {x.vmax}")
    if kind in ("conv_lut", "convt_lut"):  # the kernels cast both to int32: values must fit
        for role in ("table", "w"):
            a = A[role]
            if a.dtype.kind not in "iu" or (a.size and (a.min() < INT32_MIN or a.max() > INT32_MAX)):
                _fail(f"{where}arrays.{role} must hold int32 values, got {a.dtype}")
    for role in ("w", "wp", "wsign", "wpos", "wplanes"):
        a = A.get(role)
        if a is not None and a.ndim >= 3 and (a.shape[-3] > MAX_KERNEL or a.shape[-2] > MAX_KERNEL):
            _fail(f"{where}arrays.{role} has a {a.shape[-3]}x{a.shape[-2]} kernel (at most {MAX_KERNEL})")


def _out_type(kind: str, at: dict, ins: list[Tensor], A: dict, out: np.ndarray, where: str) -> Tensor:
    x = ins[0]
    side = out.shape[0] if out.ndim == 3 and out.shape[0] == out.shape[1] else -1
    level = {1: x.level + 1, 2: x.level, 4: x.level - 1}.get(side)
    if level is None:
        _fail(f"{where}changes a 2x2 input to {out.shape[:2]} (convs must keep the size: padding = k // 2)")
    if out.dtype == np.uint8:
        if kind == "lut_u8":
            vmax = int(A["table"].max()) if A["table"].size else 0
        elif kind == "threshold":
            vmax = A["t"].shape[1]  # L - 1 thresholds: codes 0 .. L - 1
        elif kind in ("requant", "conv_int8_requant"):
            vmax = at["hi"]
        else:
            vmax = max(t.vmax for t in ins)
        return Tensor("codes", out.shape[2], level, vmax)
    if out.dtype == np.uint64:
        c = x.c  # threshold_pack, maxpool_packed
        if kind == "concat_packed":
            c = sum(t.c for t in ins)
        elif kind == "conv_binary_threshold":
            c = A["wp"].shape[0]
        return Tensor("packed", c, level)
    return Tensor("acc", out.shape[2], level)


def _is_conv(kind) -> bool:
    return isinstance(kind, str) and kind in OPS and OPS[kind].spec.conv


def _layer_names(graph: dict, ops: list) -> dict[int, str]:
    """Op index -> layer name, when ``graph['layers']`` lists one entry per conv op (as exported)."""
    layers = graph.get("layers")
    convs = [i for i, op in enumerate(ops) if isinstance(op, dict) and _is_conv(op.get("op"))]
    if not isinstance(layers, list) or len(layers) != len(convs):
        return {}
    return {i: str(ly["name"]) for i, ly in zip(convs, layers) if isinstance(ly, dict) and "name" in ly}


def _check_op(i: int, op, env: dict, arrays: dict, layer: str | None) -> tuple[str, Tensor]:
    if not isinstance(op, dict):
        _fail(f"ops[{i}] must be an object, got {type(op).__name__}")
    kind = op.get("op")
    if not isinstance(kind, str) or kind not in OPS:
        _fail(f"ops[{i}].op: unknown op kind {kind!r}")
    out = op.get("out")
    where = f"ops[{i}] ({kind}{' -> ' + out if isinstance(out, str) else ''}" \
            f"{', layer ' + layer if layer else ''}) "
    if not isinstance(out, str) or not out:
        _fail(f"{where}has no output tensor name ('out')")
    if out in env:
        _fail(f"{where}writes tensor {out!r} a second time")
    names = op.get("in")
    if not isinstance(names, list) or not all(isinstance(t, str) for t in names):
        _fail(f"{where}'in' must be a list of tensor names, got {names!r}")
    n = OPS[kind].spec.n_in
    if (n is None and not names) or (n is not None and len(names) != n):
        _fail(f"{where}needs {n or 'one or more'} input(s), got {len(names)}")
    for t in names:
        if t not in env:
            _fail(f"{where}reads tensor {t!r} before it is written")
    at = op.get("attrs", {})
    refs = op.get("arrays", {})
    if not isinstance(at, dict) or not isinstance(refs, dict):
        _fail(f"{where}'attrs' and 'arrays' must be objects")
    ins = [env[t] for t in names]
    _attrs(kind, at, where, ins)
    A = {}
    for role in OPS[kind].spec.arrays:
        name = refs.get(role)
        if role not in refs:
            _fail(f"{where}arrays.{role} is missing")
        if not isinstance(name, str) or name not in arrays:
            _fail(f"{where}arrays.{role} names array {name!r}, which is not in the file")
        if arrays[name].size == 0:
            _fail(f"{where}arrays.{role}: array {name!r} is empty (shape {arrays[name].shape})")
        A[role] = arrays[name]
    _input_kinds(kind, at, ins, A, where)
    try:  # the kernels' own checks, on the arrays that will run (the accumulator bound among them)
        res = OPS[kind].ref([_dummy(t) for t in ins], A, at)
    except (ValueError, BitpackError, TypeError, IndexError) as e:  # KernelError is a ValueError
        _fail(f"{where}{e}")
    t = _out_type(kind, at, ins, A, res, where)
    if not 0 <= t.level <= MAX_LEVEL:
        _fail(f"{where}takes the resolution to level {t.level} (must stay in [0, {MAX_LEVEL}])")
    if t.c > MAX_CHANNELS * 4**t.level:
        _fail(f"{where}has {t.c} channels at level {t.level} (at most {MAX_CHANNELS * 4**t.level})")
    return out, t


def validate_graph(graph: dict, arrays: dict) -> dict[str, Tensor]:
    """Check all of ``graph`` (see the module docstring); returns ``{output name: Tensor}``.

    Raises ``GraphError`` with one message naming the field.
    """
    if not isinstance(graph, dict):
        _fail("graph must be an object")
    multiple = _model_fields(graph)
    ops = graph.get("ops")
    if not isinstance(ops, list) or not ops:
        _fail("graph has no ops")
    if len(ops) > MAX_OPS:
        _fail(f"graph has {len(ops)} ops (at most {MAX_OPS})")
    layers = _layer_names(graph, ops)
    env = {"image": Tensor("codes", 3, 0, 255)}
    for i, op in enumerate(ops):
        name, t = _check_op(i, op, env, arrays, layers.get(i))
        if multiple % 2**t.level:
            _fail(f"ops[{i}] pools to level {t.level} but multiple={multiple} is not a multiple "
                  f"of {2**t.level}")
        env[name] = t
    outputs = _dict_field(graph, "outputs", "")
    if "logits" not in outputs:
        _fail("outputs has no 'logits' tensor")
    got = {}
    for k, v in outputs.items():
        if not isinstance(v, str) or v not in env:
            _fail(f"outputs.{k}: tensor {v!r} is never written")
        got[k] = env[v]
    lg = got["logits"]
    if lg.kind != "acc" or lg.level != 0:
        _fail(f"outputs.logits must be accumulators at full resolution, "
              f"got {lg.kind} at level {lg.level}")
    _decisions(graph, lg)
    return got
