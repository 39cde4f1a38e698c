"""ELQ: explicit loss-error-aware quantization (Zhou et al., CVPR 2018).

Weights take ``W_q = alpha * m`` with ``m`` in a multiplier set:
``{0, ±1}`` (bits=2, ternary) or ``{0, ±1, ±2, ±4}`` (bits=3).

Scale rule implemented here (the paper's own rule is not reproduced; METHODS.md leaves it open).
Per layer, over the weights being quantized:

- bits=2: the exact least-squares ternary fit. Sort ``|w|`` descending with prefix sums ``S_k``;
  keeping the ``k`` largest as ``±alpha`` costs ``||w||^2 - S_k^2 / k`` at ``alpha = S_k / k``, so
  ``k* = argmax_k S_k^2 / k`` and ``alpha = S_k* / k*``.
- bits=3: Lloyd alternation from several starts (``max|w|/4``, ``max|w|/6``, ``mean|w|``, the ternary
  alpha / 2): assign each weight the nearest ``alpha m``, then ``alpha = sum(|w| |m|) / sum(m^2)``;
  ``iters`` rounds; the start with the least squared error wins.

Either way the returned alpha is ``<w, m> / <m, m>``, the least-squares optimum for the final
assignment ``m``. Backward: straight-through, ``dL/dW = dL/dW_q``.

Incremental quantization (like INQ): only the ``portion`` of weights with the largest magnitudes is
quantized (the scale rule runs on that subset); the rest pass through in full precision. The
quantizer default is ``portion = 1.0``; :class:`seglearn.quant.schedules.ELQCallback` (from
:meth:`ELQWeight.make_callback`)
grows it over training through ``schedule`` (default 0.5, 0.75, 0.875, 1.0 in equal step spans).
The subset is recomputed each forward (not frozen).

Explicit loss-error term, added to the task loss by the callback's ``extra_loss``::

    beta * ( |g . (W_q - W)| + ||W - W_q||^2 )          beta = 0.05

``g`` is the gradient of the loss with respect to the quantized weight from the last backward
(stored by a tensor hook: a first-order Taylor estimate of the loss change quantization causes).
``W_q`` is a constant in this term, so its gradient pulls ``W`` towards its quantized value.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from seglearn.quant.base import QuantInfo, Quantizer, moved_to, register_quantizer

PAPER = "Zhou et al., Explicit Loss-Error-Aware Quantization for Low-Bit DNNs, CVPR 2018"
MULTIPLIERS = {2: (0.0, 1.0), 3: (0.0, 1.0, 2.0, 4.0)}
DEFAULT_SCHEDULE = (0.5, 0.75, 0.875, 1.0)


def _ls_alpha(a: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    den = (m * m).sum()
    return (a * m).sum() / den if den > 0 else a.new_zeros(())


def ternary_fit(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact least-squares ternary fit of magnitudes ``a`` (1-D, >= 0): returns ``(alpha, m)``."""
    if a.numel() == 0:
        return a.new_zeros(()), a.clone()
    # numpy's sort is ~10x faster than torch's on these CPUs; only the cut-off value is needed
    s = -np.sort(-a.detach().cpu().double().numpy())
    csum = np.cumsum(s)
    best = int(np.argmax(csum**2 / np.arange(1, s.size + 1)))
    m = (a >= float(s[best])).to(a.dtype)  # ties at the cut-off (measure zero) all join
    return _ls_alpha(a, m), m


def _nearest(a: torch.Tensor, alpha: torch.Tensor, mults: torch.Tensor) -> torch.Tensor:
    """The multiplier whose ``alpha m`` is nearest to each ``a`` (midpoint boundaries, sorted m)."""
    if alpha <= 0:
        return torch.zeros_like(a)
    mids = (mults[1:] + mults[:-1]) / 2
    return mults[torch.bucketize(a / alpha, mids)]


