"""QDQ ONNX export of seglearn's quantized FCN, for ONNX Runtime users (built with ``onnx.helper``).

The graph is the torch fake-quant model written in the ONNX "QDQ" form that ONNX Runtime turns
into int8 kernels (QLinearConv & co.):

- input ``image`` float (N, 3, H, W) in [0, 1], H and W dynamic (multiples of ``model.multiple``);
  output ``logits`` float (N, C, H, W).
- each conv's input activation: ``QuantizeLinear -> DequantizeLinear`` with the consumer quantizer's
  uint8 ``(S, Z)`` (IAO, Jacob et al. 2018, arXiv 1712.05877: ``q = clamp(round(x / S) + Z)``,
  ``r = S (q - Z)``). Another scheme's round-to-nearest affine levels with ``n < 256`` codes get
  a ``Clip`` to ``[-S Z, S (n - 1 - Z)]`` in front (``export.requant.affine_rounding`` checks the
  rounding on the quantizer itself). BinaryNet's sign is ``Where(x >= 0, a, -a)``. Max pool,
  resize and concat are re-quantized with the same ``(S, Z)`` (exact: they commute with Q), so
  every op ONNX Runtime can run in int8 sits between a DequantizeLinear and a QuantizeLinear.
- weights: ``DequantizeLinear`` of int8 initializers, per output channel (axis 0 for Conv, 1 for
  ConvTranspose), batch norm folded: ``W = S_w k W_int``, ``b = beta + k (b - mu)``,
  ``k = gamma / sqrt(var + eps)`` (a negative ``k`` flips the int8 codes, scales stay positive).
  ``W_int`` comes from the weight quantizer's QuantInfo and must reproduce the fake-quant weight
  exactly with ``|W_int| <= 127``; otherwise (CLIP-Q bin means, SYQ per-position scales, 7-bit INQ
  powers of two, ...) :class:`OnnxExportError` names the scheme. Float (unquantized) convs stay float.
- ReLU, MaxPool(2, 2), Resize(nearest, asymmetric, floor) = torch's nearest x2, or ConvTranspose
  2x2/2, Concat, and the 1x1 head with its float bias.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from torch import nn

from seglearn import atomic
from seglearn.export.bnfold import conv_bias
from seglearn.export.encode import encode_act, exact_codes, fake_quant_weight
from seglearn.export.lower import LoweringError, _block, act_levels
from seglearn.export.requant import affine_rounding

OPSET = 13  # per-channel DequantizeLinear
IR_VERSION = 7
SUPPORTED_SCHEMES: tuple[str, ...] = (
    "weights exactly per-channel scale x int8 codes (e.g. iao, binarynet, twn) or float",
    "activations with round-to-nearest uint8 affine levels (e.g. iao, dorefa), binarynet sign, or float",
)


class OnnxExportError(ValueError):
    """The model cannot be written as a QDQ ONNX graph (named scheme / layer)."""


class _Graph:
    def __init__(self):
        # lazy: onnx, an optional dependency, only when a QDQ ONNX file is built
        from onnx import helper, numpy_helper

        self.h, self.nh = helper, numpy_helper
        self.nodes, self.inits = [], []
        self._n = 0
        self.counts: dict[str, int] = {}

    def name(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}_{self._n}"

    def const(self, a: np.ndarray, prefix: str = "c") -> str:
        n = self.name(prefix)
        self.inits.append(self.nh.from_array(np.asarray(a), n))
        return n

    def node(self, op: str, ins: list[str], **attrs) -> str:
        out = self.name(op.lower())
        self.nodes.append(self.h.make_node(op, ins, [out], name=out, **attrs))
        self.counts[op] = self.counts.get(op, 0) + 1
        return out


def _act_spec(q, cin: int, method: str) -> dict | None:
    """How to quantize a conv input for quantizer ``q``: None (float), affine QDQ or sign."""
    if q is None:
        return None
    q.eval()
    try:
        lv = act_levels(q, cin)
    except LoweringError as e:
        raise OnnxExportError(f"{method} activations: {e}") from None
    bits = max(1, math.ceil(math.log2(lv.shape[1])))
    enc = encode_act(lv, bits)
    if enc.kind == "pm1":
        return {"kind": "sign", "a": enc.s_x, "id": id(q)}
    aff = affine_rounding(q, lv)
    if aff is None:
        raise OnnxExportError(
            f"{method} activations (levels {enc.kind}, {lv.shape[1]} codes) are not round-to-nearest "
            "uint8 affine levels, which is all QuantizeLinear can express; QDQ ONNX export supports "
            + "; ".join(SUPPORTED_SCHEMES))
    s, z, n = aff
    return {"kind": "affine", "s": s, "z": z, "n": n, "id": id(q)}


class _Exporter:
    def __init__(self):
        self.g = _Graph()
        self._qcache: dict = {}

    def quantize(self, x: str, spec: dict | None) -> str:
        """``x`` fake-quantized for ``spec`` (cached per tensor and quantizer)."""
        if spec is None:
            return x
        key = (x, spec["id"])
        if key in self._qcache:
            return self._qcache[key]
        g = self.g
        if spec["kind"] == "sign":
            a = np.float32(spec["a"])
            ge = g.node("GreaterOrEqual", [x, g.const(np.array(0.0, np.float32))])  # sign(0) = +1
            out = g.node("Where", [ge, g.const(np.array(a, np.float32)), g.const(np.array(-a, np.float32))])
        else:
            s, z, n = spec["s"], spec["z"], spec["n"]
            if n < 256:
                x = g.node("Clip", [x, g.const(np.array(-s * z, np.float32)),
                                    g.const(np.array(s * (n - 1 - z), np.float32))])
            sc, zp = g.const(np.array(s, np.float32), "scale"), g.const(np.array(z, np.uint8), "zp")
            out = g.node("DequantizeLinear", [g.node("QuantizeLinear", [x, sc, zp]), sc, zp])
        self._qcache[key] = out
        return out

    def weights(self, conv: nn.Module, name: str, bn) -> tuple[str, str]:
        """(weight tensor name, bias name): int8 DequantizeLinear per channel, BN folded."""
        g = self.g
        transposed = isinstance(conv, nn.ConvTranspose2d)
        w_fq = fake_quant_weight(conv).double().cpu().numpy()  # (out, in, kh, kw)
        cout = w_fq.shape[0]
        k = np.ones(cout)
        bias = conv_bias(conv)
        if isinstance(bn, nn.BatchNorm2d):
            var = bn.running_var.detach().double().numpy()
            mu = bn.running_mean.detach().double().numpy()
            gam = bn.weight.detach().double().numpy() if bn.affine else np.ones(cout)
            beta = bn.bias.detach().double().numpy() if bn.affine else np.zeros(cout)
            k = gam / np.sqrt(var + bn.eps)
            bias = beta + k * (bias - mu)
        if getattr(conv, "weight_quant", None) is None:
            wf = w_fq * k[:, None, None, None]
            wf = wf.transpose(1, 0, 2, 3) if transposed else wf
            return g.const(wf.astype(np.float32), "w"), g.const(bias.astype(np.float32), "b")
        method = conv.weight_quant.method
        cand = exact_codes(conv, w_fq)
        if cand is None or np.abs(cand[0]).max() > 127:
            raise OnnxExportError(
                f"layer {name!r}: {method} weights are not exactly per-channel scale x int8 codes "
                "(|code| <= 127), so they cannot be int8 DequantizeLinear initializers; QDQ ONNX "
                "export supports " + "; ".join(SUPPORTED_SCHEMES))
        w_int, s_w = cand
        flip = np.where(k < 0, -1, 1)
        scale = np.abs(s_w * k)
        dead = scale == 0  # all-zero channel or gamma = 0: codes 0, any positive scale
        scale = np.where(dead, 1.0, scale)
        codes = np.where(dead[:, None, None, None], 0, w_int * flip[:, None, None, None])
        axis = 0
        if transposed:
            codes, axis = codes.transpose(1, 0, 2, 3), 1
        wq = g.const(codes.astype(np.int8), "wq")
        w = g.node("DequantizeLinear", [wq, g.const(scale.astype(np.float32), "ws"),
                                        g.const(np.zeros(cout, np.int8), "wz")], axis=axis)
        return w, g.const(bias.astype(np.float32), "b")

    def conv(self, conv: nn.Module, name: str, parts: list[tuple[str, tuple]], bn, relu: bool) -> str:
        """Quantize every input part for this conv's quantizer, apply its spatial ops, concat, conv."""
        cin = conv.in_channels
        q = getattr(conv, "act_quant", None)
        spec = _act_spec(q, cin, getattr(q, "method", "float"))
        xs = []
        for x, spatial in parts:
            t = self.quantize(x, spec)
            for sp in spatial:
                if sp == "maxpool":
                    t = self.g.node("MaxPool", [t], kernel_shape=[2, 2], strides=[2, 2])
                else:
                    t = self.g.node("Resize", [t, "", self.g.const(np.array([1, 1, 2, 2], np.float32))],
                                    mode="nearest", coordinate_transformation_mode="asymmetric",
                                    nearest_mode="floor")
                t = self.requantize(t, spec)
            xs.append(t)
        x = xs[0] if len(xs) == 1 else self.requantize(self.g.node("Concat", xs, axis=1), spec)
        w, b = self.weights(conv, name, bn)
        if isinstance(conv, nn.ConvTranspose2d):
            y = self.g.node("ConvTranspose", [x, w, b], kernel_shape=[2, 2], strides=[2, 2])
        else:
            kk = conv.kernel_size[0]
            p = kk // 2
            y = self.g.node("Conv", [x, w, b], kernel_shape=[kk, kk], pads=[p, p, p, p])
        return self.g.node("Relu", [y]) if relu else y

    def requantize(self, t: str, spec: dict | None) -> str:
        """Q/DQ again after a max pool, resize or concat of codes (exact; lets ORT keep them int8)."""
        if spec is None or spec["kind"] != "affine":
            return t
        g = self.g
        sc = g.const(np.array(spec["s"], np.float32), "scale")
        zp = g.const(np.array(spec["z"], np.uint8), "zp")
        return g.node("DequantizeLinear", [g.node("QuantizeLinear", [t, sc, zp]), sc, zp])


