"""IAO: integer-arithmetic-only quantization (Jacob et al., CVPR 2018, arXiv 1712.05877).

Affine mapping ``r = S (q - Z)``.

Activations (:class:`IAOAct`): uint8, asymmetric. The range ``[lo, hi]`` is tracked by an EMA
``r = d r + (1 - d) r_batch`` (the first training batch initialises it), then nudged TFLite-style so
that 0 is exactly representable::

    lo, hi = min(lo, 0), max(hi, 0)
    S = (hi - lo) / (2^k - 1)
    Z = clamp(round(-lo / S), 0, 2^k - 1)          # an integer, so r = 0 <-> q = Z exactly
    q = clamp(round(x / S) + Z, 0, 2^k - 1)

Training schedule (Jacob et al. section 3.1; :class:`seglearn.quant.schedules.IAOSchedule`, from
``make_callback``): the
EMA "smooths ranges across thousands of steps" and activation quantization is "completely
disabled at the start of training" so that the ranges settle first. Both are set from the planned
number of steps T: the EMA's time constant ``1 / (1 - d)`` is ``ema_span T`` steps (default 2%:
``d = 1 - 1 / max(1, ema_span T)``), so after a shift of scale the first range's weight falls as
``exp(-t / (ema_span T))``; the first ``floor(delay T)`` steps (default 10%) train with float
activations while the ranges are observed. ``ema_span=None`` keeps the constructor's ``decay``.
Without the callback (a hand-written loop) ``decay`` is used as given and nothing is delayed.
Eval mode always fake-quantizes, so a model evaluated or exported mid-delay matches the runtime.

Weights (:class:`IAOWeight`): int8 symmetric, narrow range ``[-127, 127]``, ``Z = 0``,
``S_c = max|W_c| / 127`` per output channel (default) or per tensor.

Fake quantization (training): forward ``S (q - Z)``; backward straight-through inside the clamp
range ``[S (0 - Z), S (2^k - 1 - Z)]`` and zero outside (TF ``FakeQuantWithMinMaxVars``).

Plain helpers used by export and tests: :func:`fold_bn` (``w_f = gamma w / sqrt(var + eps)``,
``b_f = beta + gamma (b - mu) / sqrt(var + eps)``), :func:`bias_scale` (``S_b = S_w S_x``, ``Z_b = 0``),
:func:`quantize_bias` (int32 codes) and :func:`requant_multiplier` (``M = S_w S_x / S_y`` as gemmlowp's
Q31 ``(M0, shift)``, via ``seglearn.runtime.fixedpoint.quantize_multiplier``).

Reference: google/gemmlowp ``doc/quantization_example.cc``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from seglearn.quant.base import QuantInfo, Quantizer, moved_to, register_quantizer
from seglearn.quant.functional import check_fraction
from seglearn.runtime.checks import INT32_MAX
from seglearn.runtime.fixedpoint import quantize_multiplier  # the runtime owns the Q31 rule

PAPER = "Jacob et al., CVPR 2018, arXiv 1712.05877 (integer-arithmetic-only inference)"


def _check_bits(bits: int, lo: int = 2, hi: int = 16) -> int:
    if not isinstance(bits, (int, np.integer)) or isinstance(bits, bool) or not lo <= bits <= hi:
        raise ValueError(f"iao bits must be an integer in [{lo}, {hi}], not {bits!r}")
    return int(bits)


def affine_params(lo: float, hi: float, bits: int = 8) -> tuple[float, int]:
    """Scale ``S`` and integer zero point ``Z`` for the range ``[lo, hi]`` nudged to contain 0.

    ``S = (hi - lo) / (2^k - 1)``, ``Z = clamp(round(-lo / S), 0, 2^k - 1)``. A zero-width range
    (e.g. an all-zero tensor) gets ``S = 1`` so nothing divides by zero; 0 is then code ``Z``.
    """
    qmax = 2**bits - 1
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if not np.isfinite(lo) or not np.isfinite(hi):
        raise ValueError(f"iao activation range must be finite, got [{lo}, {hi}]")
    scale = (hi - lo) / qmax
    if scale <= 0.0:
        return 1.0, 0
    zp = int(np.clip(np.round(-lo / scale), 0, qmax))
    return scale, zp


class _FakeQuant(torch.autograd.Function):
    """``S (clamp(round(x/S) + Z, qmin, qmax) - Z)``; gradient 1 inside the clamp range, 0 outside."""

    @staticmethod
    def forward(ctx, x, scale, zp, qmin, qmax):
        q = torch.clamp(torch.round(x / scale) + zp, qmin, qmax)
        lo, hi = (qmin - zp) * scale, (qmax - zp) * scale
        ctx.save_for_backward((x >= lo) & (x <= hi))
        return (q - zp) * scale

    @staticmethod
    def backward(ctx, g):
        (inside,) = ctx.saved_tensors
        return g * inside.to(g.dtype), None, None, None, None


def _channel_view(t: torch.Tensor, ndim: int, axis: int) -> torch.Tensor:
    shape = [1] * ndim
    shape[axis] = -1
    return t.reshape(shape)


class IAOWeight(Quantizer):
    """int8 symmetric narrow-range weights: ``q = clamp(round(W / S), -127, 127)``, ``S = max|W| / 127``.

    ``per_channel=True`` (default) takes one ``S`` per output channel (axis 0).
    """

    method, kind = "iao", "weight"

    def __init__(self, bits: int = 8, per_channel: bool = True, axis: int = 0):
        super().__init__()
        self.bits = _check_bits(bits)
        self.per_channel = bool(per_channel)
        self.axis = int(axis)

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1

    def scale(self, w: torch.Tensor) -> torch.Tensor:
        """``S = max|W| / qmax`` (per output channel when ``per_channel``); 1 where ``max|W| = 0``."""
        w = w.detach()
        if self.per_channel:
            if w.ndim < 1 or not -w.ndim <= self.axis < w.ndim:
                raise ValueError(f"iao per-channel axis {self.axis} is out of range for shape "
                                 f"{tuple(w.shape)}")
            dims = [d for d in range(w.ndim) if d != self.axis % w.ndim]
            m = w.abs().amax(dim=dims) if dims else w.abs()
        else:
            m = w.abs().max()
        s = m / self.qmax
        return torch.where(s > 0, s, torch.ones_like(s))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        s = self.scale(w)
        if self.per_channel:
            s = _channel_view(s, w.ndim, self.axis)
        # Every weight lies inside [-qmax S, qmax S] by construction of S, so the clamp never bites
        # and the gradient is the plain STE (a masked one could drop max|W| to float rounding).
        q = torch.clamp(torch.round(w.detach() / s), -self.qmax, self.qmax) * s
        return w + (q - w).detach()

    def export_info(self, x: torch.Tensor | None = None) -> QuantInfo:
        if x is None:
            raise ValueError("iao weight export_info needs the weight tensor")
        w = x.detach().double()
        s = self.scale(w)
        sb = _channel_view(s, w.ndim, self.axis) if self.per_channel else s
        codes = torch.clamp(torch.round(w / sb), -self.qmax, self.qmax).to(torch.int8)
        scale = s.numpy().astype(np.float64) if self.per_channel else float(s)
        return QuantInfo(method="iao", kind="weight", bits=self.bits, codes=codes.numpy(),
                         scale=scale, zero_point=0, axis=self.axis if self.per_channel else None,
                         signed=True, extra={"narrow_range": True})


class IAOAct(Quantizer):
    """uint8 asymmetric activations with an EMA range nudged to contain 0 (see the module docstring).

    Buffers ``lo``, ``hi`` (the EMA range) and ``initialized`` are in the state dict. In eval mode
    the stored range is used; before any training batch, eval uses the current batch's range
    without storing it.
    """

    method, kind = "iao", "act"

    def __init__(self, bits: int = 8, decay: float = 0.999, delay: float = 0.1,
                 ema_span: float | None = 0.02):
        super().__init__()
        self.bits = _check_bits(bits)
        if not 0.0 <= float(decay) < 1.0:
            raise ValueError(f"iao act decay must be in [0, 1), not {decay!r}")
        self.decay = float(decay)
        self.delay = check_fraction("iao act", "delay", delay, 0.0, 1.0, open_hi=True)
        if ema_span is not None:
            ema_span = check_fraction("iao act", "ema_span", ema_span, 0.0, 1.0)
            if ema_span == 0.0:
                raise ValueError("iao act: ema_span must be > 0 (a fraction of the planned steps) "
                                 "or None (keep decay)")
        self.ema_span = ema_span
        self.enabled = True  # False while the schedule's delay trains with float activations
        self.register_buffer("lo", torch.zeros(()))
        self.register_buffer("hi", torch.zeros(()))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    def make_callback(self):
        # imported here: schedules.py imports this module (its schedules find quantizers by class)
        # lazy: cycle, seglearn.quant.schedules imports this module
        from seglearn.quant.schedules import IAOSchedule

        return IAOSchedule()

    @torch.no_grad()
    def observe(self, x: torch.Tensor) -> None:
        """EMA update of the range: the first batch initialises, later ``r = d r + (1 - d) r_batch``."""
        lo, hi = x.detach().min().to(self.lo), x.detach().max().to(self.hi)
        if not bool(self.initialized):
            self.lo.copy_(lo)
            self.hi.copy_(hi)
            self.initialized.fill_(True)
        else:
            self.lo.mul_(self.decay).add_((1 - self.decay) * lo)
            self.hi.mul_(self.decay).add_((1 - self.decay) * hi)

    def params(self, x: torch.Tensor | None = None) -> tuple[float, int]:
        """``(S, Z)`` from the stored range (or from ``x`` when nothing has been observed yet)."""
        if bool(self.initialized):
            return affine_params(float(self.lo), float(self.hi), self.bits)
        if x is None:
            raise ValueError("iao act quantizer has seen no data: run a training batch first")
        return affine_params(float(x.min()), float(x.max()), self.bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.observe(x)
            if not self.enabled:  # the schedule's delay: observe the range, pass x through
                return x
        s, z = self.params(x.detach())
        return _FakeQuant.apply(x, s, float(z), 0.0, float(2**self.bits - 1))

    def export_info(self, x: torch.Tensor | None = None) -> QuantInfo:
        s, z = self.params(None if x is None else x.detach())
        codes = np.arange(2**self.bits, dtype=np.float64)
        return QuantInfo(method="iao", kind="act", bits=self.bits, codes=None, scale=s,
                         zero_point=z, axis=None, signed=False, levels=s * (codes - z),
                         thresholds=s * (codes[1:] - 0.5 - z))

    def extra_repr(self) -> str:
        return super().extra_repr() + (f", decay={self.decay}, delay={self.delay}, "
                                       f"ema_span={self.ema_span}")


def ema_decay(span: float, total: int) -> float:
    """``d = 1 - 1 / max(1, span T)``: the EMA whose time constant ``1 / (1 - d)`` is ``span T`` steps."""
    return 1.0 - 1.0 / max(1.0, span * total)


def delay_steps(delay: float, total: int) -> int:
    """How many of the ``total`` planned steps train with float activations: ``floor(delay T)``."""
    return int(delay * total)


# ---------------------------------------------------------------- plain helpers for export and tests

def fold_bn(w: Any, b: Any, gamma: Any, beta: Any, mean: Any, var: Any, eps: float = 1e-5,
            axis: int = 0) -> tuple[Any, Any]:
    """Fold eval-mode batch norm into the preceding conv: returns ``(w_f, b_f)``.

    ``w_f = w * gamma / sqrt(var + eps)`` along the output-channel ``axis`` (0 for Conv2d, 1 for
    ConvTranspose2d weights), ``b_f = beta + gamma (b - mean) / sqrt(var + eps)`` (``b=None`` -> 0).
    Works on numpy arrays or torch tensors (returns the same kind as ``w``).
    """
    is_torch = isinstance(w, torch.Tensor)
    lib = torch if is_torch else np
    conv = (lambda a: torch.as_tensor(a, dtype=w.dtype, device=w.device)) if is_torch else \
        (lambda a: np.asarray(a, dtype=np.result_type(w, np.float32)))
    w = w if is_torch else np.asarray(w)
    gamma, beta, mean, var = (conv(a) for a in (gamma, beta, mean, var))
    cout = w.shape[axis]
    for name, a in (("gamma", gamma), ("beta", beta), ("mean", mean), ("var", var)):
        if tuple(a.shape) != (cout,):
            raise ValueError(f"fold_bn: {name} has shape {tuple(a.shape)}, expected ({cout},) "
                             f"(weight axis {axis} of shape {tuple(w.shape)})")
    if bool((var + eps <= 0).any()):
        raise ValueError("fold_bn: var + eps must be positive")
    k = gamma / lib.sqrt(var + eps)
    shape = [1] * w.ndim
    shape[axis] = -1
    w_f = w * k.reshape(shape)
    b0 = mean * 0 if b is None else conv(b)
    if tuple(b0.shape) != (cout,):
        raise ValueError(f"fold_bn: bias has shape {tuple(b0.shape)}, expected ({cout},)")
    return w_f, beta + k * (b0 - mean)


def bias_scale(s_w: Any, s_x: Any) -> np.ndarray | float:
    """Scale of the int32 bias: ``S_b = S_w S_x`` (per channel when ``S_w`` is), ``Z_b = 0``."""
    out = np.asarray(s_w, dtype=np.float64) * np.asarray(s_x, dtype=np.float64)
    return float(out) if out.ndim == 0 else out


def quantize_bias(b: Any, s_w: Any, s_x: Any) -> np.ndarray:
    """int32 bias codes ``round(b / (S_w S_x))``; raises ValueError if a code overflows int32."""
    q = np.round(np.asarray(b, dtype=np.float64) / bias_scale(s_w, s_x))
    if np.any(np.abs(q) > INT32_MAX):
        raise ValueError("quantize_bias: a bias code does not fit in int32")
    return q.astype(np.int32)


def requant_multiplier(s_w: Any, s_x: Any, s_y: Any) -> tuple[np.ndarray, np.ndarray]:
    """``M = S_w S_x / S_y`` as gemmlowp Q31 ``(M0, shift)`` per channel (arrays, same shape as M)."""
    m = np.atleast_1d(bias_scale(s_w, s_x) / np.asarray(s_y, dtype=np.float64))
    pairs = [quantize_multiplier(float(v)) for v in m.ravel()]
    m0 = np.array([p[0] for p in pairs], dtype=np.int64).reshape(m.shape)
    shift = np.array([p[1] for p in pairs], dtype=np.int64).reshape(m.shape)
    return m0, shift


__getattr__ = moved_to(__name__, "seglearn.quant.schedules", "IAOSchedule")

register_quantizer("iao", PAPER, weight=IAOWeight, act=IAOAct,
                   default_bits={"weight": 8, "act": 8})
