"""featq: feature quantization of convolution inputs (Sun et al., CVPR 2018).

Floor mode (default, :class:`FeatQFloor`)::

    code = clamp(floor(beta_c x), qmin, qmax),   y = code / beta_c

``beta_c`` is per channel (axis 1 of an NCHW tensor), set from statistics, never learned: an EMA
(``momentum = 0.1``; the first training batch initialises) of the per-channel ``max|x|`` ``m_c``,
and ``beta_c = (2^k - 1) / m_c`` so that the 2^k codes 0..2^k-1 span ``[0, m_c]`` (unsigned, the
default: convolution inputs follow a ReLU). ``signed=True`` uses ``beta_c = (2^(k-1) - 1) / m_c``
and codes in ``[-2^(k-1), 2^(k-1) - 1]``. Backward: straight-through, ``dy/dx = 1``.

Power mode (:class:`FeatQPower`): the floor step, then ``y = sign(v) |v|^a`` on its output ``v``,
with a learnable exponent ``a`` (initial 1.0, so training starts from the floor model), kept in
``[a_min, a_max] = [0.1, 10]`` by default: the forward uses ``clamp(a, a_min, a_max)`` and
:class:`seglearn.quant.schedules.FeatQExponentClamp` (``make_callback``) projects ``a`` back after
every optimizer step. A positive ``a`` keeps ``0^a = 0`` and the levels increasing (``a <= 0``
gives NaN at 0, ``a < 0`` decreasing levels, which export refuses)::

    dy/dv = a |v|^(a-1)              (defined as 0 at v = 0 where a < 1: it is infinite there)
    dy/da = sign(v) |v|^a ln|v|      (defined as 0 at v = 0, its limit for a > 0)

:class:`PowerFunction` is that ``torch.autograd.Function``. For export, power becomes a lookup
table on the integer codes of the floor step: ``levels[c, j] = P_a(j / beta_c)``.

Export (both modes): ``codes=None``, ``scale = 1 / beta`` per channel (``axis=1``), per-channel
``levels`` (C, L) and ``thresholds`` (C, L-1) with ``t_j = j / beta_c``: floor puts ``x`` at code
``#(x >= t_j)``; base.QuantInfo's ``#(x > t_j)`` differs only when ``x`` equals a threshold.

Not implemented: the paper's third variant (+HPOW), a power function whose exponents are computed
from the input (data-dependent); its exponent changes per image, so it has no fixed lookup table
for the integer runtime.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from seglearn.quant.base import QuantInfo, Quantizer, moved_to, register_quantizer
from seglearn.quant.syq import resize_lazy_on_load

PAPER = "Sun et al., Feature Quantization for Defending Against Distortion of Images, CVPR 2018"
MODES = ("floor", "power")
A_RANGE = (0.1, 10.0)  # default [a_min, a_max]: positive, and levels that stay within float range


class PowerFunction(torch.autograd.Function):
    """``y = sign(x) |x|^a`` with the derivatives of the module docstring (``a`` a tensor)."""

    @staticmethod
    def forward(ctx, x, a):
        ax = x.abs()
        y = torch.sign(x) * ax.pow(a)
        ctx.save_for_backward(x, a, y)
        return y

    @staticmethod
    def backward(ctx, g):
        x, a, y = ctx.saved_tensors
        ax = x.abs()
        zero = ax == 0
        gx = gy = None
        if ctx.needs_input_grad[0]:
            d = a * ax.pow(a - 1)
            d = torch.where(zero & (a < 1), torch.zeros_like(d), d)
            gx = g * d
        if ctx.needs_input_grad[1]:
            log = torch.log(torch.where(zero, torch.ones_like(ax), ax))  # ln 1 = 0 at x = 0
            da = y * log
            gy = _sum_to(g * da, a.shape)
        return gx, gy


def _sum_to(t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Reduce a broadcast gradient back to ``shape``."""
    while t.ndim > len(shape):
        t = t.sum(0)
    for i, n in enumerate(shape):
        if n == 1 and t.shape[i] != 1:
            t = t.sum(i, keepdim=True)
    return t


