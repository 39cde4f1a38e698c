"""Training-engine callbacks: how quantizer schedules (INQ, ELQ, TSQ steps) and weight clipping
(BinaryNet) plug into training without the engine knowing any method.

The engine calls, in order: ``on_train_start`` once (``on_resume`` instead when it continues a
checkpoint at a step > 0: the model's state, quantizer buffers included, came from the checkpoint and
must not be reset; the default falls back to ``on_train_start``); per step ``extra_loss`` (added to the task
loss, e.g. ELQ's loss-error term), then after ``optimizer.step()`` ``after_step`` (e.g. clip
BinaryNet's shadow weights to [-1, 1], re-apply INQ's frozen mask); ``on_train_end`` once.
``step`` counts optimizer steps from 0; ``total`` is the planned number of steps.
"""

from __future__ import annotations

import torch
from torch import nn


class Callback:
    def on_train_start(self, model: nn.Module, total: int) -> None:
        pass

    def on_resume(self, model: nn.Module, start: int, total: int) -> None:
        """Training continues at step ``start`` from a checkpoint (default: as a fresh start)."""
        self.on_train_start(model, total)

    def on_total_changed(self, model: nn.Module, step: int, total: int) -> None:
        """A time budget re-planned the run at ``step``: ``total`` steps from now on (schedules
        that fixed something from the total at the start recompute it)."""

    def before_step(self, model: nn.Module, step: int, total: int) -> None:
        pass

    def extra_loss(self, model: nn.Module, step: int, total: int) -> torch.Tensor | None:
        return None

    def after_step(self, model: nn.Module, step: int, total: int) -> None:
        pass

    def on_train_end(self, model: nn.Module) -> None:
        pass