def _walk(model: nn.Module, ex: _Exporter) -> str:
    """seglearn's FCN (as ``lower.lower_fcn`` walks it) -> the logits tensor name."""
    x, parts, skips = "image", [("image", ())], []
    for i, stage in enumerate(model.enc):
        if i:
            parts = [(x, ("maxpool",))]
        for j, blk in enumerate(stage):
            conv, bn, relu = _block(blk)
            x = ex.conv(conv, f"enc.{i}.{j}.0", parts, bn, relu)
            parts = [(x, ())]
        skips.append(x)
    for d, (up, skip) in enumerate(zip(model.dec, reversed(skips[:-1]))):
        if isinstance(up.up, nn.ConvTranspose2d):
            first = (ex.conv(up.up, f"dec.{d}.up", [(x, ())], None, False), ())
        else:
            first = (x, ("upsample",))
        parts = [first, (skip, ())]
        for j, blk in enumerate(up.conv):
            conv, bn, relu = _block(blk)
            x = ex.conv(conv, f"dec.{d}.conv.{j}.0", parts, bn, relu)
            parts = [(x, ())]
    return ex.conv(model.head, "head", parts, None, False)


def build_onnx(model: nn.Module):
    """The QDQ ``onnx.ModelProto`` of seglearn's FCN ``model`` (eval mode); see the module docstring."""
    for attr in ("enc", "dec", "head", "depth"):
        if not hasattr(model, attr):
            raise OnnxExportError(f"ONNX export supports seglearn's FCN; {type(model).__name__} has no {attr!r}")
    # lazy: onnx, an optional dependency, only when a QDQ ONNX file is built
    import onnx
    from onnx import TensorProto, helper

    was_training = model.training
    model.eval()
    try:
        ex = _Exporter()
        logits = _walk(model, ex)
    finally:
        model.train(was_training)
    g = ex.g
    g.nodes.append(helper.make_node("Identity", [logits], ["logits"], name="logits"))
    inp = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", model.in_channels, "H", "W"])
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", model.out_channels, "H", "W"])
    graph = helper.make_graph(g.nodes, "seglearn_fcn_qdq", [inp], [out], initializer=g.inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="seglearn")
    proto.ir_version = IR_VERSION
    proto.doc_string = (f"seglearn FCN (width {model.width}, depth {model.depth}) as QDQ ONNX; input "
                        f"float image in [0, 1], H and W multiples of {model.multiple}")
    onnx.checker.check_model(proto)
    return proto, g.counts


def export_onnx(model: nn.Module, out: str | Path) -> dict:
    """Write ``model`` (seglearn's FCN, quantized or not) as a QDQ ONNX file ``out``; returns a summary."""
    # lazy: onnx, an optional dependency, only when a QDQ ONNX file is built
    import onnx

    proto, counts = build_onnx(model)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_bytes(out, proto.SerializeToString())  # temp + fsync + rename
    return {"path": str(out), "format": "onnx", "opset": OPSET, "ops": counts,
            "multiple": int(model.multiple), "bytes": out.stat().st_size,
            "input": "image float32 (N, 3, H, W) in [0, 1]", "output": "logits float32 (N, C, H, W)"}
