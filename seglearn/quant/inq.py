"""Incremental Network Quantization (Zhou et al., ICLR 2017, arXiv 1702.03044).

Levels   ``P = {0, +-2^n2, ..., +-2^n1}`` with ``s = max|W|``, ``n1 = floor(log2(4 s / 3))`` and
         ``n2 = n1 + 1 - 2^(b-1) / 2`` (b >= 2 bits: one code is zero, ``2^(b-2)`` magnitudes per
         sign, so ``2^(b-1) + 1 <= 2^b`` levels).
Project  ``W_hat = beta sign(W)`` if ``(alpha + beta)/2 <= |W| < 3 beta / 2`` for adjacent levels
         alpha < beta of P, else 0 (the paper's rule, ``power2.cpp``). Between powers of two the
         boundaries are the arithmetic midpoints 1.5 * 2^n, so this is the nearest level of P;
         magnitudes below 2^n2 / 2 go to 0 and magnitudes above 2^n1 saturate at 2^n1 (only
         possible once n1 is frozen by the schedule). Computed as
         ``n = clamp(floor(log2(4|W|/3)), n2, n1)`` rather than by a search over the levels.
Default  portion 1.0 without a schedule: every weight is projected every step, STE to W.
Schedule INQ quantizes a *trained* float model (the paper starts from a pre-trained network), so
         :class:`seglearn.quant.schedules.INQSchedule` (``make_callback``) lays the whole method
         inside one training budget T: the first ``float_fraction`` of the steps (default 0.5,
         t0 = floor(0.5 T)) train the float weights (forward = W, no projection); then at each
         accumulated portion (0.5, 0.75, 0.875, 1.0 by default) the largest-magnitude
         not-yet-quantized weights *of the weights as trained so far* are projected and frozen,
         portion i (i < n - 1) at step ``t0 + floor(i (T - t0) / (n - 1))``, so every retraining
         interval gets the same number of steps, and the last portion after the last optimizer step
         (no step is spent with every weight frozen). Frozen entries enter the forward as
         ``where(mask, frozen, W)``: they get exactly zero gradient and keep their value whatever
         the optimizer does (momentum, weight decay), while the others retrain in full precision.
         ``n1`` is fixed at the first freeze from max|W| of the trained weights (the paper computes
         it once from the pre-trained model). ``mask``, ``frozen`` and ``n`` are buffers: a
         checkpoint holds the frozen set, and a resumed run keeps it (``on_resume``).
Export   ``codes`` index ``levels = [-2^n1 .. -2^n2, 0, 2^n2 .. 2^n1]``; ``extra`` has n1 and n2.
Xu et al. 2018 use 7 bits (best) and 5 bits.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from seglearn.quant.base import QuantInfo, Quantizer, register_quantizer
from seglearn.quant.functional import check_bits, check_weight, ste

PAPER = "Zhou et al. 2017, Incremental Network Quantization, ICLR, arXiv 1702.03044"
DEFAULT_PORTIONS = (0.5, 0.75, 0.875, 1.0)
DEFAULT_FLOAT_FRACTION = 0.5


def inq_exponents(s: float, bits: int) -> tuple[int, int]:
    """``(n1, n2)`` for the largest magnitude ``s`` (> 0) and ``bits``."""
    if not s > 0:
        raise ValueError(f"inq: max|W| must be positive to place the levels, got {s}")
    n1 = math.floor(math.log2(4.0 * s / 3.0))
    return n1, n1 + 1 - 2 ** (bits - 1) // 2


def inq_levels(n1: int, n2: int) -> np.ndarray:
    """Sorted level set ``[-2^n1, ..., -2^n2, 0, 2^n2, ..., 2^n1]``."""
    mags = 2.0 ** np.arange(n2, n1 + 1)
    return np.concatenate([-mags[::-1], [0.0], mags])


def inq_project(w: torch.Tensor, n1: int, n2: int) -> torch.Tensor:
    """Project ``w`` onto ``{0, +-2^n2 .. +-2^n1}`` with the paper's boundaries (no gradient)."""
    a = w.detach().abs()
    tiny = torch.finfo(a.dtype).tiny
    n = torch.floor(torch.log2(a.clamp_min(tiny) * (4.0 / 3.0))).clamp(n2, n1)
    mag = torch.exp2(n) * (a >= 2.0 ** (n2 - 1))
    return torch.sign(w.detach()) * mag


