"""A training budget in minutes: the step count is measured (steps per second in the first steps)
and every schedule is laid over it. The clock is a fake one that advances a fixed time per forward
pass, so the expected step count is a closed form."""

import pytest
import torch

from seglearn.config import TrainConfig
from seglearn.models import FCN
from seglearn.quant.convert import quantize_model, scheme_callbacks
from seglearn.train import engine
from seglearn.train.callbacks import Callback
from seglearn.train.engine import BUDGET_PROBE, _budget_steps, fit

from test_engine import disc_batches


class FakeClock:
    """perf_counter that advances ``per_forward`` seconds on every forward pass of ``model``
    (plus ``first_extra`` on the first one: start-up and the data cache's first epoch)."""

    def __init__(self, model, per_forward, first_extra=0.0):
        self.now, self.calls = 1000.0, 0
        self.per, self.first_extra = per_forward, first_extra
        model.register_forward_pre_hook(self._tick)

    def _tick(self, *_):
        self.now += self.per + (self.first_extra if self.calls == 0 else 0.0)
        self.calls += 1

    def perf_counter(self):
        return self.now


def _fit(model, minutes, monkeypatch, per=0.5, first_extra=0.0, callbacks=(), checkpoint_every=7,
         **kw):
    clock = FakeClock(model, per, first_extra)
    monkeypatch.setattr(engine.time, "perf_counter", clock.perf_counter)
    cfg = TrainConfig(steps=10, lr=1e-3, bf16=False, channels_last=False, device="cpu",
                      checkpoint_every=checkpoint_every)
    return fit(model, disc_batches(), cfg, minutes=minutes, callbacks=list(callbacks),
               progress=False, **kw)


def test_budget_formula_closed_form():
    # probe: 5 steps in 10 s -> 2 s a step; 60 s budget, 10 s spent -> 5 + 25 = 30 steps
    assert _budget_steps(60.0, 10.0, 9.0, BUDGET_PROBE, 0, 100) == 30
    # not a probe or revision point: keep the total
    assert _budget_steps(60.0, 14.0, 13.0, BUDGET_PROBE + 2, 0, 30) is None
    # revision at 10% of 300 from the rate after the first step: 29 steps in 58 s, 60 s spent
    assert _budget_steps(600.0, 60.0, 58.0, 30, 0, 300) == 30 + int(540 / 2.0)
    # a budget already spent still trains past the current step, and at least MIN_BUDGET_STEPS
    assert _budget_steps(1.0, 10.0, 9.0, BUDGET_PROBE, 0, 100) == 8


def test_minutes_set_the_step_count(monkeypatch):
    """1 minute at 0.5 s a step = 120 steps, whatever train.steps says (10)."""
    torch.manual_seed(0)
    res = _fit(FCN(width=4, depth=2), 1.0, monkeypatch)
    assert res.steps == 120 and len(res.losses) == 120


def test_a_slow_first_step_is_corrected_by_the_revision(monkeypatch):
    """The probe includes a 10 s first step (start-up, cache fill), so it plans too few steps;
    the revisions at 10% and 20% use the steady rate and land on the budget."""
    torch.manual_seed(0)
    res = _fit(FCN(width=4, depth=2), 2.0, monkeypatch, per=0.5, first_extra=10.0)
    # 240 s - 10 s of start-up at 0.5 s a step = 220 steps (to the step)
    assert abs(res.steps - 220) <= 1
    assert res.steps * 0.5 + 10.0 <= 2.0 * 60 + 0.5


def test_schedules_see_the_planned_total(monkeypatch):
    """INQ's float phase is half the *measured* run and its last portion lands after the last step."""
    torch.manual_seed(0)
    model = quantize_model(FCN(width=4, depth=2), {"weight": "inq", "w_bits": 7,
                                                   "first_last": "same"})
    seen = []

    class Spy(Callback):
        def before_step(self, m, step, total):
            q = m.enc[0][0][0].weight_quant
            seen.append((step, total, q.portion))

    res = _fit(model, 1.0, monkeypatch, callbacks=scheme_callbacks(model) + [Spy()])
    assert res.steps == 120
    first_frozen = min(s for s, _, p in seen if p > 0)
    assert first_frozen == 60 and all(t == 120 for s, t, _ in seen if s >= BUDGET_PROBE)
    assert model.enc[0][0][0].weight_quant.portion == 1.0


class KilledAfter(Callback):
    """Raises KeyboardInterrupt after ``steps`` steps (a killed process)."""

    def __init__(self, steps):
        self.steps = steps

    def after_step(self, m, step, total):
        if step + 1 == self.steps:
            raise KeyboardInterrupt


