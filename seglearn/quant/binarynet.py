"""BinaryNet (Courbariaux, Hubara et al. 2016, arXiv 1602.02830): binary weights and activations.

Forward   ``q(x) = sign(x)`` in {-1, +1} with ``sign(0) = +1``.
Backward  ``dq/dx = 1{|x| <= 1}`` (the hardtanh straight-through estimator).
Training  the real-valued shadow weights are clipped to [-1, 1] after each optimizer step
          (``make_callback`` returns :class:`seglearn.quant.schedules.BinaryNetClip`).

The paper has no scale. ``scale=True`` adds an XNOR-Net-style per-output-channel
``alpha = mean|W|`` (Rastegari et al. 2016), default off. Its gradient is not propagated (alpha is
detached), so ``d(alpha sign(W))/dW = alpha 1{|W| <= 1}``: a choice, documented here.
Reference: MatthieuCourbariaux/BinaryNet ``binary_net.py`` (``binarization``, ``binary_tanh_unit``).
"""

from __future__ import annotations

import numpy as np
import torch

from seglearn.quant.base import QuantInfo, Quantizer, register_quantizer
from seglearn.quant.functional import check_bits, check_weight, per_channel_mean_abs, sign_pm1, sign_ste

PAPER = "Courbariaux, Hubara et al. 2016, BinaryNet, arXiv 1602.02830"


class BinaryNetWeight(Quantizer):
    """``W_b = sign(W)`` (optionally ``alpha_c sign(W)``, alpha_c = mean|W_c|), hardtanh STE."""

    method, kind = "binarynet", "weight"

    def __init__(self, bits: int = 1, scale: bool = False, clip: bool = True):
        super().__init__()
        self.bits = check_bits("binarynet", bits, allowed=(1,))
        self.scale = bool(scale)
        self.clip = bool(clip)  # whether BinaryNetClip clamps this layer's shadow weights

    def _alpha(self, w: torch.Tensor) -> torch.Tensor:
        return per_channel_mean_abs(w.detach(), per_channel=True)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        check_weight("binarynet", w, per_channel=self.scale)
        q = sign_ste(w)
        return q * self._alpha(w) if self.scale else q

    def export_info(self, w: torch.Tensor | None = None) -> QuantInfo:
        if w is None:
            raise ValueError("binarynet weight export_info needs the weight tensor")
        codes = sign_pm1(w.detach()).to(torch.int8).cpu().numpy()
        if self.scale:
            scale = self._alpha(w).reshape(-1).cpu().numpy().astype(np.float64)
            return QuantInfo("binarynet", "weight", 1, codes=codes, scale=scale, axis=0)
        return QuantInfo("binarynet", "weight", 1, codes=codes, scale=1.0)

    def make_callback(self):
        # imported here: schedules.py imports this module (its schedules find quantizers by class)
        # lazy: cycle, seglearn.quant.schedules imports this module
        from seglearn.quant.schedules import BinaryNetClip

        return BinaryNetClip() if self.clip else None

    def extra_repr(self) -> str:
        return super().extra_repr() + f", scale={self.scale}"


class BinaryNetAct(Quantizer):
    """``a_b = sign(x)`` in {-1, +1}, gradient ``1{|x| <= 1}`` (``binary_tanh_unit``)."""

    method, kind = "binarynet", "act"

    def __init__(self, bits: int = 1):
        super().__init__()
        self.bits = check_bits("binarynet", bits, allowed=(1,))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sign_ste(x)

    def export_info(self, x: torch.Tensor | None = None) -> QuantInfo:
        # code = #(x > 0) would send x == 0 to -1; the runtime must compare x >= 0 (extra["ties"]).
        return QuantInfo("binarynet", "act", 1, levels=np.array([-1.0, 1.0]),
                         thresholds=np.array([0.0]), signed=True,
                         extra={"ties": "x == 0 maps to +1 (compare x >= threshold)"})


register_quantizer("binarynet", PAPER, weight=BinaryNetWeight, act=BinaryNetAct,
                   default_bits={"weight": 1, "act": 1})
