"""Quantize a model from a scheme, and collect the scheme's training callbacks.

A scheme is a dict (the ``quant`` block of a config)::

    {"weight": "twn", "act": "dorefa", "w_bits": 2, "a_bits": 4,
     "g_bits": 8,               # DoReFa's gradient quantization (training only; default None)
     "first_last": "iao8",      # "iao8" | "same" | "float"
     "fold_bn": False,          # conv + BatchNorm -> QuantConvBN2d (default: weight == "iao")
     "weight_args": {...}, "act_args": {...},           # extra constructor arguments
     "layers": {"enc.0.*": {"w_bits": 4, "weight_args": {"prune": 0.1}}}}   # per-layer overrides

``weight`` / ``act`` may be None (float weights / weights only). Every ``nn.Conv2d`` and
``nn.ConvTranspose2d`` is replaced (seglearn's FCN, MONAI's ``UNet``, anything built from them);
the first and last convolutions in module order (the FCN's first encoder conv and its head) follow
``first_last``: "iao8" = 8-bit IAO weights and activations (8-bit DoReFa, with a warning, while iao is
not registered), "same" = the scheme, "float" = left in floating point. With a signed (BinaryNet) or half-wave
(HWGQ) activation scheme, "same" still gives the first layer 8-bit input (``IMAGE_UNSAFE_ACTS``),
and with "iao8" or "float" the head keeps the scheme's sign activation on its input, since the
ReLUs are gone (BinaryNet ends with sign -> a non-binary classifier; without it the last binary
layer would feed the head linearly). ``layers`` keys are
fnmatch patterns over module names; later patterns override earlier ones.
``g_bits`` (DoReFa's "G", Zhou et al. 2016) puts a :class:`DoReFaGrad` on the output of every conv
quantized with the scheme's own settings (not the 8-bit edge layers of ``first_last``, as
tensorpack's DoReFa leaves the first and last layers alone; per-layer overrides may set or clear
it): the gradient into each conv output is k-bit stochastically quantized in training. It has no
state and is the identity in eval mode, so export is unchanged.
With ``fold_bn`` a conv whose next sibling is a ``BatchNorm2d`` (or an ``nn.Sequential`` starting
with one, MONAI's ADN block) becomes a :class:`QuantConvBN2d` and the BatchNorm an ``nn.Identity``.
"""

from __future__ import annotations

import copy
import fnmatch
import warnings
from typing import Any, Callable

from torch import nn

from seglearn.quant.base import QUANTIZERS, Quantizer, get_quantizer
from seglearn.quant.dorefa import DoReFaGrad
from seglearn.quant.functional import check_bits
from seglearn.quant.layers import QuantConv2d, QuantConvBN2d, QuantConvTranspose2d
from seglearn.quant.schedules import Callback

SCHEME_KEYS = {"weight", "act", "w_bits", "a_bits", "g_bits", "first_last", "fold_bn",
               "weight_args", "act_args", "layers"}
LAYER_KEYS = {"weight", "act", "w_bits", "a_bits", "g_bits", "weight_args", "act_args"}
FIRST_LAST = ("iao8", "same", "float")
#: Activation quantizers whose codes are signed (BinaryNet's sign): a ReLU in front of them would make
#: every code +1, so quantize_model replaces the model's ReLUs by identities (BinaryNet: BN -> sign,
#: the hardtanh STE of the quantizer is the only non-linearity; Courbariaux et al. 2016).
SIGNED_ACTS = {"binarynet"}
#: Activation quantizers whose levels cannot carry an image in [0, 1]: sign(image / 255) is +1
#: everywhere (every image gives the same output), HWGQ's half-Gaussian levels keep ~2 of the 256
#: grey values. With ``first_last="same"`` their first layer is built as under "iao8" (8-bit
#: weights and input): BinaryNet keeps the first layer's input at 8 bits (Courbariaux et al.
#: 2016, section 2.6), HWGQ leaves the first layer at full precision (Cai et al. 2017).
IMAGE_UNSAFE_ACTS = {"binarynet", "hwgq"}

CallbackFactory = Callable[[nn.Module, dict, dict], "Callback | None"]
CALLBACK_FACTORIES: dict[str, CallbackFactory] = {}


def register_callback_factory(method: str, factory: CallbackFactory) -> None:
    """Let method ``method`` add a callback built from (model, scheme, config) when it is used."""
    CALLBACK_FACTORIES[method.lower()] = factory