def power(x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """``sign(x) |x|^a`` (see :class:`PowerFunction`)."""
    return PowerFunction.apply(x, a)


class FeatQFloor(Quantizer):
    """``y = floor(beta_c x) / beta_c`` with ``beta_c`` from an EMA of per-channel ``max|x|``.

    Buffers ``running_max`` (C,) and ``initialized`` are in the state dict; ``running_max`` is
    sized on the first batch (or from ``num_channels``) and resized when a state dict is loaded.
    """

    method, kind = "featq", "act"

    def __init__(self, bits: int = 4, momentum: float = 0.1, signed: bool = False,
                 num_channels: int | None = None):
        super().__init__()
        if not isinstance(bits, int) or isinstance(bits, bool) or not 2 <= bits <= 16:
            raise ValueError(f"featq bits must be an integer in [2, 16], not {bits!r}")
        if not 0.0 < float(momentum) <= 1.0:
            raise ValueError(f"featq momentum must be in (0, 1], not {momentum!r}")
        self.bits, self.momentum, self.signed = bits, float(momentum), bool(signed)
        self.register_buffer("running_max", torch.zeros(num_channels or 0))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    @property
    def qrange(self) -> tuple[int, int]:
        if self.signed:
            return -(2 ** (self.bits - 1)), 2 ** (self.bits - 1) - 1
        return 0, 2**self.bits - 1

    @staticmethod
    def _channel_max(x: torch.Tensor) -> torch.Tensor:
        if x.ndim < 2:
            raise ValueError(f"featq expects (N, C, ...) input, got shape {tuple(x.shape)}")
        dims = [d for d in range(x.ndim) if d != 1]
        return x.detach().abs().amax(dim=dims)

    @torch.no_grad()
    def observe(self, x: torch.Tensor) -> None:
        m = self._channel_max(x).to(self.running_max.dtype)
        if not bool(self.initialized) or self.running_max.shape != m.shape:
            if bool(self.initialized):
                raise ValueError(f"featq saw {m.numel()} channels, expected "
                                 f"{self.running_max.numel()}")
            self.running_max.data = m.clone()
            self.initialized.fill_(True)
        else:
            self.running_max.mul_(1 - self.momentum).add_(self.momentum * m)

    def beta(self, x: torch.Tensor | None = None) -> torch.Tensor:
        """Per-channel ``beta_c = qmax' / m_c`` (``qmax'`` = 2^k-1, or 2^(k-1)-1 signed); 1 if m_c = 0."""
        if bool(self.initialized):
            m = self.running_max
        elif x is not None:
            m = self._channel_max(x)
        else:
            raise ValueError("featq quantizer has seen no data: run a training batch first")
        top = self.qrange[1]
        return torch.where(m > 0, top / m.clamp_min(1e-30), torch.ones_like(m))

    def floor_quant(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.observe(x)
        beta = self.beta(x).to(x.dtype).reshape((1, -1) + (1,) * (x.ndim - 2))
        if x.shape[1] != beta.shape[1]:
            raise ValueError(f"featq has {beta.shape[1]} channels, input has {x.shape[1]}")
        lo, hi = self.qrange
        q = torch.clamp(torch.floor(x.detach() * beta), lo, hi) / beta
        return x + (q - x).detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.floor_quant(x)

    def _table(self, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.qrange
        j = np.arange(lo, hi + 1, dtype=np.float64)
        return j[None, :] / beta[:, None], j[None, 1:] / beta[:, None]

    def export_info(self, x: torch.Tensor | None = None) -> QuantInfo:
        beta = self.beta(x).detach().double().numpy()
        levels, thresholds = self._table(beta)
        return QuantInfo(method="featq", kind="act", bits=self.bits, codes=None, scale=1.0 / beta,
                         zero_point=0, axis=1, levels=levels, thresholds=thresholds,
                         signed=self.signed, extra={"mode": "floor", "beta": beta})

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        resize_lazy_on_load(self, state_dict, prefix, ["running_max"])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", signed={self.signed}"


class FeatQPower(FeatQFloor):
    """Floor quantization followed by ``sign(v)|v|^a``, ``a`` learnable in ``[a_min, a_max]``."""

    def __init__(self, bits: int = 4, momentum: float = 0.1, signed: bool = False,
                 num_channels: int | None = None, a_init: float = 1.0,
                 a_min: float = A_RANGE[0], a_max: float = A_RANGE[1]):
        super().__init__(bits=bits, momentum=momentum, signed=signed, num_channels=num_channels)
        if not 0 < float(a_min) < float(a_max) < float("inf"):
            raise ValueError(f"featq power exponent range needs 0 < a_min < a_max, got "
                             f"a_min={a_min!r}, a_max={a_max!r}")
        self.a_min, self.a_max = float(a_min), float(a_max)
        if not self.a_min <= float(a_init) <= self.a_max:
            raise ValueError(f"featq power exponent a_init must be in [{self.a_min}, {self.a_max}] "
                             f"(positive), not {a_init!r}")
        self.a = nn.Parameter(torch.tensor(float(a_init)))

    def exponent(self) -> torch.Tensor:
        """``clamp(a, a_min, a_max)``: a stored ``a`` outside (a loaded state, no callback) is never used
        as is. At the bounds clamp still passes the gradient, so a projected ``a`` can move back in."""
        return self.a.clamp(self.a_min, self.a_max)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return power(self.floor_quant(x), self.exponent().to(x.dtype))

    def make_callback(self):
        # imported here: schedules.py imports this module (its schedules find quantizers by class)
        # lazy: cycle, seglearn.quant.schedules imports this module
        from seglearn.quant.schedules import FeatQExponentClamp

        return FeatQExponentClamp()

    def export_info(self, x: torch.Tensor | None = None) -> QuantInfo:
        info = super().export_info(x)
        a = float(self.exponent().detach())
        info.levels = np.sign(info.levels) * np.abs(info.levels) ** a  # the lookup table
        info.extra.update(mode="power", a=a)
        return info

    def extra_repr(self) -> str:
        return super().extra_repr() + f", a_range=[{self.a_min}, {self.a_max}]"


def featq_act(mode: str = "floor", **kwargs) -> FeatQFloor:
    """The registered act constructor: ``mode="floor"`` (default) or ``"power"``."""
    if mode not in MODES:
        raise ValueError(f"featq mode must be one of {MODES}, not {mode!r}")
    return FeatQFloor(**kwargs) if mode == "floor" else FeatQPower(**kwargs)


__getattr__ = moved_to(__name__, "seglearn.quant.schedules", "FeatQExponentClamp")

register_quantizer("featq", PAPER, act=featq_act, default_bits={"act": 4})
