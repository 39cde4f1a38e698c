"""The op table: every op kind of the integer graph in one place, ``OPS = {kind: Op(ref, fast, spec)}``.

An ``Op`` holds how the interpreter calls the kernels and what the schema checks:

* ``ref(ins, A, at)`` / ``fast(ins, A, at)``: run the op on its input tensors ``ins``, its arrays
  ``A`` (``{role: array}``) and its attributes ``at``; ``ref`` calls the numpy reference kernels of
  ``ops_ref``, ``fast`` the same-named numba/BLAS twins of ``ops_fast`` (which must return identical
  arrays: ``tests/runtime/test_ops_table.py`` runs both on every kind in this table);
* ``spec``: what ``schema.validate_graph`` checks before anything runs (number of inputs, the
  tensor kind read, attribute ranges, array roles, whether the op is a conv layer).

``graph.run`` and ``schema.validate_graph`` read only this table, so adding an op is one entry
here (and its kernels in ``ops_ref`` / ``ops_fast``). ``ops_fast`` (numba) is imported on the
first fast call, so validating or running the reference kernels never pays numba's import.
The op kinds themselves are described in ``graph``'s module docstring.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from seglearn.runtime import ops_ref
from seglearn.runtime.bitpack import bitplanes, pack_bits

MAX_KERNEL = 15      # conv kernel side (the exporter writes 1 and 3)
_U8 = (0, 255)
_PAD = (0, MAX_KERNEL // 2)


@dataclass(frozen=True)
class Spec:
    """What the schema checks of one op kind.

    n_in: number of inputs (None: one or more); reads: the input tensor kind(s), ``"codes"``,
    ``"acc"``, ``"packed"`` or alternatives joined by ``|``; attrs: ``{name: (lo, hi) | bool | list}``
    (a trailing ``?`` marks an optional bool); arrays: the array roles; conv: a layer (named by
    ``graph['layers']``).
    """

    n_in: int | None
    reads: str
    attrs: dict = field(default_factory=dict)
    arrays: tuple = ()
    conv: bool = False


Call = Callable[[list, dict, dict], np.ndarray]


@dataclass(frozen=True)
class Op:
    """One op kind: ``ref`` and ``fast`` run it (``(ins, A, at) -> array``), ``spec`` is checked."""

    ref: Call
    fast: Call
    spec: Spec
    # {next kind: (ins, A, at, nA, nat) -> output}: this conv and the op of that kind (arrays nA,
    # attrs nat) that alone reads its accumulators, run as one pass (fast kernels; ``graph.run``
    # fuses the pair where the graph has it)
    fast_fused: dict = field(default_factory=dict)
    # (ins, A, at, [(rA, rat), ...]) -> [output, ...]: this conv and the ``requant`` ops (arrays rA,
    # attrs rat) that are all its readers, in one pass whatever lies between them in the graph
    # (``graph.run``: an encoder conv read by the pooled path and by a skip on its own scale)
    fast_requants: Callable | None = None


def _fast_module():
    return importlib.import_module("seglearn.runtime.ops_fast")


def _op(run: Callable, spec: Spec, fast_fused: dict | None = None, fast_requants: Callable | None = None) -> Op:
    """``Op`` whose ``ref`` / ``fast`` call ``run(K, ins, A, at)`` with K = ``ops_ref`` / ``ops_fast``."""
    return Op(ref=lambda ins, A, at: run(ops_ref, ins, A, at),
              fast=lambda ins, A, at: run(_fast_module(), ins, A, at), spec=spec, fast_fused=fast_fused or {},
              fast_requants=fast_requants)


def _requants(readers: list) -> list:
    """``fast_requants``' ``[(rA, rat), ...]`` as the ``*_requants`` kernels take them."""
    return [_requant_args(rA, rat) for rA, rat in readers]


def _p(at: dict) -> int:
    return int(at.get("padding", 0))


def _bits_in(ins: list, at: dict) -> np.ndarray:
    """A binary conv's input as packed words (``attrs.packed``) or its 0/1 codes packed here."""
    return ins[0] if at.get("packed") else pack_bits(ins[0])


def _requant_args(A: dict, at: dict) -> tuple:
    """A ``requant`` op's arrays and attributes as the kernels take them after ``acc``."""
    return (A["sign"], A["bias"], A["M0"], A["shift"], int(at["zp"]), int(at["lo"]), int(at["hi"]), A["in_shift"])


_BIN = {"cin": (1, 1 << 20), "padding": _PAD, "packed?": bool}
_REQ = ("sign", "bias", "M0", "shift", "in_shift")

