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