def test_resume_keeps_the_planned_total(tmp_path, monkeypatch):
    """The checkpoint stores the planned total: a resumed run keeps it, even on a faster clock."""
    torch.manual_seed(0)
    ck = tmp_path / "ck.pt"

    model = FCN(width=4, depth=2)
    with pytest.raises(KeyboardInterrupt):
        _fit(model, 1.0, monkeypatch, callbacks=[KilledAfter(30)], checkpoint=ck)
    state = engine.load_checkpoint(ck)
    assert state["step"] == 28 and state["total"] == 120
    res = _fit(FCN(width=4, depth=2), 1.0, monkeypatch, per=0.05, checkpoint=ck, resume=True)
    assert res.resumed_from == 28 and res.steps == 120 and len(res.losses) == 92


def test_checkpoint_before_the_first_estimate_does_not_fix_the_provisional_total(tmp_path,
                                                                                monkeypatch):
    """A checkpoint written within the probe steps (checkpoint_every 3 < BUDGET_PROBE) stores the
    budget spent, not the provisional T (100): the resumed run measures T again over what is left.
    1 minute at 0.5 s a step, killed after step 3 (1.5 s spent): 58.5 s left at 0.5 s a step is
    117 more steps from step 3, the same 120 an uninterrupted run plans."""
    torch.manual_seed(0)
    ck = tmp_path / "ck.pt"

    with pytest.raises(KeyboardInterrupt):
        _fit(FCN(width=4, depth=2), 1.0, monkeypatch, callbacks=[KilledAfter(4)], checkpoint=ck,
             checkpoint_every=3)
    state = engine.load_checkpoint(ck)
    assert state["step"] == 3 and "total" not in state
    assert state["budget_spent_s"] == pytest.approx(1.5)
    res = _fit(FCN(width=4, depth=2), 1.0, monkeypatch, checkpoint=ck, resume=True,
               checkpoint_every=3)
    assert res.resumed_from == 3 and res.steps == 120 and len(res.losses) == 117
    assert engine.load_checkpoint(ck)["total"] == 120


@pytest.mark.parametrize("final", [False, True])
def test_role_budget_is_shared_by_its_members(tmp_path, monkeypatch, final):
    """ensemble.minutes is the whole ensemble's budget (train.minutes the final segmenter's),
    divided equally among the members."""
    import seglearn.app.train as app_train
    from seglearn.app.init import init_workspace
    from seglearn.config import load_config

    cfg = load_config(None, ["synthetic.n=6", "synthetic.size=32", "data.crop=32",
                             "model.width=4", "model.depth=2", "train.bf16=false",
                             "ensemble.members=3", "final.members=2", "ensemble.minutes=6",
                             "train.minutes=3", "postprocess.tune=false"])
    ws = init_workspace(tmp_path / "ws", cfg, synthetic=6, initial_labeled=1.0, progress=False)
    got = []
    real_fit = app_train.fit

    def spy(*args, minutes=None, **kw):
        got.append(minutes)
        return real_fit(*args, **{**kw, "steps": 2})

    monkeypatch.setattr(app_train, "fit", spy)
    app_train.train_workspace(ws, cfg, final=final, progress=False)
    assert got == ([1.5, 1.5] if final else [2.0, 2.0, 2.0])


def test_cpu_clock_counts_process_time_per_thread(monkeypatch):
    """train.clock cpu: the budget reads process CPU seconds / torch threads, not the wall. A wall
    clock that races ahead 100x (other processes holding the cores) changes nothing."""
    torch.manual_seed(0)
    model = FCN(width=4, depth=2)
    cpu = FakeClock(model, 0.5 * 2)  # 2 threads busy: 1 CPU-second per 0.5 s step
    wall = FakeClock(model, 50.0)
    monkeypatch.setattr(engine.time, "process_time", cpu.perf_counter)
    monkeypatch.setattr(engine.time, "perf_counter", wall.perf_counter)
    monkeypatch.setattr(engine.torch, "get_num_threads", lambda: 2)
    cfg = TrainConfig(steps=10, lr=1e-3, bf16=False, channels_last=False, device="cpu",
                      checkpoint_every=1000, clock="cpu")
    res = fit(model, disc_batches(), cfg, minutes=1.0, progress=False)
    assert res.steps == 120


def test_unknown_clock_is_refused():
    with pytest.raises(ValueError, match="train.clock"):
        engine.budget_clock("sundial")
