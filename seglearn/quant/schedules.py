"""Training schedules of the quantizers, and the callback protocol the training engine runs them by.

One home for everything a quantizer does *during* training (the engine, seglearn.train.engine,
knows no method). ``seglearn.train`` imports this module (``train/callbacks.py`` re-exports
:class:`Callback`); nothing in ``seglearn.quant`` imports ``seglearn.train``.

The protocol (:class:`Callback`). The engine calls, in order: ``on_train_start`` once
(``on_resume`` instead when it continues a checkpoint at a step > 0: the model's state, quantizer
buffers included, came from the checkpoint and must not be reset; the default falls back to
``on_train_start``); per step ``before_step``, then ``extra_loss`` (added to the task loss, e.g.
ELQ's loss-error term), then after ``optimizer.step()`` ``after_step`` (e.g. clip BinaryNet's
shadow weights to [-1, 1], re-apply INQ's frozen mask); ``on_total_changed`` when a time budget
re-plans the run; ``on_train_end`` once. ``step`` counts optimizer steps from 0; ``total`` is the
planned number of steps.

A quantizer that needs a schedule implements ``make_callback(self) -> Callback | None``;
:func:`seglearn.quant.convert.scheme_callbacks` collects them from a model. A callback that acts on
every layer of its method (rather than one quantizer) sets ``key``: callbacks with equal keys are
merged into one. Layers are found by their ``weight_quant`` attribute (seglearn.quant.layers).

- :class:`BinaryNetClip`: clip BinaryNet shadow weights to [-1, 1] after every optimizer step
  (Courbariaux et al. 2016).
- :class:`INQSchedule`: INQ (Zhou et al. 2017) inside one budget: a float phase, then the
  accumulated portions (e.g. 50/75/87.5/100%) over the remaining steps, the last one after the last
  step (see :mod:`seglearn.quant.inq`).
- :class:`ELQCallback`: ELQ (Zhou et al. 2018): one quantizer's growing ``portion`` and its
  explicit loss-error term (see :mod:`seglearn.quant.elq`).
- :class:`FeatQExponentClamp`: featq power mode (Sun et al. 2018): project every exponent ``a``
  onto ``[a_min, a_max]`` after each step (see :mod:`seglearn.quant.featq`).
- :class:`IAOSchedule`: IAO (Jacob et al. 2018, section 3.1): the activation ranges' EMA decay from
  the budget and the float-activation delay (see :mod:`seglearn.quant.iao`).
- :class:`TSQSchedule`: TSQ (Wang et al. 2018): step 1 (code learning), the layer-wise solve, step 2
  (fine-tuning the ternary weights) (see :mod:`seglearn.quant.tsq`).

The method modules import this one only inside ``make_callback`` (it imports them: a schedule
finds its quantizers by class); their old names (``seglearn.quant.elq.ELQCallback`` ...) still
resolve here (``base.moved_to``).
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch import nn

from seglearn.quant.binarynet import BinaryNetWeight
from seglearn.quant.elq import ELQWeight
from seglearn.quant.featq import FeatQPower
from seglearn.quant.iao import IAOAct, delay_steps, ema_decay
from seglearn.quant.inq import INQWeight, _check_float_fraction, _check_portions
from seglearn.quant.tsq import (TSQAct, TSQWeight, check_schedule_args, set_weight_quant_active,
                                tsq_transform)


class Callback:
    """The training-engine callback protocol (see the module docstring); every hook is a no-op."""

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


# ---------------------------------------------------------------- helpers

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


# ---------------------------------------------------------------- BinaryNet

class BinaryNetClip(Callback):
    """After each optimizer step clamp the shadow weights of BinaryNet layers to [-1, 1]."""

    key = "binarynet-clip"

    def after_step(self, model: nn.Module, step: int, total: int) -> None:
        with torch.no_grad():
            for _, layer, q in quantized_layers(model, BinaryNetWeight):
                if q.clip:
                    layer.weight.clamp_(-1.0, 1.0)


# ---------------------------------------------------------------- INQ

class INQSchedule(Callback):
    """Float phase, then freeze INQ weights portion by portion; see :mod:`seglearn.quant.inq`.

    With T planned steps and ``t0 = floor(float_fraction T)``: steps ``[0, t0)`` train float weights;
    portion i < n - 1 is frozen before step ``t0 + floor(i (T - t0) / (n - 1))``; the last portion
    after step T - 1 (``after_step``), before the engine's final checkpoint. A resumed run
    (``on_resume``) keeps the checkpoint's frozen set and applies only what is due from then on;
    freezing is idempotent (a portion already reached freezes nothing new).
    """

    def __init__(self, portions=(0.5, 0.75, 0.875, 1.0), float_fraction: float = 0.5):
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


# ---------------------------------------------------------------- ELQ

class ELQCallback(Callback):
    """Grows one quantizer's ``portion`` along its schedule and adds its loss-error term."""

    def __init__(self, quantizer: ELQWeight):
        self.q = quantizer

    def portion_at(self, step: int, total: int) -> float:
        sched = self.q.schedule
        i = min(len(sched) - 1, step * len(sched) // max(total, 1))
        return sched[i]

    def on_train_start(self, model: nn.Module, total: int) -> None:
        self.q.clear()
        self.q.portion = self.portion_at(0, total)

    def before_step(self, model: nn.Module, step: int, total: int) -> None:
        self.q.portion = self.portion_at(step, total)

    def extra_loss(self, model: nn.Module, step: int, total: int) -> torch.Tensor | None:
        return self.q.loss_error()

    def on_train_end(self, model: nn.Module) -> None:
        self.q.portion = 1.0
        self.q.clear()  # drop the references to the last graph


# ---------------------------------------------------------------- featq

class FeatQExponentClamp(Callback):
    """After each optimizer step project every power exponent onto ``[a_min, a_max]``."""

    key = "featq-exponent-clamp"

    def after_step(self, model: nn.Module, step: int, total: int) -> None:
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, FeatQPower):
                    m.a.clamp_(m.a_min, m.a_max)