class INQWeight(Quantizer):
    """Power-of-two weights with INQ's partition-and-freeze schedule; see the module docstring.

    State (buffers, empty until the schedule starts, so ``state_dict`` round-trips at any point):
    ``mask`` (bool, which weights are frozen), ``frozen`` (their values), ``n`` = [n1, n2].
    """

    method, kind = "inq", "weight"

    def __init__(self, bits: int = 5, portions: tuple[float, ...] | list[float] = DEFAULT_PORTIONS,
                 float_fraction: float = DEFAULT_FLOAT_FRACTION):
        super().__init__()
        self.bits = check_bits("inq", bits, lo=2)
        self.portions = _check_portions(portions)
        self.float_fraction = _check_float_fraction(float_fraction)
        # True while the schedule's float phase runs (forward = W). Not a buffer: the schedule sets
        # it from the step, also on resume, and a model outside training never is in that phase.
        self.float_phase = False
        self.register_buffer("mask", torch.zeros(0, dtype=torch.bool))
        self.register_buffer("frozen", torch.zeros(0))
        self.register_buffer("n", torch.zeros(0, dtype=torch.int64))

    @property
    def incremental(self) -> bool:
        """True once a schedule has started freezing (forward mixes frozen and float weights)."""
        return self.mask.numel() > 0

    @property
    def portion(self) -> float:
        """Fraction of weights currently quantized (1.0 when no schedule runs: all are projected;
        0.0 in the schedule's float phase)."""
        if self.float_phase and not self.incremental:
            return 0.0
        return float(self.mask.float().mean()) if self.incremental else 1.0

    def exponents(self, w: torch.Tensor) -> tuple[int, int]:
        if self.n.numel():
            return int(self.n[0]), int(self.n[1])
        return inq_exponents(float(w.detach().abs().max()), self.bits)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        check_weight("inq", w)
        if self.incremental:
            if self.mask.shape != w.shape:
                raise ValueError(f"inq: frozen mask has shape {tuple(self.mask.shape)} but the "
                                 f"weight has {tuple(w.shape)}")
            return torch.where(self.mask, self.frozen.to(w.dtype), w)
        if self.float_phase:
            return w
        if not w.detach().abs().max() > 0:
            return w * 0  # an all-zero layer stays zero (no level set exists)
        return ste(w, inq_project(w, *self.exponents(w)))

    @torch.no_grad()
    def freeze(self, w: torch.Tensor, portion: float) -> int:
        """Freeze the largest-magnitude unfrozen weights until ``round(portion * numel)`` are.

        Returns how many weights were newly frozen.
        """
        check_weight("inq", w)
        portion = _check_portions([portion])[0]
        if not self.incremental:
            self.n = torch.tensor(inq_exponents(float(w.abs().max()), self.bits), device=w.device)
            self.mask = torch.zeros_like(w, dtype=torch.bool)
            self.frozen = torch.zeros_like(w)
        target = int(round(portion * w.numel()))
        new = target - int(self.mask.sum())
        if new <= 0:
            return 0
        # frozen entries get -1 so topk only picks among the free ones
        score = torch.where(self.mask, torch.full_like(w, -1.0), w.abs()).reshape(-1)
        idx = torch.topk(score, new).indices
        # New flat copies, not reshape(-1) views written in place: a channels-last mask (the engine
        # converts the model, buffers included, with train.channels_last, the default) reshapes to
        # a copy, and the writes went nowhere: every conv finished training unfrozen.
        flat_mask, flat_frozen = self.mask.flatten().clone(), self.frozen.flatten().clone()
        flat_mask[idx] = True
        n1, n2 = int(self.n[0]), int(self.n[1])
        flat_frozen[idx] = inq_project(w.reshape(-1)[idx], n1, n2).to(flat_frozen.dtype)
        self.mask, self.frozen = flat_mask.view(w.shape), flat_frozen.view(w.shape)
        return new

    def reset(self) -> None:
        """Leave incremental mode (back to projecting every weight with STE)."""
        self.mask = self.mask.new_zeros(0)
        self.frozen = self.frozen.new_zeros(0)
        self.n = self.n.new_zeros(0)
        self.float_phase = False

    def export_info(self, w: torch.Tensor | None = None) -> QuantInfo:
        if w is None:
            raise ValueError("inq export_info needs the weight tensor")
        if self.float_phase and not self.incremental:
            raise ValueError("inq: the weights are still in the schedule's float phase; finish the "
                             "schedule (portion 1.0) before export")
        if self.incremental and not bool(self.mask.all()):
            raise ValueError(f"inq: only {self.portion:.3f} of the weights are quantized; "
                             "finish the schedule (portion 1.0) before export")
        q = self.forward(w).detach()
        n1, n2 = self.exponents(w) if q.abs().max() > 0 else (0, 1 - 2 ** (self.bits - 1) // 2)
        levels = inq_levels(n1, n2)
        codes = np.searchsorted(levels, q.double().cpu().numpy())
        return QuantInfo("inq", "weight", self.bits, codes=codes.astype(np.int32), levels=levels,
                         signed=False, extra={"n1": n1, "n2": n2})

    def make_callback(self):
        # imported here: schedules.py imports this module (its schedules find quantizers by class)
        # lazy: cycle, seglearn.quant.schedules imports this module
        from seglearn.quant.schedules import INQSchedule

        return INQSchedule(self.portions, self.float_fraction)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # the buffers' shapes depend on the schedule's state: take them from the checkpoint
        for name in ("mask", "frozen", "n"):
            t = state_dict.get(prefix + name)
            if isinstance(t, torch.Tensor):
                setattr(self, name, torch.empty_like(t, device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return super().extra_repr() + (f", portions={list(self.portions)}, "
                                       f"float_fraction={self.float_fraction}")


def _check_portions(portions) -> tuple[float, ...]:
    try:
        ps = tuple(float(p) for p in portions)
    except (TypeError, ValueError):
        raise ValueError(f"inq: portions must be a list of numbers, not {portions!r}") from None
    if not ps or any(not 0.0 < p <= 1.0 for p in ps) or any(b <= a for a, b in zip(ps, ps[1:])):
        raise ValueError(f"inq: portions must increase strictly within (0, 1], got {list(ps)}")
    return ps


def _check_float_fraction(f) -> float:
    try:
        f = float(f)
    except (TypeError, ValueError):
        raise ValueError(f"inq: float_fraction must be a number in [0, 1), not {f!r}") from None
    if not 0.0 <= f < 1.0:
        raise ValueError(f"inq: float_fraction must lie in [0, 1) (the share of the training steps "
                         f"before the first freeze), got {f}")
    return f


register_quantizer("inq", PAPER, weight=INQWeight, default_bits={"weight": 5})
