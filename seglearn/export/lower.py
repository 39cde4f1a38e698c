"""Lower seglearn's quantized FCN to the integer graph of ``seglearn.runtime.graph``.

Walk (``FCN.forward_features``): encoder stages (two conv blocks, 2x2 max pool between stages),
decoder stages (nearest x2 or 2x2 transposed conv, concat with the skip, two conv blocks), 1x1 head.

Each conv becomes one integer conv op producing an int32 accumulator ``acc`` whose real
pre-activation is ``y = A acc + B`` per channel (``bnfold``). Its consumers read it through their
own input quantizer Q (``act_quant`` of the consuming conv): ``code = Q(relu(y))`` is monotone in
``acc`` (increasing when A > 0, decreasing when A < 0), hence exactly ``#{j : acc > T_j}`` (or
``acc < T_j``) for integer thresholds ``T`` (METHODS.md section 5). ``T`` is found by bisection on
the *torch quantizer itself*, evaluated in float32 as the model evaluates it, so the step positions
match the fake-quant model up to the float rounding of ``y``. A tensor consumed by two quantizers
(a U-Net skip) gets one threshold op per consumer; max pool and nearest upsampling act on codes
(they commute with a monotone quantizer); a concat joins codes of one consumer quantizer.
The image is the one float step: ``Q(p / 255)`` for the 256 values p becomes a lookup table.

Round-to-nearest affine consumers (IAO's uint8, and any quantizer whose codes are
``clamp(round(x / S) + Z)``) skip the 2^k - 1 thresholds: the gemmlowp requantizer
``clamp(Z + M (acc + bias))`` computes the same code with one multiply (``requant``; fused into
the int8 conv by ``optimize``). ``optimize`` also keeps chains of binary layers in packed bits.

Float activations (a scheme with ``act: null``) have no quantizer: ``export_model`` calibrates an
8-bit IAO quantizer per conv input on sample images (post-training quantization, approximate).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from seglearn.export.bnfold import affine_of_acc, conv_bias
from seglearn.export.encode import ActEnc, WeightEnc, encode_act, encode_weight
from seglearn.export.optimize import optimize
from seglearn.export.requant import requant_params
from seglearn.runtime.bitpack import bitplanes, pack_bits, pack_signs
from seglearn.runtime.checks import INT32_MAX


class LoweringError(ValueError):
    """A model or layer the integer runtime cannot represent."""


@dataclass
class Producer:
    """An int32 accumulator tensor and its real value ``y = A acc + B`` (then ReLU if ``relu``)."""

    name: str
    A: np.ndarray
    B: np.ndarray
    relu: bool
    bound: int
    channels: int
    image: bool = False


@dataclass
class Part:
    src: Producer
    spatial: tuple = ()


def quant_eval(q: nn.Module, x: np.ndarray) -> np.ndarray:
    """``q`` applied in float32 to ``x`` (C, n) laid out as an NCHW tensor (1, C, n, 1)."""
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None, :, :, None]
    with torch.no_grad():
        y = q(t)
    return y[0, :, :, 0].double().numpy()


def act_levels(q: nn.Module, cin: int) -> np.ndarray:
    """Real level of every code of ``q``, per input channel: (cin, L), ascending."""
    info = q.export_info(None)
    if info.levels is not None:
        lv = np.asarray(info.levels, dtype=np.float64)
    else:
        n = 2**int(info.bits)
        lv = float(info.scale) * (np.arange(n) - float(info.zero_point))
    lv = np.broadcast_to(lv if lv.ndim == 2 else lv[None, :], (cin, lv.shape[-1])).copy()
    if np.any(np.diff(lv, axis=1) <= 0):
        raise LoweringError(f"{info.method} activation levels are not increasing; the runtime "
                            "needs a monotone activation quantizer")
    return lv


def first_true(pred, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Vectorised bisection: smallest a in [lo, hi) with pred(a) true (hi if none), pred nondecreasing."""
    lo, hi = lo.astype(np.int64).copy(), hi.astype(np.int64).copy()
    while np.any(lo < hi):
        active = lo < hi
        mid = (lo + hi) // 2
        p = pred(mid)
        hi = np.where(active & p, mid, hi)
        lo = np.where(active & ~p, mid + 1, lo)
    return lo