def fit_scale(a: torch.Tensor, bits: int, iters: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """The scale rule of the module docstring on magnitudes ``a``: returns ``(alpha, m)``, m >= 0."""
    t_alpha, t_m = ternary_fit(a)
    if bits == 2:
        return t_alpha, t_m
    mults = torch.tensor(MULTIPLIERS[bits], dtype=a.dtype, device=a.device)
    best = None
    top = a.max() if a.numel() else a.new_zeros(())
    for alpha in (top / 4, top / 6, a.mean() if a.numel() else top, t_alpha / 2):
        m = _nearest(a, alpha, mults)
        for _ in range(iters):
            alpha = _ls_alpha(a, m)
            m_new = _nearest(a, alpha, mults)
            if torch.equal(m_new, m):
                break
            m = m_new
        alpha = _ls_alpha(a, m)
        err = float(((a - alpha * m) ** 2).sum())
        if best is None or err < best[0]:
            best = (err, alpha, m)
    return best[1], best[2]


def loss_error_term(w: torch.Tensor, w_q: torch.Tensor, g: torch.Tensor | None) -> torch.Tensor:
    """``|g . (W_q - W)| + ||W - W_q||^2`` with ``W_q`` and ``g`` held constant (g=None: no first term)."""
    d = w_q.detach() - w
    term = (d * d).sum()
    if g is not None:
        term = term + (g.detach() * d).sum().abs()
    return term


class ELQWeight(Quantizer):
    """Ternary or {0, ±1, ±2, ±4} weights, least-squares scale, incremental ``portion``."""

    method, kind = "elq", "weight"

    def __init__(self, bits: int = 2, portion: float = 1.0, beta: float = 0.05, iters: int = 10,
                 schedule: Sequence[float] = DEFAULT_SCHEDULE):
        super().__init__()
        if bits not in MULTIPLIERS:
            raise ValueError(f"elq bits must be 2 (ternary) or 3, not {bits!r}")
        if not 0.0 <= float(portion) <= 1.0:
            raise ValueError(f"elq portion must be in [0, 1], not {portion!r}")
        if float(beta) < 0:
            raise ValueError(f"elq beta must be >= 0, not {beta!r}")
        sched = tuple(float(p) for p in schedule)
        if not sched or any(not 0 < p <= 1 for p in sched) or sched[-1] != 1.0 or \
                any(b < a for a, b in zip(sched, sched[1:])):
            raise ValueError(f"elq schedule must be non-decreasing portions in (0, 1] ending at "
                             f"1.0, not {schedule!r}")
        self.bits, self.portion, self.beta = int(bits), float(portion), float(beta)
        self.iters, self.schedule = int(iters), sched
        self._last_w: torch.Tensor | None = None
        self._last_q: torch.Tensor | None = None
        self.last_grad: torch.Tensor | None = None

    def quantize(self, w: torch.Tensor, portion: float | None = None):
        """``(W_q, alpha, m_signed, mask)``: W_q has the unquantized weights in full precision."""
        portion = self.portion if portion is None else portion
        w = w.detach()
        flat = w.reshape(-1)
        n = flat.numel()
        k = int(round(portion * n))
        if k >= n:
            mask = torch.ones(n, dtype=torch.bool, device=w.device)
        else:
            mask = torch.zeros(n, dtype=torch.bool, device=w.device)
            if k > 0:  # the k largest magnitudes (argpartition: no full sort needed)
                idx = np.argpartition(-flat.abs().cpu().numpy(), k - 1)[:k]
                mask[torch.from_numpy(idx).to(w.device)] = True
        alpha, m = fit_scale(flat[mask].abs(), self.bits, self.iters)
        msigned = torch.zeros_like(flat)
        msigned[mask] = torch.where(flat[mask] >= 0, m, -m)
        wq = torch.where(mask, alpha * msigned, flat)
        return wq.reshape(w.shape), alpha, msigned.reshape(w.shape), mask.reshape(w.shape)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        q = self.quantize(w)[0]
        out = w + (q - w).detach()
        if self.training and out.requires_grad:
            self._last_w, self._last_q = w, q
            out.register_hook(self._store_grad)
        return out

    def _store_grad(self, g: torch.Tensor) -> None:
        self.last_grad = g.detach().clone()

    def loss_error(self) -> torch.Tensor | None:
        """``beta * loss_error_term`` for the last training forward, or None if there was none."""
        if self._last_w is None:
            return None
        g = self.last_grad if self.last_grad is not None and \
            self.last_grad.shape == self._last_w.shape else None
        return self.beta * loss_error_term(self._last_w, self._last_q, g)

    def clear(self) -> None:
        self._last_w = self._last_q = self.last_grad = None

    def __getstate__(self):
        # copies (deepcopy of an ensemble member) must not drag the last training graph along
        state = self.__dict__.copy()
        state.update(_last_w=None, _last_q=None, last_grad=None)
        return state

    def make_callback(self):
        # imported here: schedules.py imports this module (its schedules find quantizers by class)
        # lazy: cycle, seglearn.quant.schedules imports this module
        from seglearn.quant.schedules import ELQCallback

        return ELQCallback(self)

    def export_info(self, x: torch.Tensor | None = None) -> QuantInfo:
        """Codes are the signed multipliers (int8, in {0, ±1} or {0, ±1, ±2, ±4}), ``scale = alpha``;
        every weight is quantized (portion 1.0) whatever the training portion was."""
        if x is None:
            raise ValueError("elq weight export_info needs the weight tensor")
        _, alpha, m, _ = self.quantize(x.double(), portion=1.0)
        mults = sorted({s * v for v in MULTIPLIERS[self.bits] for s in (-1, 1)})
        return QuantInfo(method="elq", kind="weight", bits=self.bits,
                         codes=m.round().to(torch.int8).numpy(), scale=float(alpha), zero_point=0,
                         signed=True, extra={"multipliers": mults, "codes_are": "multipliers"})

    def extra_repr(self) -> str:
        return super().extra_repr() + f", portion={self.portion}, beta={self.beta}"


__getattr__ = moved_to(__name__, "seglearn.quant.schedules", "ELQCallback")

register_quantizer("elq", PAPER, weight=ELQWeight, default_bits={"weight": 2})
