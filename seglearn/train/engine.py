"""The training engine: step-based fitting with bf16 autocast, channels-last, callbacks, resumable
checkpoints and rich progress.

Checkpoints are plain dicts of tensors and numbers written with ``torch.save`` to a temporary file
and atomically renamed, and read back with ``torch.load(weights_only=True)``: a killed process
leaves the previous checkpoint intact, and ``resume=True`` continues from it.

A loss that is not finite, or that grows past ``EXPLODED`` times the run's first one, stops
training before the update (:class:`TrainingDiverged`, naming the step and suggesting a lower
``train.lr``, or ``final.lr`` where that set the rate), and the weights are checked before every
checkpoint and at the end: a diverged run never writes a checkpoint or returns a model, so what is
on disk is the last good step.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn

from seglearn import atomic
from seglearn.config import TrainConfig
from seglearn.models.device import resolve_device
from seglearn.models.precision import autocast_context, bf16_is_fast  # noqa: F401 (re-export)
from seglearn.train.losses import segmentation_loss

if TYPE_CHECKING:  # an annotation only: importing it loads the quantizer zoo (scipy), ~1 s
    from seglearn.quant.schedules import Callback


class CheckpointError(ValueError):
    """A checkpoint that cannot be read as a seglearn state dict."""


class TrainingDiverged(ValueError):
    """The loss became NaN/inf or exploded, or the weights stopped being finite: training stops
    before a broken model can be saved; the last checkpoint, written before, is kept."""


# A loss this many times the run's first one is an explosion (segmentation losses start near 1
# and fall; a too-high learning rate sends the logits, and with them BCE, off by orders of magnitude).
EXPLODED = 1000.0


def _diverged(what: str, step: int, steps: int, cfg: TrainConfig, kept: int,
              lr_key: str = "train.lr") -> TrainingDiverged:
    keep = (f"the checkpoint of step {kept} is kept (`seglearn train --resume` continues from it)"
            if kept else "no checkpoint was written")
    return TrainingDiverged(
        f"training stopped at step {step + 1} of {steps}: {what}; {lr_key}={cfg.lr:g} is probably "
        f"too high: try a lower one (e.g. --set {lr_key}={cfg.lr / 10:g}). Nothing was saved as a "
        f"finished model; {keep}")


def _weights_finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in model.state_dict().values()
               if torch.is_tensor(t) and t.is_floating_point())


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Atomic (``seglearn.atomic``): a full disk is a DiskFullError naming the device and the file,
    and leaves no temp file. torch.save goes to memory first: writing to the file itself, torch
    turns ENOSPC into an opaque RuntimeError."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic.output(path) as fh:
        torch.save(state, fh)


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint with ``weights_only=True`` (no code execution); clear error otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols: our error says it
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for corrupt or unsafe files
        if "Weights only load failed" in str(e):
            # torch's own text suggests weights_only=False, i.e. running the file's code: never.
            raise CheckpointError(f"checkpoint {path} cannot be read safely: it holds Python "
                                  "objects besides tensors and plain values; loading them could "
                                  "run code, so seglearn refuses it (retrain, or re-save it as a "
                                  "state dict where it was made)") from None
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"checkpoint {path} cannot be read as a state dict "
                              f"(only tensors and plain values are accepted): {first}") from None
    if not isinstance(state, dict) or "model" not in state or not isinstance(state["model"], dict):
        raise CheckpointError(f"checkpoint {path} is not a seglearn checkpoint "
                              "(expected a dict with a 'model' state dict)")
    return state


def load_model_state(model: nn.Module, state_dict: dict, path: str | Path = "checkpoint") -> None:
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as e:
        msg = str(e).splitlines()[0]
        raise CheckpointError(f"checkpoint {path} does not fit this model: {msg}") from None


@dataclass
class FitResult:
    steps: int
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    data_seconds: float = 0.0    # time spent waiting for batches (augmentation, loading)
    resumed_from: int = 0

    @property
    def final_loss(self) -> float:
        tail = self.losses[-10:]
        return float(sum(tail) / max(len(tail), 1))


def _cycle(batches: Iterable) -> Iterator:
    while True:
        empty = True
        for b in batches:
            empty = False
            yield b
        if empty:
            raise ValueError("the training data yielded no batches")


def fit(model: nn.Module, batches: Iterable[dict], cfg: TrainConfig, steps: int | None = None,
        callbacks: list[Callback] | None = None, checkpoint: str | Path | None = None,
        resume: bool = False, contour_weight: float = 1.0, progress: bool = True,
        description: str = "training", minutes: float | None = None,
        lr_key: str = "train.lr") -> FitResult:
    """Train ``model`` for ``steps`` optimizer steps on an iterable of dict(image, target) batches.

    AdamW with cosine learning-rate decay. Every ``cfg.checkpoint_every`` steps (and at the end) the
    model, optimizer and step counter are saved to ``checkpoint``; with ``resume=True`` training
    continues from the last saved step.

    ``minutes`` (> 0): a wall-clock budget instead of ``steps``. The planned number of steps T is
    measured, not guessed: ``T = done + (budget - elapsed) / (seconds per step)`` after the first
    ``BUDGET_PROBE`` steps and again at ``BUDGET_REVISE`` of T (the rate then excludes the first
    step, which pays for start-up and the data cache's first epoch). Every schedule reads T at each
    step (the cosine decay, INQ's and ELQ's portions, TSQ's steps), and T stops moving at 20% of
    the run, before the first of them depends on it (INQ's float phase is half the run). The
    checkpoint stores T, so a resumed run keeps the schedule; one saved within the probe steps,
    before T is known, stores the budget spent instead, and the resumed run measures T again
    over what is left. There is no hard stop: the last
    quantization step must run, so a run can end a few percent past its budget when the rate
    changes late.

    Warm-up (``cfg.warmup`` > 0) lasts ``W = round(warmup * T)`` steps. Under a budget W is fixed
    at the first estimate of T and then kept (a ramp re-laid over each revised T would jump); the
    probe steps before it, whose W is not yet known, run at the ramp's start (learning rate 0:
    AdamW's moment estimates fill, the weights wait). The checkpoint stores W with T.

    ``lr_key``: the config key that set ``cfg.lr`` (``config.role_key``), named by the message of a
    diverged run, so it suggests the key that changes the rate (``final.lr`` where it is set).
    """
    steps = steps or cfg.steps
    budget_s = 60.0 * float(minutes) if minutes else None
    warmup = float(getattr(cfg, "warmup", 0.0))
    # W in steps; None = not known yet (a budget's probe steps)
    warmup_steps: int | None = 0 if warmup <= 0 else (
        None if budget_s is not None else int(round(warmup * steps)))
    if budget_s is not None:
        # provisional until the first estimate: long enough that no schedule's first phase (INQ's
        # float half, IAO's 10% delay, ELQ's first quarter) can end within the probe steps
        steps = max(steps, BUDGET_PROVISIONAL)
    spent_before = 0.0  # budget seconds spent by the runs this one resumes
    callbacks = list(callbacks or [])
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start = 0
    if resume and checkpoint is not None and Path(checkpoint).is_file():
        state = load_checkpoint(checkpoint)
        load_model_state(model, state["model"], checkpoint)
        if "optimizer" in state:
            opt.load_state_dict(state["optimizer"])
        start = int(state.get("step", 0))
        if budget_s is not None and int(state.get("total", 0)) > 0:
            budget_s = None  # the schedule was laid over the budget by the first run: keep it
            steps = int(state["total"])
            if warmup > 0:
                warmup_steps = int(state.get("warmup_steps", round(warmup * steps)))
        elif budget_s is not None:
            # saved within the probe steps, before T was estimated: what is left of the budget is
            # measured again from here (a provisional T kept on resume would be the run's length)
            spent_before = float(state.get("budget_spent_s", 0.0))
            budget_s = max(0.0, budget_s - spent_before)
    result = FitResult(steps=steps, resumed_from=start)
    saved = start  # the step of the checkpoint on disk (0: none of this run)
    use_amp = cfg.bf16
    for cb in callbacks:
        if start > 0:  # the checkpoint holds the schedules' state (INQ's frozen set): keep it
            cb.on_resume(model, start, steps)
        else:
            cb.on_train_start(model, steps)
    model.train()
    it = _cycle(batches)
    t0 = time.perf_counter()
    clock = budget_clock(getattr(cfg, "clock", "wall"))
    b0 = clock()
    prog = _progress(progress)
    with prog:
        task = prog.add_task(description, total=steps, completed=start)
        step, t_first = start, None
        estimated = False  # under a budget: has T been estimated in this run yet
        while step < steps:
            for cb in callbacks:
                cb.before_step(model, step, steps)
            # Computed from the step itself, so a resumed run continues the schedule.
            for group in opt.param_groups:
                group["lr"] = (0.0 if warmup_steps is None
                               else warmup_cosine(cfg.lr, step, steps, warmup_steps))
            t_data = time.perf_counter()
            batch = next(it)
            result.data_seconds += time.perf_counter() - t_data
            x = batch["image"].to(device)
            y = batch["target"].to(device)
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast_context(device, use_amp):
                logits = model(x)
            loss = segmentation_loss(logits, y, contour_weight)
            for cb in callbacks:
                extra = cb.extra_loss(model, step, steps)
                if extra is not None:
                    loss = loss + extra
            value = float(loss.detach())
            # Checked before the update: a NaN loss would turn every weight into NaN.
            if not math.isfinite(value):
                raise _diverged(f"the loss is {value}", step, steps, cfg, saved, lr_key)
            if result.losses and value > EXPLODED * max(result.losses[0], 1e-3):
                raise _diverged(f"the loss exploded to {value:.4g} (it started at "
                                f"{result.losses[0]:.4g})", step, steps, cfg, saved, lr_key)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            for cb in callbacks:
                cb.after_step(model, step, steps)
            result.losses.append(value)
            prog.update(task, advance=1, description=f"{description} loss {result.final_loss:.3f}")
            done = step + 1
            if budget_s is not None:
                now = clock()
                if t_first is None:
                    t_first = now
                new = _budget_steps(budget_s, now - b0, now - t_first, done, start, steps)
                if new is not None:
                    estimated = True
                if new is not None and warmup_steps is None:
                    warmup_steps = int(round(warmup * new))  # fixed here: the ramp never moves
                if new is not None and new != steps:
                    steps = result.steps = new
                    prog.update(task, total=steps)
                    for cb in callbacks:
                        cb.on_total_changed(model, done, steps)
            if done % max(cfg.checkpoint_every, 1) == 0 or done == steps:
                # An infinite gradient leaves a finite loss but NaN weights: never save or return
                # those (checked at each checkpoint and at the end, not every step: it is a sync).
                if not _weights_finite(model):
                    raise _diverged("the weights are no longer finite numbers", step, steps, cfg,
                                    saved, lr_key)
                if checkpoint is not None:
                    # T is stored only once it is known: a provisional T (before the first
                    # estimate) would be kept by a resumed run as the run's length
                    planned = budget_s is None or estimated
                    save_checkpoint(checkpoint, {
                        "model": model.state_dict(), "optimizer": opt.state_dict(), "step": done,
                        **({"total": steps} if planned else {}),
                        **({"warmup_steps": warmup_steps} if warmup_steps else {}),
                        **({"budget_spent_s": spent_before + clock() - b0}
                           if budget_s is not None else {})})
                    saved = done
            step = done
    for cb in callbacks:
        cb.on_train_end(model)
    model.eval()
    result.seconds = time.perf_counter() - t0
    return result


def learning_rate(peak: float, step: int, total: int, warmup: float = 0.0) -> float:
    """The learning rate of ``step`` (0-based) of ``total``: a linear warm-up over the first
    ``W = round(warmup * total)`` steps, ``peak (t + 1) / W``, then the cosine decay (Loshchilov &
    Hutter 2017, no restarts) over the rest, ``peak (1 + cos(pi (t - W) / (total - W))) / 2``;
    ``warmup = 0`` is the plain cosine from ``peak``. The warm-up keeps AdamW's first steps, whose
    second-moment estimates rest on few gradients, from taking the largest updates of the run."""
    return warmup_cosine(peak, step, total, int(round(warmup * total)))


def warmup_cosine(peak: float, step: int, total: int, w: int) -> float:
    """:func:`learning_rate` with the warm-up given as ``w`` steps (``fit`` under a minutes budget
    fixes ``w`` once while the total may still move)."""
    if step < w:
        return peak * (step + 1) / w
    return peak * 0.5 * (1 + math.cos(math.pi * (step - w) / max(total - w, 1)))


BUDGET_PROBE = 5        # steps timed before the first estimate of a budget's step count
BUDGET_REVISE = (0.1, 0.2)  # later estimates, as fractions of the estimated total; none after
MIN_BUDGET_STEPS = 8    # a budget always trains this many steps (every schedule needs a few)
BUDGET_PROVISIONAL = 20 * BUDGET_PROBE  # the planned total before the first estimate


def budget_clock(kind: str):
    """The clock a minutes budget counts: ``wall`` (time.perf_counter) or ``cpu`` (this process's
    CPU seconds / torch's intra-op threads, so an idle machine reads the same as the wall; on a
    shared machine the run gets the same work however busy the other processes keep the cores)."""
    if kind == "wall":
        return time.perf_counter
    if kind == "cpu":
        threads = max(1, torch.get_num_threads())
        return lambda: time.process_time() / threads
    raise ValueError(f"train.clock must be wall or cpu, not {kind!r}")


def _budget_steps(budget_s: float, elapsed: float, since_first: float, done: int, start: int,
                  total: int) -> int | None:
    """The planned total T for a time budget, or None to keep ``total``.

    Estimated at ``done == start + BUDGET_PROBE`` from the whole elapsed time, then at the
    ``BUDGET_REVISE`` fractions of T from the steps after the first (a steadier rate):
    ``T = done + max(0, budget - elapsed) / rate``, at least ``MIN_BUDGET_STEPS`` and ``done + 1``.
    """
    ran = done - start
    if ran == BUDGET_PROBE:
        rate = elapsed / ran
    elif ran > BUDGET_PROBE and any(done == max(start + BUDGET_PROBE + 1, int(f * total))
                                    for f in BUDGET_REVISE):
        rate = since_first / max(ran - 1, 1)
    else:
        return None
    left = max(0.0, budget_s - elapsed)
    return max(MIN_BUDGET_STEPS, done + 1, done + int(left / max(rate, 1e-9)))


def _progress(enabled: bool):
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeRemainingColumn(), disable=not enabled, transient=True)
