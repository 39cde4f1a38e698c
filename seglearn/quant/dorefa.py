"""DoReFa-Net (Zhou et al. 2016, arXiv 1606.06160): k-bit weights, activations and gradients.

``quantize_k(r) = round((2^k - 1) r) / (2^k - 1)`` for r in [0, 1], STE.

Weights, k = 1   ``W_q = sign(W) E(|W|)``, E the layer mean, treated as a constant; identity STE
                 (tensorpack ``get_dorefa``: ``fw(x) = sign(x / E) * E`` with ``stop_gradient(E)``).
Weights, k > 1   ``W' = tanh(W) / (2 max|tanh(W)|) + 1/2``, ``W_q = 2 quantize_k(W') - 1``; the
                 gradient flows through tanh and the max, STE through the rounding.
Activations      ``quantize_k(clip(x, 0, 1))``; gradient ``1{0 <= x <= 1}``.
Gradients        (optional, training only; :class:`DoReFaGrad`) identity forward, backward
                 ``dr_q = 2 m [quantize_k(clip(dr / (2 m) + 1/2 + N(k), 0, 1)) - 1/2]``,
                 ``m = max|dr|`` per sample, ``N(k) ~ U(-0.5, 0.5) / (2^k - 1)``.
Reference: tensorpack ``examples/DoReFa-Net/dorefa.py``.

Export (k > 1 weights): code ``u = round((2^k - 1) W')`` in [0, 2^k - 1] (unsigned),
``W_q = levels[u] = (2u - n) / n`` with ``n = 2^k - 1``; equivalently ``scale = 2/n`` and the
half-integer ``zero_point = n/2`` (the odd signed code ``2u - n`` with scale ``1/n`` is the
bit-plane form the packed kernels use).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from seglearn.quant.base import QuantInfo, Quantizer, register_quantizer
from seglearn.quant.functional import (check_bits, check_weight, clamp_masked, quantize_unit,
                                       sign_pm1, sign_ste_identity)

PAPER = "Zhou et al. 2016, DoReFa-Net, arXiv 1606.06160"


def dorefa_unit_weight(w: torch.Tensor) -> torch.Tensor:
    """``W' = tanh(W) / (2 max|tanh(W)|) + 1/2`` in [0, 1] (differentiable)."""
    t = torch.tanh(w)
    return t / (2 * t.abs().max().clamp_min(1e-12)) + 0.5


class DoReFaWeight(Quantizer):
    """k-bit DoReFa weights; see the module docstring."""

    method, kind = "dorefa", "weight"

    def __init__(self, bits: int = 2):
        super().__init__()
        self.bits = check_bits("dorefa", bits)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        check_weight("dorefa", w)
        if self.bits == 1:
            e = w.detach().abs().mean()
            return sign_ste_identity(w) * e
        return 2 * quantize_unit(dorefa_unit_weight(w), self.bits) - 1

    def export_info(self, w: torch.Tensor | None = None) -> QuantInfo:
        if w is None:
            raise ValueError("dorefa weight export_info needs the weight tensor")
        check_weight("dorefa", w)
        w = w.detach()
        if self.bits == 1:
            codes = sign_pm1(w).to(torch.int8).cpu().numpy()
            return QuantInfo("dorefa", "weight", 1, codes=codes, scale=float(w.abs().mean()))
        n = 2**self.bits - 1
        u = torch.round(dorefa_unit_weight(w) * n).to(torch.int64).cpu().numpy()
        levels = (2.0 * np.arange(n + 1) - n) / n
        return QuantInfo("dorefa", "weight", self.bits, codes=u.astype(np.int32), scale=2.0 / n,
                         zero_point=n / 2, levels=levels, signed=False,
                         extra={"signed_codes": "2u - n with scale 1/n"})


class DoReFaAct(Quantizer):
    """k-bit activations on [0, 1]: ``quantize_k(clip(x, 0, 1))``."""

    method, kind = "dorefa", "act"

    def __init__(self, bits: int = 4):
        super().__init__()
        self.bits = check_bits("dorefa", bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return quantize_unit(clamp_masked(x, 0.0, 1.0), self.bits)

    def export_info(self, x: torch.Tensor | None = None) -> QuantInfo:
        n = 2**self.bits - 1
        return QuantInfo("dorefa", "act", self.bits, scale=1.0 / n, zero_point=0, signed=False,
                         extra={"clip": [0.0, 1.0]})


class _GradQuant(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, bits: int, generator_for) -> torch.Tensor:  # type: ignore[override]
        ctx.bits, ctx.generator_for = bits, generator_for
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # type: ignore[override]
        return dorefa_quantize_grad(g, ctx.bits, ctx.generator_for(g.device)), None, None


def dorefa_quantize_grad(g: torch.Tensor, bits: int, generator: torch.Generator | None = None
                         ) -> torch.Tensor:
    """DoReFa's stochastic k-bit gradient quantization, max per sample (dim 0).

    ``generator`` must live on ``g``'s device (None: torch's default generator of that device)."""
    n = float(2**bits - 1)
    dims = tuple(range(1, g.dim()))
    m = g.abs().amax(dim=dims, keepdim=True) if dims else g.abs()
    m = m.clamp_min(1e-30)  # an all-zero gradient stays zero
    noise = torch.rand(g.shape, generator=generator, dtype=g.dtype, device=g.device).sub_(0.5).div_(n)
    m2 = 2 * m
    # in place after the first op: one temporary per call (this runs on every conv's gradient)
    u = (g / m2).add_(0.5).add_(noise).clamp_(0.0, 1.0)
    return u.mul_(n).round_().div_(n).sub_(0.5).mul_(m2)


class DoReFaGrad(nn.Module):
    """Identity forward; quantizes the gradient flowing back through it (training only).

    ``quantize_model`` inserts one after every quantized conv of a scheme with ``g_bits`` (the
    layer's ``grad_quant``), i.e. on the conv output as tensorpack's ``.apply(fg)``. With ``seed``
    the noise comes from a generator made on the gradient's own device (one per device, seeded
    alike); without, from torch's default generator there (seeded by ``torch.manual_seed``).
    In eval mode (and so in export) it is the identity: inference has no gradients.
    """

    def __init__(self, bits: int = 8, seed: int | None = None):
        super().__init__()
        self.bits = check_bits("dorefa", bits)
        self.seed = None if seed is None else int(seed)
        self._generators: dict[str, torch.Generator] = {}

    def generator(self, device: torch.device | str = "cpu") -> torch.Generator | None:
        """The seeded noise generator on ``device`` (None when unseeded)."""
        if self.seed is None:
            return None
        key = str(torch.device(device))
        if key not in self._generators:
            self._generators[key] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and x.requires_grad):
            return x
        return _GradQuant.apply(x, self.bits, self.generator)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, seed={self.seed}"


register_quantizer("dorefa", PAPER, weight=DoReFaWeight, act=DoReFaAct,
                   default_bits={"weight": 2, "act": 4})
