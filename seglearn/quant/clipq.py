"""CLIP-Q (Tung & Mori, CVPR 2018): joint pruning and quantization, recomputed every step.

Clip     per layer, with prune fraction p: ``c+`` is the ceil(p n+)-th smallest positive weight and
         ``c-`` the ceil(p n-)-th largest negative one (n+/n-: how many weights are positive /
         negative), so a fraction p of each sign lies in [c-, c+]; those weights (and exact zeros)
         are set to 0. Recomputed every forward, so pruning is reversible.
Quantize the remaining weights are split into ``2^b - 1`` bins of equal width over
         ``[min, max]`` of the remaining weights; each weight takes the mean of its bin (the mean
         of the full-precision weights that fall in it). Zero is the extra code: 2^b codes.
Backward STE: the full-precision weights get the gradient of the quantized ones.
``(p, b)`` come from the config (``weight_args`` or per-layer ``layers`` overrides in the scheme);
the paper's per-layer Bayesian-optimisation search is not implemented.
Export   ``codes``: 0 for pruned, ``1 + bin`` otherwise; ``levels = [0, mean_1, ..., mean_{2^b-1}]``
         (an empty bin's level is its centre, never used by a code).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from seglearn.quant.base import QuantInfo, Quantizer, register_quantizer
from seglearn.quant.functional import check_bits, check_fraction, check_weight, ste

PAPER = "Tung & Mori 2018, CLIP-Q: Deep Network Compression Learning by In-Parallel Pruning-Quantization, CVPR"


def clipq_thresholds(w: torch.Tensor, prune: float) -> tuple[float, float]:
    """``(c-, c+)``: a fraction ``prune`` of the negative and of the positive weights lie inside."""
    w = w.detach().reshape(-1)
    pos, neg = w[w > 0], -w[w < 0]
    c_pos = float(torch.kthvalue(pos, math.ceil(prune * pos.numel())).values) \
        if prune > 0 and pos.numel() else 0.0
    c_neg = -float(torch.kthvalue(neg, math.ceil(prune * neg.numel())).values) \
        if prune > 0 and neg.numel() else 0.0
    return c_neg, c_pos


def clipq_quantize(w: torch.Tensor, prune: float, bits: int
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return (quantized weights, codes in [0, 2^b - 1], levels (2^b,)) without gradient."""
    wd = w.detach()
    c_neg, c_pos = clipq_thresholds(wd, prune)
    keep = ((wd > c_pos) | (wd < c_neg)) & (wd != 0)
    nbins = 2**bits - 1
    levels = torch.zeros(nbins + 1, dtype=wd.dtype, device=wd.device)
    codes = torch.zeros_like(wd, dtype=torch.int64)
    if not bool(keep.any()):
        return torch.zeros_like(wd), codes, levels
    kept = wd[keep]
    lo, hi = kept.min(), kept.max()
    width = (hi - lo) / nbins
    if width > 0:
        b = torch.floor((kept - lo) / width).clamp(0, nbins - 1).to(torch.int64)
    else:  # all remaining weights are equal: one bin holds them all
        b = torch.zeros_like(kept, dtype=torch.int64)
    sums = torch.zeros(nbins, dtype=wd.dtype, device=wd.device).index_add_(0, b, kept)
    counts = torch.bincount(b, minlength=nbins).to(wd.dtype)
    centres = lo + (torch.arange(nbins, dtype=wd.dtype, device=wd.device) + 0.5) * width
    levels[1:] = torch.where(counts > 0, sums / counts.clamp_min(1), centres)
    codes[keep] = b + 1
    return levels[codes], codes, levels


class ClipQWeight(Quantizer):
    """CLIP-Q weights with prune fraction ``prune`` (p) and ``bits`` (b); see the module docstring."""

    method, kind = "clipq", "weight"

    def __init__(self, bits: int = 3, prune: float = 0.2):
        super().__init__()
        self.bits = check_bits("clipq", bits, hi=8)
        self.prune = check_fraction("clipq", "prune", prune, 0.0, 1.0)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        check_weight("clipq", w)
        return ste(w, clipq_quantize(w, self.prune, self.bits)[0])

    def export_info(self, w: torch.Tensor | None = None) -> QuantInfo:
        if w is None:
            raise ValueError("clipq export_info needs the weight tensor")
        check_weight("clipq", w)
        _, codes, levels = clipq_quantize(w, self.prune, self.bits)
        return QuantInfo("clipq", "weight", self.bits, codes=codes.to(torch.int32).cpu().numpy(),
                         levels=levels.double().cpu().numpy().astype(np.float64), signed=False,
                         extra={"prune": self.prune})

    def extra_repr(self) -> str:
        return super().extra_repr() + f", prune={self.prune}"


register_quantizer("clipq", PAPER, weight=ClipQWeight, default_bits={"weight": 3})
