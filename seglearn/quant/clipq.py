"""CLIP-Q (Tung & Mori, CVPR 2018): joint pruning and quantization, recomputed every step.

Clip     per layer, with prune fraction p: ``c+`` is the ceil(p n+)-th smallest positive weight and
         ``c-`` the ceil(p n-)-th largest negative one (n+/n-: how many weights are positive /
         negative), so a fraction p of each sign lies in [c-, c+]; those weights (and exact zeros)
         are set to 0. Recomputed every forward, so pruning is reversible.
Quantize the non-clipped portion of the axis, ``[min, c-) U (c+, max]``, is partitioned into
         ``2^b - 1`` intervals, each side on its own (an interval never spans the pruned gap, so a
         weight never takes a level of the other sign): the negative side ``[min, c-]`` gets
         ``n- = floor((2^b - 1) L- / (L- + L+) + 1/2)`` equal-width bins (clamped to ``[1, 2^b - 2]``;
         ``L-, L+`` the two sides' lengths), the positive side ``[c+, max]`` the other
         ``n+ = 2^b - 1 - n-``, so the bins are as close to equal width as whole counts allow.
         A side with no kept weight gets no bin. Each weight takes the mean of its bin (the mean
         of the full-precision weights that fall in it). Zero is the extra code: 2^b codes.
         ``b >= 2``: at one bit the single non-zero level could not hold both signs.
Backward STE: the full-precision weights get the gradient of the quantized ones.
``(p, b)`` come from the config (``weight_args`` or per-layer ``layers`` overrides in the scheme);
the paper's per-layer Bayesian-optimisation search is not implemented.
Export   ``codes``: 0 for pruned, ``1 + bin`` otherwise (negative bins first);
         ``levels = [0, mean_1, ..., mean_{n-}, mean_{n- + 1}, ..., mean_{2^b-1}]``, the negative
         then the positive bin means (an empty bin's level is its centre, never used by a code).
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


def side_bins(nbins: int, len_neg: float, len_pos: float, has_neg: bool, has_pos: bool
              ) -> tuple[int, int]:
    """``(n-, n+)``: the ``nbins`` intervals split between the two sides in proportion to their
    lengths (``n- = floor(nbins L- / (L- + L+) + 1/2)``: a tie, e.g. equal lengths with an odd count,
    goes to the negative side), at least one for a side that has kept weights."""
    if not has_neg:
        return 0, nbins if has_pos else 0
    if not has_pos:
        return nbins, 0
    total = len_neg + len_pos
    n_neg = math.floor(nbins * len_neg / total + 0.5) if total > 0 else nbins // 2
    n_neg = min(max(n_neg, 1), nbins - 1)
    return n_neg, nbins - n_neg


def _bin_means(kept: torch.Tensor, lo: float, hi: float, n: int
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Bin index in [0, n) of each of ``kept`` for ``n`` equal bins over ``[lo, hi]``, and the bin
    means (an empty bin's level is its centre: it is never used by a code)."""
    width = (hi - lo) / n
    if width > 0:
        b = torch.floor((kept - lo) / width).clamp(0, n - 1).to(torch.int64)
    else:  # the side's kept weights are all equal: one bin holds them all
        b = torch.zeros_like(kept, dtype=torch.int64)
    sums = torch.zeros(n, dtype=kept.dtype, device=kept.device).index_add_(0, b, kept)
    counts = torch.bincount(b, minlength=n).to(kept.dtype)
    centres = lo + (torch.arange(n, dtype=kept.dtype, device=kept.device) + 0.5) * width
    return b, torch.where(counts > 0, sums / counts.clamp_min(1), centres)


def clipq_quantize(w: torch.Tensor, prune: float, bits: int
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return (quantized weights, codes in [0, 2^b - 1], levels (2^b,)) without gradient.

    ``levels = [0, negative bin means (ascending), positive bin means (ascending)]``.
    """
    wd = w.detach()
    c_neg, c_pos = clipq_thresholds(wd, prune)
    neg, pos = (wd < c_neg) & (wd < 0), (wd > c_pos) & (wd > 0)
    nbins = 2**bits - 1
    levels = torch.zeros(nbins + 1, dtype=wd.dtype, device=wd.device)
    codes = torch.zeros_like(wd, dtype=torch.int64)
    has_neg, has_pos = bool(neg.any()), bool(pos.any())
    if not (has_neg or has_pos):
        return torch.zeros_like(wd), codes, levels
    lo = float(wd[neg].min()) if has_neg else 0.0
    hi = float(wd[pos].max()) if has_pos else 0.0
    n_neg, n_pos = side_bins(nbins, c_neg - lo, hi - c_pos, has_neg, has_pos)
    first = 1  # code 0 is the pruned zero
    for mask, a, b, n in ((neg, lo, c_neg, n_neg), (pos, c_pos, hi, n_pos)):
        if n == 0:
            continue
        idx, means = _bin_means(wd[mask], a, b, n)
        levels[first:first + n] = means
        codes[mask] = idx + first
        first += n
    return levels[codes], codes, levels


class ClipQWeight(Quantizer):
    """CLIP-Q weights with prune fraction ``prune`` (p) and ``bits`` (b); see the module docstring."""

    method, kind = "clipq", "weight"

    def __init__(self, bits: int = 3, prune: float = 0.2):
        super().__init__()
        self.bits = check_bits("clipq", bits, hi=8)
        if self.bits < 2:  # 2^b - 1 non-zero levels: one level cannot hold both signs
            raise ValueError(f"clipq: bits must be >= 2 (2^b - 1 = {2**self.bits - 1} non-zero "
                             f"level cannot represent both negative and positive weights), "
                             f"not {self.bits}")
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