def check_scheme(scheme: dict) -> dict:
    """Validate ``scheme`` and fill defaults; ValueError names the offending key or value."""
    if not isinstance(scheme, dict):
        raise ValueError(f"a quantization scheme must be a dict, not {type(scheme).__name__}")
    unknown = set(scheme) - SCHEME_KEYS
    if unknown:
        raise ValueError(f"unknown quantization scheme keys {sorted(unknown)}; "
                         f"known: {sorted(SCHEME_KEYS)}")
    s = {"weight": None, "act": None, "w_bits": None, "a_bits": None, "g_bits": None,
         "first_last": "iao8",
         "fold_bn": False, "weight_args": {}, "act_args": {}, "layers": {}}
    s.update(scheme)
    if "fold_bn" not in scheme:  # Jacob et al. train on folded weights: the IAO default
        s["fold_bn"] = scheme.get("weight") == "iao"
    if s["first_last"] not in FIRST_LAST:
        raise ValueError(f"scheme first_last must be one of {FIRST_LAST}, not {s['first_last']!r}")
    for key in ("weight", "act"):
        if s[key] is not None and s[key] not in QUANTIZERS:
            raise ValueError(f"scheme {key}: unknown quantizer {s[key]!r}; "
                             f"known: {', '.join(QUANTIZERS.names())}")
    _check_g_bits(s["g_bits"], "scheme g_bits")
    for key in ("weight_args", "act_args", "layers"):
        if not isinstance(s[key] or {}, dict):
            raise ValueError(f"scheme {key} must be a mapping, not {s[key]!r}")
        s[key] = dict(s[key] or {})
    for pattern, over in s["layers"].items():
        bad = set(over or {}) - LAYER_KEYS if isinstance(over, dict) else {"<not a mapping>"}
        if bad:
            raise ValueError(f"scheme layers[{pattern!r}]: unknown keys {sorted(bad)}; "
                             f"known: {sorted(LAYER_KEYS)}")
        if "g_bits" in over:
            _check_g_bits(over["g_bits"], f"scheme layers[{pattern!r}].g_bits")
    return s


def _check_g_bits(g_bits, where: str) -> None:
    if g_bits is None:
        return
    try:
        check_bits("dorefa", g_bits)
    except ValueError:
        raise ValueError(f"{where} must be null or an integer in [1, 16] (DoReFa gradient bits), "
                         f"not {g_bits!r}") from None


def _make(name: str | None, kind: str, bits: int | None, args: dict) -> Quantizer | None:
    if name is None:
        return None
    kwargs = dict(args)
    if bits is not None:
        kwargs["bits"] = bits
    return get_quantizer(name, kind=kind, **kwargs)


def _first_last_spec(s: dict) -> dict:
    if s["first_last"] == "same":
        return s
    method = "iao"
    if "iao" not in QUANTIZERS:
        method = "dorefa"
        warnings.warn("first_last='iao8': iao is not registered; using 8-bit dorefa instead",
                      stacklevel=3)
    return {"weight": method if s["weight"] is not None else None,
            "act": method if s["act"] is not None else None,
            "w_bits": 8, "a_bits": 8, "g_bits": None, "weight_args": {}, "act_args": {}}


def _layer_spec(s: dict, name: str, edge: str | None) -> dict | None:
    """The quantizer settings of layer ``name`` (None: keep it float); ``edge`` is "first",
    "last" or None."""
    mode = s["first_last"]
    if edge == "first" and mode == "same" and s["act"] in IMAGE_UNSAFE_ACTS:
        mode = "iao8"  # the image must keep its grey levels (see IMAGE_UNSAFE_ACTS)
    signed_head = edge == "last" and mode != "same" and s["act"] in SIGNED_ACTS
    if edge and mode == "float":
        if not signed_head:
            return None
        spec = {k: None for k in ("weight", "w_bits")} | {"weight_args": {}}
        spec |= {"act": s["act"], "a_bits": s["a_bits"], "act_args": s["act_args"]}
    elif edge and mode == "iao8":
        spec = _first_last_spec({**s, "first_last": mode})
        if signed_head:
            spec = {**spec, "act": s["act"], "a_bits": s["a_bits"], "act_args": s["act_args"]}
    else:
        spec = {k: s[k] for k in LAYER_KEYS}
    spec = {**spec, "weight_args": dict(spec["weight_args"]), "act_args": dict(spec["act_args"])}
    for pattern, over in s["layers"].items():
        if fnmatch.fnmatchcase(name, pattern):
            for k, v in (over or {}).items():
                spec[k] = {**spec[k], **v} if k.endswith("_args") else v
    return spec


