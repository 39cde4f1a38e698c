"""Straight-through-estimator (STE) primitives the quantizers are built from.

Notation (METHODS.md section 1): the forward pass applies a non-differentiable step ``q(x)``; the
backward pass replaces ``dq/dx`` by a surrogate. The generic identity surrogate is
``ste(x, q) = x + (q - x).detach()``: its value is ``q`` and its gradient is exactly 1 w.r.t. ``x``
(Bengio et al. 2013, arXiv 1308.3432).

Also here: argument checks shared by every quantizer constructor, so a bad bit width is a clear
ValueError rather than a shape error three calls deep.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def ste(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Value ``q``, gradient of the identity w.r.t. ``x``: ``x + (q - x).detach()``.

    Written ``q.detach() + (x - x.detach())``: the same function and gradient, but the value is
    ``q`` bit for bit (``x + (q - x)`` rounds), so a k-bit quantizer really has <= 2^k values.
    """
    return q.detach() + (x - x.detach())


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """``round(x)`` (half to even) forward, identity backward."""
    return ste(x, torch.round(x))


def floor_ste(x: torch.Tensor) -> torch.Tensor:
    """``floor(x)`` forward, identity backward."""
    return ste(x, torch.floor(x))


def sign_pm1(x: torch.Tensor) -> torch.Tensor:
    """``sign`` into {-1, +1} with ``sign(0) = +1`` (BinaryNet's convention); no gradient."""
    return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))


class _SignSTE(torch.autograd.Function):
    """Forward ``sign(x)`` in {-1, +1}; backward ``g * 1{|x| <= 1}`` (BinaryNet's hardtanh STE)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return sign_pm1(x)

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        # Inclusive at |x| = 1 as in the paper's 1{|r| <= 1}; torch's hardtanh excludes the ends.
        return g * (x.abs() <= 1).to(g.dtype)


def sign_ste(x: torch.Tensor) -> torch.Tensor:
    """BinaryNet sign: ``q = sign(x)`` (sign(0) = +1), ``dq/dx = 1{|x| <= 1}`` (Courbariaux 2016)."""
    return _SignSTE.apply(x)


def sign_ste_identity(x: torch.Tensor) -> torch.Tensor:
    """``sign(x)`` (sign(0) = +1) with the plain identity gradient (DoReFa's 1-bit weights)."""
    return ste(x, sign_pm1(x))


def clamp_ste(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Value ``clamp(x, lo, hi)``, gradient 1 everywhere (the clamp is invisible to backward)."""
    return ste(x, x.clamp(lo, hi))


def clamp_masked(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Value ``clamp(x, lo, hi)``, gradient ``1{lo <= x <= hi}`` (ends included, unlike torch)."""
    inside = ((x >= lo) & (x <= hi)).to(x.dtype)
    # x*inside carries the masked gradient; the detached part fixes the value to the clamp.
    return x * inside + (x.clamp(lo, hi) - x * inside).detach()


def quantize_unit(r: torch.Tensor, bits: int) -> torch.Tensor:
    """DoReFa's ``quantize_k(r) = round((2^k - 1) r) / (2^k - 1)`` for r in [0, 1], STE."""
    n = float(2**bits - 1)
    return round_ste(r * n) / n


def per_channel_mean_abs(w: torch.Tensor, per_channel: bool) -> torch.Tensor:
    """``mean|W|`` over the layer, or per output channel (dim 0) shaped to broadcast against ``w``."""
    if not per_channel:
        return w.abs().mean()
    return w.abs().reshape(w.shape[0], -1).mean(dim=1).reshape((-1,) + (1,) * (w.dim() - 1))


# ---------------------------------------------------------------------------------------------
# argument checks shared by the constructors


def check_bits(method: str, bits: Any, allowed: tuple[int, ...] | None = None, lo: int = 1,
               hi: int = 16) -> int:
    """Return ``bits`` as an int or raise ValueError naming the method and what it accepts."""
    if isinstance(bits, float) and bits.is_integer():
        bits = int(bits)  # YAML may hand us 4.0
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)):
        raise ValueError(f"{method}: bits must be an integer, not {bits!r}")
    bits = int(bits)
    if allowed is not None and bits not in allowed:
        raise ValueError(f"{method}: bits must be one of {allowed}, not {bits}")
    if not lo <= bits <= hi:
        raise ValueError(f"{method}: bits must be in [{lo}, {hi}], not {bits}")
    return bits


def check_fraction(method: str, name: str, value: Any, lo: float = 0.0, hi: float = 1.0,
                   open_hi: bool = False) -> float:
    """Return ``value`` as a float in [lo, hi] (or [lo, hi)) or raise a named ValueError."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{method}: {name} must be a number, not {value!r}") from None
    if not (lo <= v < hi if open_hi else lo <= v <= hi) or v != v:
        bracket = ")" if open_hi else "]"
        raise ValueError(f"{method}: {name} must be in [{lo}, {hi}{bracket}, not {value!r}")
    return v


def check_weight(method: str, w: torch.Tensor, per_channel: bool = False) -> None:
    """Weights must be a floating tensor; per-channel scales need an output-channel axis."""
    if not isinstance(w, torch.Tensor) or not w.is_floating_point():
        raise ValueError(f"{method}: expected a floating-point weight tensor, got {type(w).__name__}")
    if w.numel() == 0:
        raise ValueError(f"{method}: cannot quantize an empty weight tensor")
    if per_channel and w.dim() < 2:
        raise ValueError(f"{method}: per-channel quantization needs a weight with >= 2 dims, "
                         f"got shape {tuple(w.shape)}")
