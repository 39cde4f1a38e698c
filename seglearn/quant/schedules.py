"""Training schedules of the quantizers, as :class:`seglearn.train.callbacks.Callback` objects.

A quantizer that needs one implements ``make_callback(self) -> Callback | None``;
:func:`seglearn.quant.convert.scheme_callbacks` collects them from a model. A callback that acts on
every layer of its method (rather than one quantizer) sets ``key``: callbacks with equal keys are
merged into one. Layers are found by their ``weight_quant`` attribute (seglearn.quant.layers).

- :class:`BinaryNetClip`: clip BinaryNet shadow weights to [-1, 1] after every optimizer step
  (Courbariaux et al. 2016).
- :class:`INQSchedule`: INQ's accumulated portions (Zhou et al. 2017), e.g. 50/75/87.5/100%, spread
  evenly over training: portion i starts at step ``floor(i * total / len(portions))``.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch import nn

from seglearn.train.callbacks import Callback


def quantized_layers(model: nn.Module, cls: type) -> Iterator[tuple[str, nn.Module, nn.Module]]:
    """``(name, layer, quantizer)`` for every layer whose ``weight_quant`` is an instance of ``cls``."""
    for name, m in model.named_modules():
        q = getattr(m, "weight_quant", None)
        if isinstance(q, cls):
            yield name, m, q


def layer_weight(layer: nn.Module) -> torch.Tensor:
    """The weight as its quantizer sees it ((out, in, kh, kw); transposed convs transpose it)."""
    view = getattr(layer, "quant_weight_view", None)
    return view() if callable(view) else layer.weight


class BinaryNetClip(Callback):
    """After each optimizer step clamp the shadow weights of BinaryNet layers to [-1, 1]."""

    key = "binarynet-clip"

    def after_step(self, model: nn.Module, step: int, total: int) -> None:
        from seglearn.quant.binarynet import BinaryNetWeight

        with torch.no_grad():
            for _, layer, q in quantized_layers(model, BinaryNetWeight):
                if q.clip:
                    layer.weight.clamp_(-1.0, 1.0)


class INQSchedule(Callback):
    """Freeze INQ weights portion by portion; see the module docstring.

    ``on_train_start`` resets every INQ quantizer and applies the first portion; ``before_step``
    applies portion i once ``step >= floor(i * total / n)``. With portions ending at 1.0 the model
    leaves training fully power-of-two.
    """

    def __init__(self, portions=(0.5, 0.75, 0.875, 1.0)):
        from seglearn.quant.inq import _check_portions

        self.portions = _check_portions(portions)
        self.key = ("inq-schedule", self.portions)
        self.applied = -1  # index of the last portion applied
        self.total = 0

    def boundaries(self, total: int) -> list[int]:
        n = len(self.portions)
        return [(i * total) // n for i in range(n)]

    def apply(self, model: nn.Module, portion: float) -> None:
        from seglearn.quant.inq import INQWeight

        for _, layer, q in quantized_layers(model, INQWeight):
            q.freeze(layer_weight(layer).detach(), portion)

    def on_train_start(self, model: nn.Module, total: int) -> None:
        from seglearn.quant.inq import INQWeight

        self.total, self.applied = int(total), -1
        for _, _, q in quantized_layers(model, INQWeight):
            q.reset()
        self.before_step(model, 0, total)

    def before_step(self, model: nn.Module, step: int, total: int) -> None:
        due = [i for i, b in enumerate(self.boundaries(total)) if step >= b]
        if due and due[-1] > self.applied:
            self.applied = due[-1]
            self.apply(model, self.portions[self.applied])