def step_thresholds(decide, A: np.ndarray, shape: tuple, bound: int) -> tuple[np.ndarray, np.ndarray]:
    """Thresholds of a monotone boolean ``decide(acc) -> (C, n)`` over ``|acc| <= bound``.

    Increasing channels (A >= 0): ``decide = acc > T``; decreasing (A < 0): ``decide = acc < T``.
    Returns ``(T int64 (C, n), direction int8 (C,))``.
    """
    dec = (np.asarray(A) < 0)[:, None]
    lo = np.full(shape, -bound, np.int64)
    hi = np.full(shape, bound + 1, np.int64)
    first = first_true(lambda a: decide(a) ^ dec, lo, hi)
    t = np.where(dec, first, first - 1)
    t = np.clip(t, -INT32_MAX - 1, INT32_MAX)
    return t, np.where(dec[:, 0], -1, 1).astype(np.int8)


class Builder:
    """Collects ops and arrays; one method per lowered construct."""

    def __init__(self, calibrated: dict | None = None):
        self.ops: list[dict] = []
        self.arrays: dict[str, np.ndarray] = {}
        self.layers: list[dict] = []
        self.calibrated = calibrated or {}
        self._n = 0
        self._cache: dict = {}

    def _name(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}{self._n}"

    def emit(self, kind: str, ins: list[str], attrs: dict | None = None,
             arrays: dict[str, np.ndarray] | None = None) -> str:
        out = self._name(kind + "_")
        refs = {}
        for role, a in (arrays or {}).items():
            key = f"{out}.{role}"
            self.arrays[key] = np.ascontiguousarray(a)
            refs[role] = key
        self.ops.append({"op": kind, "in": ins, "out": out, "attrs": attrs or {}, "arrays": refs})
        return out

    # ------------------------------------------------------------------ activation quantization

    def act_quant(self, conv: nn.Module, name: str):
        q = getattr(conv, "act_quant", None)
        if q is None:
            q = self.calibrated.get(name)
        return q

    def _codes_of(self, part: Part, q, lv: np.ndarray, off: int) -> str:
        src = part.src
        key = (src.name, id(q), off)
        if key not in self._cache:
            if src.image:
                self._cache[key] = self._image_lut(q, lv, src.channels)
            else:
                rq = requant_params(src, q, lv) if q is not None else None
                self._cache[key] = self._requant(src, rq) if rq is not None else \
                    self._threshold(src, q, lv, off)
        t = self._cache[key]
        for sp in part.spatial:
            t = self.emit(sp, [t])
        return t

    def _image_lut(self, q, lv: np.ndarray, c: int) -> str:
        p = np.arange(256, dtype=np.float32) / np.float32(255.0)  # as torch's image / 255
        x = np.broadcast_to(p, (c, 256))
        v = quant_eval(q, x) if q is not None else x.astype(np.float64)
        mid = (lv[:, :-1] + lv[:, 1:]) / 2
        codes = (v[:, :, None] > mid[:, None, :]).sum(-1)
        return self.emit("lut_u8", ["image"], arrays={"table": codes.astype(np.uint8)})

    def _threshold(self, src: Producer, q, lv: np.ndarray, off: int) -> str:
        cin, nlev = lv.shape
        cp = src.channels
        mid = ((lv[:, :-1] + lv[:, 1:]) / 2)[off:off + cp]

        def decide(acc: np.ndarray) -> np.ndarray:  # code(acc) > j, per (channel, j)
            y = src.A[:, None] * acc + src.B[:, None]
            if src.relu:
                y = np.maximum(y, 0.0)
            if q is None:
                raise LoweringError("a float activation reached a conv input with no quantizer")
            x = np.zeros((cin, nlev - 1))
            x[off:off + cp] = y
            return quant_eval(q, x)[off:off + cp] > mid

        t, d = step_thresholds(decide, src.A, (cp, nlev - 1), src.bound)
        return self.emit("threshold", [src.name],
                         arrays={"t": np.sort(t, axis=1).astype(np.int32), "direction": d})

    def _requant(self, src: Producer, rq: dict) -> str:
        return self.emit("requant", [src.name], rq["attrs"], rq["arrays"])

    def quantize_parts(self, parts: list[Part], q, lv: np.ndarray) -> str:
        names, off = [], 0
        for part in parts:
            names.append(self._codes_of(part, q, lv, off))
            off += part.src.channels
        if off != lv.shape[0]:
            raise LoweringError(f"conv input has {off} channels but its quantizer has {lv.shape[0]}")
        return names[0] if len(names) == 1 else self.emit("concat", names)

    # ------------------------------------------------------------------ convs

    def conv(self, conv: nn.Module, name: str, parts: list[Part], bn: nn.Module | None,
             relu: bool) -> Producer:
        cin = sum(p.src.channels for p in parts)
        image = any(p.src.image for p in parts)
        # the image itself is exact (code = p) when the first conv has no quantizer: no calibration
        q = getattr(conv, "act_quant", None) if image else self.act_quant(conv, name)
        if q is None and not image:
            raise LoweringError(f"conv {name!r} has float input activations and no calibration: "
                                "pass calibration images to export_model(calib=...)")
        if q is not None:
            q.eval()
            lv = act_levels(q, cin)
        else:  # the float image p / 255 itself: 256 affine levels, code = p
            lv = np.broadcast_to(np.arange(256) / 255.0, (cin, 256)).copy()
        codes = self.quantize_parts(parts, q, lv)
        bits = max(1, math.ceil(math.log2(lv.shape[1])))
        enc = encode_act(lv, bits)
        transposed = isinstance(conv, nn.ConvTranspose2d)
        if transposed:
            self._check_transposed(conv, name)
        elif conv.stride != (1, 1) or conv.dilation != (1, 1) or conv.groups != 1 \
                or conv.kernel_size[0] != conv.kernel_size[1] or conv.padding != (conv.kernel_size[0] // 2,) * 2:
            raise LoweringError(f"conv {name!r}: the runtime supports square 'same' convs, stride 1, groups 1")
        xmax = max(enc.zp, lv.shape[1] - 1 - enc.zp) if enc.kind.startswith("affine") else \
            int(np.abs(enc.table).max())
        kernel_xmax = max(enc.zp, 255 - enc.zp) if enc.kind.startswith("affine") else xmax
        wenc = encode_weight(conv, kernel_xmax, "affine" if transposed and enc.kind == "affine0"
                             else enc.kind, bits)
        out = self._emit_conv(conv, codes, enc, wenc, transposed)
        w = wenc.w_int
        bound = xmax * int(np.abs(w).reshape(w.shape[0], -1).sum(1).max()) if w.size else 0
        if bound > INT32_MAX:
            raise LoweringError(f"conv {name!r}: accumulator bound {bound} exceeds int32")
        A, B = affine_of_acc(enc.s_x, wenc.s_w, conv_bias(conv), bn)
        self.layers.append({"name": name, "op": self.ops[-1]["op"], "weights_exact": wenc.exact,
                            "acts_exact": enc.exact, "note": wenc.note,
                            "act": getattr(q, "method", "image" if image else "calibrated"),
                            "act_bits": bits})
        return Producer(out, A, B, relu, bound, w.shape[0])

    def _check_transposed(self, conv, name):
        if conv.kernel_size != (2, 2) or conv.stride != (2, 2) or conv.padding != (0, 0) \
                or conv.output_padding != (0, 0) or conv.groups != 1:
            raise LoweringError(f"transposed conv {name!r}: only kernel 2, stride 2 is supported")

    def _emit_conv(self, conv, codes: str, enc: ActEnc, wenc: WeightEnc, transposed: bool) -> str:
        w = wenc.w_int.transpose(0, 2, 3, 1)  # (Cout, kh, kw, Cin): the runtime's layout
        cin = w.shape[3]
        p = conv.kernel_size[0] // 2
        table = enc.table.astype(np.int32)
        if transposed:
            if enc.kind.startswith("affine") and wenc.kind in ("int8", "binary", "ternary") \
                    and np.abs(w).max() <= 127:
                return self.emit("convt_int8", [codes], {"zp": enc.zp}, {"w": w.astype(np.int8)})
            return self.emit("convt_lut", [codes], {}, {"table": table, "w": w.astype(np.int32)})
        kind = wenc.kind
        if kind == "binary" and enc.kind == "pm1":
            return self.emit("conv_binary", [codes], {"cin": cin, "padding": p}, {"wp": pack_signs(w)})
        if kind == "binary":
            return self.emit("conv_offset", [codes], {"bits": enc.bits, "padding": p},
                             {"wplanes": bitplanes((w + 1) // 2, 1)})
        if kind == "ternary":
            return self.emit("conv_ternary", [codes], {"bits": enc.bits, "padding": p},
                             {"wpos": pack_bits((w == 1).astype(np.uint8)),
                              "wneg": pack_bits((w == -1).astype(np.uint8))})
        if kind == "offset":
            u = wenc.extra["u"].transpose(0, 2, 3, 1)
            return self.emit("conv_offset", [codes], {"bits": enc.bits, "padding": p},
                             {"wplanes": bitplanes(u, wenc.extra["m"])})
        if kind == "int8":
            return self.emit("conv_int8", [codes], {"zp": enc.zp, "padding": p}, {"w": w.astype(np.int8)})
        if kind == "pow2":
            mag = np.abs(w)
            shift = np.where(mag > 0, np.log2(np.maximum(mag, 1)).round(), 0).astype(np.uint8)
            return self.emit("conv_pow2", [codes], {"zp": enc.zp, "padding": p},
                             {"wsign": np.sign(w).astype(np.int8), "wshift": shift})
        return self.emit("conv_lut", [codes], {"padding": p}, {"table": table, "w": w.astype(np.int32)})


# ----------------------------------------------------------------------------- the FCN walk

def _block(seq: nn.Module) -> tuple[nn.Module, nn.Module | None, bool]:
    """(conv, batch norm or None, relu?) of a ConvBNReLU block. The BN is an Identity after
    fold_bn; the ReLU is an Identity when the activations are signed (BinaryNet: BN -> sign)."""
    conv, bn = seq[0], seq[1]
    relu = len(seq) > 2 and isinstance(seq[2], nn.ReLU)
    return conv, bn if isinstance(bn, nn.BatchNorm2d) else None, relu


def receptive_halo(model: nn.Module) -> int:
    """A halo (pixels) at least the FCN's receptive-field radius, rounded up to its multiple.

    Radius along the deepest path: each 3x3 conv at level l adds 2^l, each pool/upsample between
    levels l and l+1 adds 2^(l+1) (a generous bound for the grid offsets they introduce).
    """
    r = 0
    for lvl in range(model.depth):
        r += 2 * 2**lvl * 2  # encoder and decoder conv pairs (decoder has none at the bottom: generous)
        if lvl + 1 < model.depth:
            r += 2 * 2 ** (lvl + 1)  # pool down and upsample back
    m = model.multiple
    return -(-r // m) * m


def lower_fcn(model: nn.Module, calibrated: dict | None = None) -> tuple[dict, dict, list]:
    """Ops, arrays and per-layer notes for seglearn's FCN (eval mode). See the module docstring."""
    for attr in ("enc", "dec", "head", "depth"):
        if not hasattr(model, attr):
            raise LoweringError(f"export supports seglearn's FCN; {type(model).__name__} has no {attr!r}")
    model.eval()
    b = Builder(calibrated)
    x = Producer("image", np.ones(model.in_channels), np.zeros(model.in_channels), False, 255,
                 model.in_channels, image=True)
    parts = [Part(x)]
    skips = []
    for i, stage in enumerate(model.enc):
        if i:
            parts = [Part(x, ("maxpool",))]
        for j, blk in enumerate(stage):
            conv, bn, relu = _block(blk)
            x = b.conv(conv, f"enc.{i}.{j}.0", parts, bn, relu=relu)
            parts = [Part(x)]
        skips.append(x)
    for d, (up, skip) in enumerate(zip(model.dec, reversed(skips[:-1]))):
        if isinstance(up.up, nn.ConvTranspose2d):
            u = b.conv(up.up, f"dec.{d}.up", [Part(x)], None, relu=False)
            first = Part(u)
        else:
            first = Part(x, ("upsample",))
        parts = [first, Part(skip)]
        for j, blk in enumerate(up.conv):
            conv, bn, relu = _block(blk)
            x = b.conv(conv, f"dec.{d}.conv.{j}.0", parts, bn, relu=relu)
            parts = [Part(x)]
    head = b.conv(model.head, "head", parts, None, relu=False)
    ops, arrays = optimize(b.ops, b.arrays, {head.name})
    graph = {"ops": ops, "outputs": {"logits": head.name}, "multiple": model.multiple,
             "halo": receptive_halo(model), "in_channels": model.in_channels,
             "out_channels": head.channels}
    return graph, arrays, (b.layers, head)


def head_thresholds(head: Producer, probs: dict[str, tuple[int, float]]) -> dict:
    """Integer decision thresholds on the head accumulator: ``sigmoid(A acc + B) > p``.

    ``probs``: ``{name: (channel, p)}``; sigmoid is monotone, so ``p`` becomes the logit
    ``log(p / (1 - p))`` and then ``acc > T`` (A > 0) or ``acc < T`` (A < 0).
    """
    out = {}
    for key, (c, p) in probs.items():
        if c >= head.channels:
            continue
        A, B = head.A[c:c + 1], head.B[c:c + 1]
        if p <= 0.0 or p >= 1.0:
            lt = -np.inf if p <= 0 else np.inf
        else:
            lt = math.log(p / (1.0 - p))
        t, d = step_thresholds(lambda a: (A[:, None] * a + B[:, None]) > lt, A, (1, 1), head.bound)
        out[key] = {"channel": c, "t": int(t[0, 0]), "direction": int(d[0])}
    return out
