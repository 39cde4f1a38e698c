"""Half-Wave Gaussian Quantization (Cai et al., CVPR 2017, arXiv 1702.00953).

Activations  ``Q(x) = 0`` for ``x <= 0``; for ``x > 0`` a uniform level ``i * Delta``,
             i = 1 .. 2^b - 1, with thresholds ``t = [0, 1.5 Delta, 2.5 Delta, ...]``:
             code = #(x > t). ``Delta`` minimises the mean squared error of this quantizer on the
             positive half of N(0, 1) (the batch-normalised pre-activation), a one-dimensional
             Lloyd-style fit done once with scipy and cached. The fit reproduces the paper's 2-bit
             step (0.5388 vs the published 0.538, which is used as published);
             1 bit gives sqrt(2/pi) = 0.798, 3 bits 0.322.
             (The paper's published levels come out only with the first threshold at 0, i.e.
             every positive input reaches at least the first level; that is the rule used here.)
Backward     clipped ReLU: ``dQ/dx = 1{0 < x <= q_max}``, ``q_max = (2^b - 1) Delta``.
Weights      binary with a scale: ``alpha sign(W)``, alpha = mean|W| per output channel
             (XNOR-Net's BW, which the paper uses; ``per_channel=False`` for one alpha per layer);
             hardtanh STE ``1{|W| <= 1}``.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from scipy import optimize, stats

from seglearn.quant.base import QuantInfo, Quantizer, register_quantizer
from seglearn.quant.functional import check_bits, check_weight, per_channel_mean_abs, sign_pm1, sign_ste

PAPER = "Cai, He, Sun & Vasconcelos 2017, Half-Wave Gaussian Quantization, CVPR, arXiv 1702.00953"


def _half_gaussian_mse(delta: float, n_levels: int) -> float:
    """E[(x - Q(x))^2 ; x > 0] for x ~ N(0, 1), closed form per interval.

    On (a, b]: int (x - q)^2 phi = (1 + q^2)(Phi(b) - Phi(a)) + (a - 2q) phi(a) - (b - 2q) phi(b).
    """
    q = delta * np.arange(1, n_levels + 1)
    edges = np.concatenate([[0.0], (np.arange(1, n_levels) + 0.5) * delta, [np.inf]])
    a, b = edges[:-1], edges[1:]
    pa, pb = stats.norm.pdf(a), np.where(np.isinf(b), 0.0, stats.norm.pdf(b))
    bb = np.where(np.isinf(b), 0.0, b)  # b * phi(b) -> 0 as b -> inf
    mass = stats.norm.cdf(b) - stats.norm.cdf(a)
    return float(np.sum((1 + q**2) * mass + (a - 2 * q) * pa - (bb - 2 * q) * pb))


# The paper (and its Caffe code) publishes the 2-bit step to three decimals; the fit gives 0.53881.
PAPER_STEPS = {2: 0.538}


@functools.lru_cache(maxsize=None)
def fit_hwgq_step(bits: int) -> float:
    """Uniform step Delta minimising the b-bit half-wave Gaussian quantizer's MSE (cached)."""
    n = 2**bits - 1
    res = optimize.minimize_scalar(_half_gaussian_mse, args=(n,), bounds=(1e-3, 4.0),
                                   method="bounded", options={"xatol": 1e-10})
    return float(res.x)


def hwgq_step(bits: int) -> float:
    """The step used: the paper's published value where there is one, else the fit."""
    return PAPER_STEPS.get(bits) or fit_hwgq_step(bits)


def hwgq_levels(bits: int) -> np.ndarray:
    """``[0, Delta, 2 Delta, ..., (2^b - 1) Delta]``."""
    return hwgq_step(bits) * np.arange(2**bits, dtype=np.float64)


def hwgq_thresholds(bits: int) -> np.ndarray:
    """``[0, 1.5 Delta, ..., (2^b - 1.5) Delta]``: code = #(x > thresholds)."""
    return hwgq_step(bits) * np.concatenate([[0.0], np.arange(1, 2**bits - 1) + 0.5])


class _HWGQ(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, delta: float, n: int) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.qmax = delta * n
        # levels i*Delta with boundaries at (i + 0.5) Delta, i >= 1; (0, 1.5 Delta] -> Delta
        i = torch.ceil(x / delta - 0.5).clamp(1, n)
        return torch.where(x > 0, i * delta, torch.zeros_like(x))

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return g * ((x > 0) & (x <= ctx.qmax)).to(g.dtype), None, None


class HWGQAct(Quantizer):
    """Half-wave Gaussian activation quantizer; see the module docstring."""

    method, kind = "hwgq", "act"

    def __init__(self, bits: int = 2):
        super().__init__()
        self.bits = check_bits("hwgq", bits, hi=8)
        self.delta = hwgq_step(self.bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _HWGQ.apply(x, self.delta, 2**self.bits - 1)

    def export_info(self, x: torch.Tensor | None = None) -> QuantInfo:
        return QuantInfo("hwgq", "act", self.bits, scale=self.delta, zero_point=0, signed=False,
                         levels=hwgq_levels(self.bits), thresholds=hwgq_thresholds(self.bits))


class HWGQWeight(Quantizer):
    """Binary weights ``alpha sign(W)`` (alpha = mean|W|, per output channel by default)."""

    method, kind = "hwgq", "weight"

    def __init__(self, bits: int = 1, per_channel: bool = True):
        super().__init__()
        self.bits = check_bits("hwgq", bits, allowed=(1,))
        self.per_channel = bool(per_channel)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        check_weight("hwgq", w, self.per_channel)
        return sign_ste(w) * per_channel_mean_abs(w.detach(), self.per_channel)

    def export_info(self, w: torch.Tensor | None = None) -> QuantInfo:
        if w is None:
            raise ValueError("hwgq weight export_info needs the weight tensor")
        check_weight("hwgq", w, self.per_channel)
        alpha = per_channel_mean_abs(w.detach(), self.per_channel).reshape(-1).double().cpu().numpy()
        return QuantInfo("hwgq", "weight", 1, codes=sign_pm1(w.detach()).to(torch.int8).cpu().numpy(),
                         scale=alpha if self.per_channel else float(alpha[0]),
                         axis=0 if self.per_channel else None)


register_quantizer("hwgq", PAPER, weight=HWGQWeight, act=HWGQAct,
                   default_bits={"weight": 1, "act": 2})