def _next_bn(parent: nn.Module, child_name: str, out_channels: int) -> tuple[nn.Module, str] | None:
    """The BatchNorm2d right after ``child_name`` in ``parent`` (directly or first in a Sequential)."""
    if not isinstance(parent, nn.Sequential):
        return None
    names = list(parent._modules)
    i = names.index(child_name)
    if i + 1 >= len(names):
        return None
    nxt_name, nxt = names[i + 1], parent._modules[names[i + 1]]
    if isinstance(nxt, nn.Sequential) and len(nxt):
        holder, (bn_name, bn) = nxt, next(iter(nxt._modules.items()))
    else:
        holder, bn_name, bn = parent, nxt_name, nxt
    if isinstance(bn, nn.BatchNorm2d) and bn.num_features == out_channels and bn.track_running_stats:
        return holder, bn_name
    return None


def quantize_model(model: nn.Module, scheme: dict, inplace: bool = False) -> nn.Module:
    """Return ``model`` (a deep copy unless ``inplace``) with every conv quantized per ``scheme``."""
    s = check_scheme(scheme)
    if not inplace:
        model = copy.deepcopy(model)
    convs = [(n, m) for n, m in model.named_modules()
             if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and type(m) in (nn.Conv2d, nn.ConvTranspose2d)]
    if not convs:
        raise ValueError("quantize_model found no nn.Conv2d / nn.ConvTranspose2d to quantize "
                         "(is the model already quantized?)")
    edges = {convs[-1][0]: "last", convs[0][0]: "first"}  # one conv alone is "first"
    parents = dict(model.named_modules())
    for name, conv in convs:
        spec = _layer_spec(s, name, edges.get(name))
        if spec is None:
            continue
        wq = _make(spec["weight"], "weight", spec["w_bits"], spec["weight_args"])
        aq = _make(spec["act"], "act", spec["a_bits"], spec["act_args"])
        parent_name, _, child = name.rpartition(".")
        parent = parents[parent_name]
        bn_loc = _next_bn(parent, child, conv.out_channels) if (
            s["fold_bn"] and type(conv) is nn.Conv2d) else None
        if bn_loc is not None:
            holder, bn_name = bn_loc
            new = QuantConvBN2d.from_conv_bn(conv, getattr(holder, bn_name), wq, aq)
            setattr(holder, bn_name, nn.Identity())
        elif isinstance(conv, nn.ConvTranspose2d):
            new = QuantConvTranspose2d.from_float(conv, wq, aq)
        else:
            new = QuantConv2d.from_float(conv, wq, aq)
        if spec.get("g_bits") is not None:
            new.grad_quant = DoReFaGrad(spec["g_bits"])
        setattr(parent, child, new)
    if s["act"] in SIGNED_ACTS:
        for parent in list(model.modules()):
            for child, m in list(parent._modules.items()):
                if isinstance(m, nn.ReLU):
                    setattr(parent, child, nn.Identity())
    return model


def model_quantizers(model: nn.Module) -> list[tuple[str, Quantizer]]:
    """Every quantizer module in ``model`` with its qualified name."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, Quantizer)]


def scheme_callbacks(model: nn.Module, scheme: dict | None = None, config: dict | None = None
                     ) -> list[Callback]:
    """The training callbacks the model's quantizers ask for (INQ schedule, BinaryNet clipping ...).

    Protocol: a quantizer may implement ``make_callback(self) -> Callback | None``; callbacks that
    set an attribute ``key`` are kept once per key. Methods may also register a factory with
    :func:`register_callback_factory`; it is called with (model, scheme, config) when a quantizer of
    that method is in the model.
    """
    callbacks: list[Callback] = []
    seen: set = set()
    methods: list[str] = []
    for _, q in model_quantizers(model):
        if q.method not in methods:
            methods.append(q.method)
        make = getattr(q, "make_callback", None)
        cb = make() if callable(make) else None
        if cb is None:
            continue
        key = getattr(cb, "key", None)
        if key is not None:
            if key in seen:
                continue
            seen.add(key)
        callbacks.append(cb)
    for method in methods:
        factory = CALLBACK_FACTORIES.get(method)
        if factory is not None:
            cb = factory(model, dict(scheme or {}), dict(config or {}))
            if cb is not None:
                callbacks.append(cb)
    return callbacks


def describe(model: nn.Module) -> dict[str, Any]:
    """``{layer name: "weight=<method>/<bits> act=<method>/<bits>"}`` for quantized layers."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, (QuantConv2d, QuantConvTranspose2d)):
            w, a = m.weight_quant, m.act_quant
            out[name] = (f"weight={'float' if w is None else f'{w.method}/{w.bits}'} "
                         f"act={'float' if a is None else f'{a.method}/{a.bits}'}")
    return out
