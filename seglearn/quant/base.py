"""The quantizer contract every method in the zoo follows, and the registry configs name them by.

A quantizer is an ``nn.Module``: ``forward(x)`` returns the fake-quantized tensor (same shape, float,
with the method's straight-through gradient), and ``export_info(x)`` returns a :class:`QuantInfo`,
everything export needs to turn the layer into integer ops (Brevitas' habit: value, scale,
zero-point and bit width travel together so export never guesses).

Real value of a code, uniform case: ``r = scale * (code - zero_point)`` (``scale`` broadcast along
``axis`` when per-channel). Non-uniform quantizers (HWGQ, TSQ, featq power, INQ powers of two) set
``levels``: ``r = levels[code]`` (per channel when 2-D), and for activations ``thresholds``: the code
of ``x`` is the number of thresholds ``x`` exceeds (``x > t``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import numpy as np
import torch
from torch import nn

from seglearn.registry import Registry

def moved_to(module: str, target: str, *names: str) -> Callable[[str], Any]:
    """A module ``__getattr__`` (PEP 562) for ``names`` that moved from ``module`` to ``target``:
    ``from module import name`` keeps working, resolved on first use (``target`` imports ``module``,
    so ``module`` cannot import it at its top)."""
    def __getattr__(name: str) -> Any:
        if name in names:
            return getattr(importlib.import_module(target), name)
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    return __getattr__


Kind = Literal["weight", "act"]
KINDS: tuple[str, ...] = ("weight", "act")


@dataclass
class QuantInfo:
    """What export needs from a quantizer.

    method:      registry name ("twn", "iao", ...)
    kind:        "weight" or "act"
    bits:        bit width of the integer code
    codes:       integer codes of the exported tensor (weights); None for activations
    scale:       float or per-channel array; r = scale * (code - zero_point) for uniform codes
    zero_point:  int or per-channel int array (0 for symmetric codes)
    axis:        channel axis of per-channel scale/zero_point (0 = output channels), None if per-tensor
    levels:      real value of each code for non-uniform quantizers (shape (L,) or (C, L)), else None
    thresholds:  activations: code = #(x > thresholds) (shape (L-1,) or (C, L-1)), else None
    signed:      whether codes are signed integers
    extra:       method-specific values (e.g. featq exponent, INQ exponents n1/n2)
    """

    method: str
    kind: str
    bits: int
    codes: np.ndarray | None = None
    scale: Any = 1.0
    zero_point: Any = 0
    axis: int | None = None
    levels: np.ndarray | None = None
    thresholds: np.ndarray | None = None
    signed: bool = True
    extra: dict = field(default_factory=dict)

    def dequantize(self) -> np.ndarray:
        """Real values of ``codes`` (for tests and export checks)."""
        if self.codes is None:
            raise ValueError(f"{self.method} {self.kind} quantizer info carries no codes")
        codes = self.codes.astype(np.float64)
        if self.levels is not None and np.ndim(self.levels) == 1:
            return np.asarray(self.levels, dtype=np.float64)[self.codes.astype(np.int64)]
        scale = np.asarray(self.scale, dtype=np.float64)
        zp = np.asarray(self.zero_point, dtype=np.float64)
        if self.axis is not None and scale.ndim == 1:
            shape = [1] * codes.ndim
            shape[self.axis] = -1
            scale = scale.reshape(shape)
            zp = zp.reshape(shape) if zp.ndim == 1 else zp
        return scale * (codes - zp)


class Quantizer(nn.Module):
    """Base class: subclasses set ``method``, ``kind`` and ``bits`` and implement forward/export_info."""

    method: str = "?"
    kind: str = "weight"
    bits: int = 32

    def export_info(self, x: torch.Tensor | None = None) -> QuantInfo:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} does not export")

    def extra_repr(self) -> str:
        return f"method={self.method}, kind={self.kind}, bits={self.bits}"


@dataclass
class QuantizerSpec:
    """One registered method: a constructor per kind it supports, and its default bit widths."""

    name: str
    paper: str
    makers: dict[str, Callable[..., Quantizer]]
    default_bits: dict[str, int]

    def kinds(self) -> list[str]:
        return sorted(self.makers)


QUANTIZERS: Registry[QuantizerSpec] = Registry("quantizer")


def register_quantizer(name: str, paper: str, weight: Callable[..., Quantizer] | None = None,
                       act: Callable[..., Quantizer] | None = None,
                       default_bits: dict[str, int] | None = None) -> QuantizerSpec:
    """Register a method with its weight and/or activation constructors."""
    makers = {k: v for k, v in (("weight", weight), ("act", act)) if v is not None}
    if not makers:
        raise ValueError(f"quantizer {name!r} needs at least one of weight= or act=")
    spec = QuantizerSpec(name, paper, makers, dict(default_bits or {}))
    QUANTIZERS.add(name, spec)
    return spec


def get_quantizer(name: str, kind: str = "weight", **kwargs: Any) -> Quantizer:
    """Build quantizer ``name`` for ``kind`` ("weight" or "act") with the paper's defaults.

    Unknown names raise a ValueError listing the known ones; a kind the method does not have raises
    a ValueError naming the kinds it has.
    """
    _ensure_loaded()
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    spec = QUANTIZERS.get(name)
    if kind not in spec.makers:
        raise ValueError(
            f"quantizer {name!r} has no {kind!r} kind; it has: {', '.join(spec.kinds())}")
    return spec.makers[kind](**kwargs)


def list_quantizers() -> list[str]:
    """Names of every registered quantizer."""
    _ensure_loaded()
    return QUANTIZERS.names()


def _ensure_loaded() -> None:
    # The method modules register themselves on import; importing the package imports them all.
    # lazy: cycle, seglearn.quant imports this module (at the top it would bind the half-imported
    # package; at call time every method is registered)
    import seglearn.quant  # noqa: F401
