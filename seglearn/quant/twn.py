"""Ternary Weight Networks (Li & Liu 2016, arXiv 1605.04711).

``Delta = 0.7 mean|W|``; ``W_t = alpha sign(W) 1{|W| > Delta}`` with
``alpha = mean(|W_i| : |W_i| > Delta)`` (the paper's approximate optimum of ``||W - alpha T||^2``).
Per layer by default; ``per_channel=True`` computes Delta and alpha per output channel (dim 0).
Backward: STE to the full-precision W (Delta and alpha are treated as constants).
An all-zero group has no weight above Delta; its alpha is 0 and it quantizes to 0.
"""

from __future__ import annotations

import torch

from seglearn.quant.base import QuantInfo, Quantizer, register_quantizer
from seglearn.quant.functional import check_bits, check_fraction, check_weight, ste

PAPER = "Li & Liu 2016, Ternary Weight Networks, arXiv 1605.04711"


def twn_ternarize(w: torch.Tensor, delta_factor: float = 0.7, per_channel: bool = False
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return (codes in {-1, 0, 1}, alpha, Delta); alpha and Delta broadcast against ``w``."""
    a = w.detach().abs()
    flat = a.reshape(a.shape[0], -1) if per_channel else a.reshape(1, -1)
    delta = delta_factor * flat.mean(dim=1, keepdim=True)
    keep = flat > delta
    # clamp the count so an all-zero group gives alpha = 0 instead of 0/0
    alpha = (flat * keep).sum(dim=1, keepdim=True) / keep.sum(dim=1, keepdim=True).clamp_min(1)
    shape = (-1,) + (1,) * (w.dim() - 1) if per_channel else ()
    delta, alpha = delta.reshape(shape), alpha.reshape(shape)
    codes = torch.sign(w.detach()) * (a > delta)
    return codes, alpha, delta


class TWNWeight(Quantizer):
    """Ternary weights ``{-alpha, 0, +alpha}``; see the module docstring for the formulas."""

    method, kind = "twn", "weight"

    def __init__(self, bits: int = 2, per_channel: bool = False, delta_factor: float = 0.7):
        super().__init__()
        self.bits = check_bits("twn", bits, allowed=(2,))
        self.per_channel = bool(per_channel)
        self.delta_factor = check_fraction("twn", "delta_factor", delta_factor, 0.0, 1.0)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        check_weight("twn", w, self.per_channel)
        codes, alpha, _ = twn_ternarize(w, self.delta_factor, self.per_channel)
        return ste(w, alpha * codes)

    def export_info(self, w: torch.Tensor | None = None) -> QuantInfo:
        if w is None:
            raise ValueError("twn export_info needs the weight tensor")
        check_weight("twn", w, self.per_channel)
        codes, alpha, delta = twn_ternarize(w, self.delta_factor, self.per_channel)
        scale = alpha.reshape(-1).double().cpu().numpy()
        return QuantInfo("twn", "weight", 2, codes=codes.to(torch.int8).cpu().numpy(),
                         scale=scale if self.per_channel else float(scale[0]),
                         axis=0 if self.per_channel else None,
                         extra={"delta": delta.reshape(-1).double().cpu().numpy().tolist()})

    def extra_repr(self) -> str:
        return super().extra_repr() + f", per_channel={self.per_channel}"


register_quantizer("twn", PAPER, weight=TWNWeight, default_bits={"weight": 2})