# ---------------------------------------------------------------- IAO

class IAOSchedule(Callback):
    """Set every IAO activation quantizer's EMA decay from the budget and delay its quantization.

    ``on_train_start``: ``decay = ema_decay(ema_span, T)`` (unless ``ema_span`` is None);
    ``before_step``: quantize from step ``delay_steps(delay, T)`` on; ``on_train_end``: quantize.
    The decision is made from the step itself, so a resumed run continues the schedule.
    """

    key = "iao-schedule"

    @staticmethod
    def _acts(model: nn.Module):
        return [m for m in model.modules() if isinstance(m, IAOAct)]

    def on_train_start(self, model: nn.Module, total: int) -> None:
        for q in self._acts(model):
            if q.ema_span is not None:
                q.decay = ema_decay(q.ema_span, total)

    def on_total_changed(self, model: nn.Module, step: int, total: int) -> None:
        self.on_train_start(model, total)  # the EMA's time constant follows the planned steps

    def before_step(self, model: nn.Module, step: int, total: int) -> None:
        for q in self._acts(model):
            q.enabled = step >= delay_steps(q.delay, total)

    def on_train_end(self, model: nn.Module) -> None:
        for q in self._acts(model):
            q.enabled = True


# ---------------------------------------------------------------- TSQ

class TSQSchedule(Callback):
    """TSQ's two steps over a ``fit`` budget of ``total`` steps (from :meth:`TSQWeight.make_callback`).

    Step 1 (code learning), steps ``[0, switch)`` with ``switch = max(1, round(step1 * total))``:
    every TSQWeight is off (full-precision weights), the TSQAct quantizers train the sparse codes.
    A forward pre-hook keeps the inputs of the last ``solve_batches`` training batches.
    At the end of step ``switch - 1`` (``after_step``, so a checkpoint written at ``switch`` already
    holds the result): :func:`tsq_transform` on those batches solves every layer's alpha and ternary
    W against its step-1 codes and switches the quantizers on. Step 2, steps ``[switch, total)``:
    fine-tuning with the solved ternary weights (straight-through to W, TWN per row).
    A run resumed at or after ``switch`` finds the solved weights in its checkpoint: the
    quantizers are switched on without solving again. ``report`` holds tsq_transform's report.
    """

    def __init__(self, step1: float = 0.75, solve_iters: int = 10, solve_batches: int = 4,
                 max_cols: int = 2048):
        args = check_schedule_args(step1, solve_iters, solve_batches, max_cols)
        self.step1, self.solve_iters = args["step1"], args["solve_iters"]
        self.solve_batches, self.max_cols = args["solve_batches"], args["max_cols"]
        self.key = ("tsq-schedule", self.step1, self.solve_iters, self.solve_batches, self.max_cols)
        self.phase, self.switch, self.report = 0, 0, {}
        self._inputs: list[torch.Tensor] = []
        self._hook = None

    def switch_step(self, total: int) -> int:
        return min(max(1, round(self.step1 * total)), max(int(total), 1))

    def _record(self, module, args):
        if module.training and args and isinstance(args[0], torch.Tensor):
            self._inputs = (self._inputs + [args[0].detach()])[-self.solve_batches:]

    def _unhook(self):
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def on_train_start(self, model: nn.Module, total: int) -> None:
        mine = {"step1": self.step1, "solve_iters": self.solve_iters,
                "solve_batches": self.solve_batches, "max_cols": self.max_cols}
        for m in model.modules():
            if isinstance(m, TSQWeight) and {k: type(mine[k])(v) for k, v in m.schedule_args.items()} != mine:
                raise ValueError(f"tsq weight_args step1/solve_iters/solve_batches/max_cols differ "
                                 f"between layers ({m.schedule_args} vs {mine}): the two steps are "
                                 "one schedule for the whole model")
            if isinstance(m, TSQAct) and m.eps < 0:
                raise ValueError(f"tsq act theta={m.theta} gives epsilon={m.eps:.3f} < 0: the codes "
                                 "of a ReLU output need theta >= 0.5")
        self.switch, self.phase, self._inputs = self.switch_step(total), 1, []
        set_weight_quant_active(model, False)
        self._unhook()
        self._hook = model.register_forward_pre_hook(self._record)

    def on_total_changed(self, model: nn.Module, step: int, total: int) -> None:
        if self.phase == 1:  # still in step 1: the switch moves with the planned steps
            self.switch = max(self.switch_step(total), step + 1)

    def before_step(self, model: nn.Module, step: int, total: int) -> None:
        if self.phase == 1 and step >= self.switch:  # resumed after the solve: weights are solved
            self._finish(model, solve=False)

    def after_step(self, model: nn.Module, step: int, total: int) -> None:
        if self.phase == 1 and step + 1 >= self.switch:
            self._finish(model, solve=True)

    def on_train_end(self, model: nn.Module) -> None:
        if self.phase == 1:
            self._finish(model, solve=bool(self._inputs))
        self._unhook()

    def _finish(self, model: nn.Module, solve: bool) -> None:
        self._unhook()
        if solve:
            self.report = tsq_transform(model, self._inputs, iters=self.solve_iters,
                                        max_cols=self.max_cols)
        else:
            set_weight_quant_active(model, True)
        self.phase, self._inputs = 2, []
