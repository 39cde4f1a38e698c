"""train.warmup: linear warm-up then cosine, against the closed form; 0 is the schedule of before."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from seglearn.config import ConfigError, TrainConfig, load_config
from seglearn.train.engine import fit, learning_rate


def test_no_warmup_is_the_plain_cosine():
    for t in range(0, 100, 7):
        assert learning_rate(2e-3, t, 100) == 2e-3 * 0.5 * (1 + math.cos(math.pi * t / 100))


def test_warmup_hand_values():
    # total 20, warmup 0.25 -> W = 5: 1/5, 2/5 ... 5/5 of the peak, then cosine over 15 steps
    got = [learning_rate(1.0, t, 20, 0.25) for t in range(20)]
    assert got[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert got[5] == pytest.approx(1.0)  # the cosine starts at the peak
    assert got[5 + 15 // 2] == pytest.approx(0.5 * (1 + math.cos(math.pi * 7 / 15)))
    assert got[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 14 / 15)))
    assert max(got) == pytest.approx(1.0) and all(g > 0 for g in got)


class _Const(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1, 1, 1, 1))

    def forward(self, x):
        return self.w.expand(x.shape[0], 1, *x.shape[2:]) + 0 * x[:, :1]


def test_fit_uses_the_warmup_schedule(monkeypatch):
    opts, seen = [], []
    real = torch.optim.AdamW

    def adamw(*a, **k):
        opts.append(real(*a, **k))
        return opts[-1]

    class Spy:  # records the learning rate each update used
        def on_train_start(self, model, steps): pass
        def before_step(self, model, step, steps): pass
        def extra_loss(self, model, step, steps): return None
        def after_step(self, model, step, steps): seen.append(opts[-1].param_groups[0]["lr"])
        def on_train_end(self, model): pass

    monkeypatch.setattr(torch.optim, "AdamW", adamw)
    cfg = TrainConfig(steps=10, lr=0.1, warmup=0.3, bf16=False, channels_last=False, threads=1)
    batch = {"image": torch.zeros(2, 3, 8, 8), "target": torch.ones(2, 1, 8, 8)}
    fit(_Const(), [batch], cfg, callbacks=[Spy()], progress=False)
    assert seen == pytest.approx([learning_rate(0.1, t, 10, 0.3) for t in range(10)])
    assert seen[0] == pytest.approx(0.1 / 3)


def test_warmup_validated(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  warmup: 0.9\n")
    with pytest.raises(ConfigError, match="train.warmup"):
        load_config(p)


def test_warmup_under_a_minutes_budget_is_fixed_at_the_first_estimate(monkeypatch, tmp_path):
    """Under train.minutes the total moves (provisional 100, first estimate, revisions); the ramp
    must not: the probe steps hold at its start (lr 0), W = round(warmup * first estimate) stays,
    and the learning rate never passes the peak. A slow first step makes the total move a lot."""
    from test_budget import FakeClock

    from seglearn.models import FCN
    from seglearn.train import engine
    from test_engine import disc_batches

    opts, seen, totals = [], [], []
    real = torch.optim.AdamW

    def adamw(*a, **k):
        opts.append(real(*a, **k))
        return opts[-1]

    class Spy:
        def on_train_start(self, model, steps): pass
        def before_step(self, model, step, steps): pass
        def extra_loss(self, model, step, steps): return None
        def after_step(self, model, step, steps): seen.append(opts[-1].param_groups[0]["lr"])
        def on_total_changed(self, model, done, steps): totals.append(steps)
        def on_train_end(self, model): pass

    monkeypatch.setattr(torch.optim, "AdamW", adamw)
    model = FCN(width=4, depth=2)
    clock = FakeClock(model, 0.5, first_extra=10.0)
    monkeypatch.setattr(engine.time, "perf_counter", clock.perf_counter)
    cfg = TrainConfig(steps=10, lr=0.1, warmup=0.2, bf16=False, channels_last=False,
                      device="cpu", checkpoint_every=7)
    ck = tmp_path / "ck.pt"
    res = fit(model, disc_batches(), cfg, minutes=2.0, callbacks=[Spy()], progress=False,
              checkpoint=ck)
    # probe: 5 steps in 5 * 0.5 + 10 = 12.5 s -> 2.5 s a step; 120 s budget -> 5 + 43 = 48 steps
    assert totals[0] == 48 and len(totals) >= 2 and res.steps > 48  # then revised upwards
    w = round(0.2 * 48)
    assert seen[:5] == [0.0] * 5
    assert seen[5:w] == pytest.approx([0.1 * (t + 1) / w for t in range(5, w)])
    assert seen[w] == pytest.approx(0.1)  # the cosine starts at the peak, W steps in
    assert max(seen) == pytest.approx(0.1) and len(seen) == res.steps
    assert engine.load_checkpoint(ck)["warmup_steps"] == w
