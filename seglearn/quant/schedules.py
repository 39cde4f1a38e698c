"""Training schedules of the quantizers, as :class:`seglearn.train.callbacks.Callback` objects.

A quantizer that needs one implements ``make_callback(self) -> Callback | None``;
:func:`seglearn.quant.convert.scheme_callbacks` collects them from a model. A callback that acts on
every layer of its method (rather than one quantizer) sets ``key``: callbacks with equal keys are
merged into one. Layers are found by their ``weight_quant`` attribute (seglearn.quant.layers).

- :class:`BinaryNetClip`: clip BinaryNet shadow weights to [-1, 1] after every optimizer step
  (Courbariaux et al. 2016).
- :class:`INQSchedule`: INQ (Zhou et al. 2017) inside one budget: a float phase, then the
  accumulated portions (e.g. 50/75/87.5/100%) over the remaining steps, the last one after the last
  step (see :mod:`seglearn.quant.inq`).
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
    """Float phase, then freeze INQ weights portion by portion; see :mod:`seglearn.quant.inq`.

    With T planned steps and ``t0 = floor(float_fraction T)``: steps ``[0, t0)`` train float weights;
    portion i < n - 1 is frozen before step ``t0 + floor(i (T - t0) / (n - 1))``; the last portion
    after step T - 1 (``after_step``), before the engine's final checkpoint. A resumed run
    (``on_resume``) keeps the checkpoint's frozen set and applies only what is due from then on;
    freezing is idempotent (a portion already reached freezes nothing new).
    """

    def __init__(self, portions=(0.5, 0.75, 0.875, 1.0), float_fraction: float = 0.5):
        from seglearn.quant.inq import _check_float_fraction, _check_portions

        self.portions = _check_portions(portions)
        self.float_fraction = _check_float_fraction(float_fraction)
        self.key = ("inq-schedule", self.portions, self.float_fraction)
        self.applied = -1  # index of the last portion applied
        self.total = 0

    def float_steps(self, total: int) -> int:
        return int(self.float_fraction * total)

    def boundaries(self, total: int) -> list[int]:
        """Portion i is frozen before step ``boundaries[i]``; the last boundary is ``total``
        (after the last step)."""
        n, t0 = len(self.portions), self.float_steps(total)
        if n == 1:
            return [total]
        return [t0 + (i * (total - t0)) // (n - 1) for i in range(n - 1)] + [total]

    def _quantizers(self, model: nn.Module):
        from seglearn.quant.inq import INQWeight

        return list(quantized_layers(model, INQWeight))

    def apply(self, model: nn.Module, portion: float) -> None:
        for _, layer, q in self._quantizers(model):
            q.float_phase = False
            q.freeze(layer_weight(layer).detach(), portion)

    def _set_float_phase(self, model: nn.Module, step: int, total: int) -> None:
        on = step < self.float_steps(total)
        for _, _, q in self._quantizers(model):
            q.float_phase = on and not q.incremental

    def on_train_start(self, model: nn.Module, total: int) -> None:
        self.total, self.applied = int(total), -1
        for _, _, q in self._quantizers(model):
            q.reset()
        self._set_float_phase(model, 0, total)
        self.before_step(model, 0, total)

    def on_resume(self, model: nn.Module, start: int, total: int) -> None:
        # no reset: mask / frozen / n came from the checkpoint
        self.total, self.applied = int(total), -1
        self._set_float_phase(model, start, total)
        self.before_step(model, start, total)

    def on_total_changed(self, model: nn.Module, step: int, total: int) -> None:
        self.total = int(total)  # boundaries are read from each call's total; on_train_end's too

    def _apply_due(self, model: nn.Module, step: int, total: int) -> None:
        due = [i for i, b in enumerate(self.boundaries(total)) if step >= b]
        if due and due[-1] > self.applied:
            for i in range(self.applied + 1, due[-1] + 1):
                self.apply(model, self.portions[i])
            self.applied = due[-1]

    def before_step(self, model: nn.Module, step: int, total: int) -> None:
        self._apply_due(model, step, total)

    def after_step(self, model: nn.Module, step: int, total: int) -> None:
        if step + 1 >= total:  # the last portion, before the engine's final checkpoint
            self._apply_due(model, total, total)

    def on_train_end(self, model: nn.Module) -> None:
        if self.total:
            self._apply_due(model, self.total, self.total)