OPS: dict[str, Op] = {
    "lut_u8": _op(lambda K, ins, A, at: K.lut(ins[0], A["table"]).astype(np.uint8),
                  Spec(1, "codes", arrays=("table",))),
    "threshold": _op(lambda K, ins, A, at: K.multi_threshold(ins[0], A["t"], A["direction"]),
                     Spec(1, "acc", arrays=("t", "direction"))),
    "maxpool": _op(lambda K, ins, A, at: K.maxpool2x2(ins[0]), Spec(1, "codes")),
    # nearest x2 copies packed words as they are
    "upsample": _op(lambda K, ins, A, at: K.upsample2x(ins[0]), Spec(1, "codes|packed")),
    "concat": _op(lambda K, ins, A, at: np.concatenate(ins, axis=-1), Spec(None, "codes")),
    "conv_int8": _op(lambda K, ins, A, at: K.conv2d_int8(ins[0], int(at["zp"]), A["w"], None, 1, _p(at)),
                     Spec(1, "codes", {"zp": _U8, "padding": _PAD}, ("w",), conv=True),
                     fast_fused={"threshold_pack": lambda ins, A, at, nA, nat: _fast_module().conv2d_int8_threshold_pack(
                         ins[0], int(at["zp"]), A["w"], 1, _p(at), nA["tau"], nA["direction"])},
                     fast_requants=lambda ins, A, at, rs: _fast_module().conv2d_int8_requants(
                         ins[0], int(at["zp"]), A["w"], 1, _p(at), _requants(rs))),
    "conv_pow2": _op(lambda K, ins, A, at: K.pow2_conv2d(ins[0], int(at["zp"]), A["wsign"], A["wshift"],
                                                         None, 1, _p(at)),
                     Spec(1, "codes", {"zp": _U8, "padding": _PAD}, ("wsign", "wshift"), conv=True),
                     fast_fused={"requant": lambda ins, A, at, rA, rat: _fast_module().pow2_conv2d_requant(
                         ins[0], int(at["zp"]), A["wsign"], A["wshift"], 1, _p(at), *_requant_args(rA, rat))},
                     fast_requants=lambda ins, A, at, rs: _fast_module().pow2_conv2d_requants(
                         ins[0], int(at["zp"]), A["wsign"], A["wshift"], 1, _p(at), _requants(rs))),
    "conv_binary": _op(lambda K, ins, A, at: K.bconv2d(_bits_in(ins, at), A["wp"], int(at["cin"]), 1, _p(at)),
                       Spec(1, "codes|packed", _BIN, ("wp",), conv=True),
                       fast_fused={"threshold": lambda ins, A, at, nA, nat: _fast_module().bconv2d_multi_threshold(
                           _bits_in(ins, at), A["wp"], int(at["cin"]), nA["t"], nA["direction"], 1, _p(at))}),
    "conv_binary_threshold": _op(
        lambda K, ins, A, at: K.bconv2d_threshold(_bits_in(ins, at), A["wp"], int(at["cin"]), A["tau"],
                                                  A["direction"], 1, _p(at)),
        Spec(1, "codes|packed", _BIN, ("wp", "tau", "direction"), conv=True)),
    "threshold_pack": _op(lambda K, ins, A, at: K.threshold_pack(ins[0], A["tau"], A["direction"]),
                          Spec(1, "acc", arrays=("tau", "direction"))),
    "maxpool_packed": _op(lambda K, ins, A, at: K.maxpool2x2_packed(ins[0]), Spec(1, "packed")),
    "concat_packed": _op(lambda K, ins, A, at: K.concat_packed(ins, at["channels"]),
                         Spec(None, "packed", {"channels": list})),
    "requant": _op(lambda K, ins, A, at: K.requant(ins[0], *_requant_args(A, at)),
                   Spec(1, "acc", {"zp": _U8, "lo": _U8, "hi": _U8}, _REQ)),
    "conv_int8_requant": _op(
        lambda K, ins, A, at: K.conv2d_int8_requant(ins[0], int(at["zp"]), A["w"], A["bias"], A["M0"],
                                                    A["shift"], int(at["y_zp"]), int(at["lo"]), int(at["hi"]),
                                                    1, _p(at)),
        Spec(1, "codes", {"zp": _U8, "y_zp": _U8, "lo": _U8, "hi": _U8, "padding": _PAD},
             ("w", "bias", "M0", "shift"), conv=True)),
    # ref: bit planes and popcounts (the oracle); fast: one exact GEMM on the codes themselves
    "conv_ternary": Op(ref=lambda ins, A, at: ops_ref.ternary_conv2d(bitplanes(ins[0], int(at["bits"])), A["wpos"],
                                                                     A["wneg"], 1, _p(at)),
                       fast=lambda ins, A, at: _fast_module().ternary_conv2d_codes(ins[0], int(at["bits"]), A["wpos"],
                                                                                   A["wneg"], 1, _p(at)),
                       spec=Spec(1, "codes", {"bits": (1, 8), "padding": _PAD}, ("wpos", "wneg"), conv=True),
                       fast_fused={"requant": lambda ins, A, at, rA, rat: _fast_module().ternary_conv2d_codes_requant(
                           ins[0], int(at["bits"]), A["wpos"], A["wneg"], 1, _p(at), *_requant_args(rA, rat))},
                       fast_requants=lambda ins, A, at, rs: _fast_module().ternary_conv2d_codes_requants(
                           ins[0], int(at["bits"]), A["wpos"], A["wneg"], 1, _p(at), _requants(rs))),
    "conv_offset": _op(lambda K, ins, A, at: K.bitplane_conv2d_offset(bitplanes(ins[0], int(at["bits"])),
                                                                      A["wplanes"], 1, _p(at)),
                       Spec(1, "codes", {"bits": (1, 8), "padding": _PAD}, ("wplanes",), conv=True)),
    "conv_lut": _op(lambda K, ins, A, at: K.conv_lut(ins[0], A["table"], A["w"], _p(at)),
                    Spec(1, "codes", {"padding": _PAD}, ("table", "w"), conv=True)),
    "convt_int8": _op(lambda K, ins, A, at: K.conv_transpose2x2_int8(ins[0], int(at["zp"]), A["w"], None),
                      Spec(1, "codes", {"zp": _U8}, ("w",), conv=True)),
    "convt_lut": _op(lambda K, ins, A, at: K.convt_lut(ins[0], A["table"], A["w"]),
                     Spec(1, "codes", {}, ("table", "w"), conv=True)),
}
