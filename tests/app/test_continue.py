"""Continued rounds (ensemble.continue_fraction / final.continue_fraction, issue 14 item 5): a
round after the first starts each member from the previous round's member of the same index, with
the shorter budget, unchanged seeds, and a kill mid-member still resumes from its own checkpoint."""

import math

import pytest
import torch

import seglearn.app.train as train_mod
from seglearn.app.init import init_workspace
from seglearn.app.label import oracle_entries
from seglearn.app.train import _continued_budget, train_workspace
from seglearn.config import ConfigError, load_config
from seglearn.train.callbacks import Callback
from seglearn.train.engine import load_checkpoint

TINY = ["synthetic.size=32", "data.crop=32", "model.width=4", "model.depth=3",
        "ensemble.steps=4", "train.steps=4", "ensemble.members=2", "data.batch_size=2",
        "train.bf16=false", "train.checkpoint_every=1", "ensemble.quant.weight=null",
        "final.quant.weight=null"]


class Spy:
    """Wraps app.train.fit: per call, the first conv weight as it enters fit (before any step),
    the planned steps and minutes; optionally raises after ``kill_at`` steps of call ``kill_call``
    (a process killed mid-member: its checkpoints are on disk)."""

    def __init__(self, monkeypatch, kill_call=None, kill_at=None):
        self.calls = []
        self.kill_call, self.kill_at = kill_call, kill_at
        real = train_mod.fit

        def fit(model, batches, cfg, steps=None, callbacks=None, resume=False, checkpoint=None,
                **kw):
            self.calls.append({"weight": _first_weight(model).clone(), "steps": steps,
                               "minutes": kw.get("minutes"), "checkpoint": checkpoint})
            cbs = list(callbacks or [])
            if len(self.calls) - 1 == self.kill_call:
                cbs.append(_Killer(self.kill_at))
            res = real(model, batches, cfg, steps=steps, callbacks=cbs, resume=resume,
                       checkpoint=checkpoint, **kw)
            self.calls[-1]["resumed_from"] = res.resumed_from
            return res

        monkeypatch.setattr(train_mod, "fit", fit)


class Killed(Exception):
    pass


class _Killer(Callback):
    def __init__(self, at):
        self.at = at

    def before_step(self, model, step, total):
        if step == self.at:
            raise Killed(f"killed before step {step}")


def _first_weight(model) -> torch.Tensor:
    return next(p for n, p in model.named_parameters() if n.endswith("weight")).detach()


def _first_weight_in(state: dict) -> torch.Tensor:
    return next(v for k, v in state.items() if k.endswith("weight") and v.dim() == 4)


def _workspace(tmp_path, extra=()):
    cfg = load_config(None, TINY + list(extra))
    ws = init_workspace(tmp_path / "ws", cfg, synthetic=12, seed=0, progress=False)
    return ws, cfg


def _label_more(ws, n=2):
    ids = [it.id for it in ws.unlabeled("pool")[:n]]
    with ws.writer():
        ws.add_labels(oracle_entries(ws, ids))


def _ckpt(ws, role, round_id, member):
    row = next(m for m in ws.models(role=role, round_id=round_id) if m.member == member)
    return ws.resolve(row.path)


def test_continued_round_starts_from_the_previous_members_with_the_shorter_budget(
        tmp_path, monkeypatch):
    ws, cfg = _workspace(tmp_path, ["ensemble.continue_fraction=0.5"])
    spy = Spy(monkeypatch)
    first = train_workspace(ws, cfg, progress=False)
    _label_more(ws)
    second = train_workspace(ws, cfg, progress=False)
    assert [c["steps"] for c in spy.calls] == [4, 4, 2, 2]     # 0.5 of ensemble.steps=4
    assert [r["steps"] for r in second] == [2, 2]
    assert all(r["continued_from"] is None for r in first)
    for member in (0, 1):
        prev = load_checkpoint(_ckpt(ws, "suggestive", 1, member))["model"]
        # the weight entering fit is the previous round's member `member`, before any step ...
        assert torch.equal(spy.calls[2 + member]["weight"], _first_weight_in(prev))
        # ... and not the other member's (same index, not just any previous model)
        other = load_checkpoint(_ckpt(ws, "suggestive", 1, 1 - member))["model"]
        assert not torch.equal(spy.calls[2 + member]["weight"], _first_weight_in(other))
        assert second[member]["continued_from"] == str(
            _ckpt(ws, "suggestive", 1, member).relative_to(ws.root))
    # the first round started from a fresh initialisation, not from anything on disk
    assert not torch.equal(spy.calls[0]["weight"], spy.calls[2]["weight"])
    rows = {m.round_id: m for m in ws.models(role="suggestive") if m.member == 0}
    assert rows[2].metrics["continued_from"] and rows[2].metrics["steps"] == 2


def test_off_by_default_every_round_from_scratch(tmp_path, monkeypatch):
    ws, cfg = _workspace(tmp_path)
    assert cfg.ensemble.continue_fraction == 0 and cfg.final.continue_fraction == 0
    spy = Spy(monkeypatch)
    train_workspace(ws, cfg, progress=False)
    _label_more(ws)
    train_workspace(ws, cfg, progress=False)
    assert [c["steps"] for c in spy.calls] == [4, 4, 4, 4]
    prev = load_checkpoint(_ckpt(ws, "suggestive", 1, 0))["model"]
    assert not torch.equal(spy.calls[2]["weight"], _first_weight_in(prev))


def test_seeds_are_those_of_a_from_scratch_round(tmp_path, monkeypatch):
    """Data order and bootstrap resample do not depend on continuing."""
    seeds = {}
    for mode in ("0.0", "0.5"):
        got = []
        real = train_mod.make_batches

        def batches(samples, cfg, seed, scale=None, _got=got, _real=real):
            _got.append((seed, tuple(s["name"] for s in samples)))
            return _real(samples, cfg, seed, scale=scale)

        monkeypatch.setattr(train_mod, "make_batches", batches)
        ws, cfg = _workspace(tmp_path / mode, [f"ensemble.continue_fraction={mode}"])
        train_workspace(ws, cfg, progress=False)
        _label_more(ws)
        train_workspace(ws, cfg, progress=False)
        seeds[mode] = got
        monkeypatch.setattr(train_mod, "make_batches", real)
    assert seeds["0.0"] == seeds["0.5"] and len(seeds["0.5"]) == 4


def test_final_segmenter_continues_with_its_own_fraction_of_minutes(tmp_path, monkeypatch):
    ws, cfg = _workspace(tmp_path, ["final.continue_fraction=0.25", "train.minutes=0.02",
                                    "final.members=2", "postprocess.tune=false"])
    spy = Spy(monkeypatch)
    train_workspace(ws, cfg, final=True, progress=False)
    _label_more(ws)
    train_workspace(ws, cfg, final=True, progress=False)
    # the role's minutes are shared by its members; a continued member gets 0.25 of its share
    assert [c["minutes"] for c in spy.calls] == pytest.approx([0.01, 0.01, 0.0025, 0.0025])
    prev = load_checkpoint(_ckpt(ws, "final", 1, 1))["model"]
    assert torch.equal(spy.calls[3]["weight"], _first_weight_in(prev))


def test_killed_continued_round_resumes_from_its_own_checkpoint(tmp_path, monkeypatch):
    ws, cfg = _workspace(tmp_path, ["ensemble.continue_fraction=0.75"])
    train_workspace(ws, cfg, progress=False)
    _label_more(ws)
    spy = Spy(monkeypatch, kill_call=0, kill_at=2)  # round 2, member 0, before its 3rd step
    with pytest.raises(Killed):
        train_workspace(ws, cfg, progress=False)
    partial = load_checkpoint(spy.calls[0]["checkpoint"])
    assert partial["step"] == 2 and partial["total"] == 3          # ceil(0.75 * 4)
    spy = Spy(monkeypatch)
    rows = train_workspace(ws, cfg, resume=True, progress=False)
    # member 0 continued at step 2 of its own run (its weights after 2 steps, not round 1's);
    # member 1 started from round 1's member 1
    assert [c["steps"] for c in spy.calls] == [3, 3]
    assert [c["resumed_from"] for c in spy.calls] == [2, 0]
    assert [r["round"] for r in rows] == [2, 2] and [r["steps"] for r in rows] == [3, 3]
    assert torch.equal(spy.calls[1]["weight"],
                       _first_weight_in(load_checkpoint(_ckpt(ws, "suggestive", 1, 1))["model"]))
    assert load_checkpoint(_ckpt(ws, "suggestive", 2, 0))["step"] == 3
    assert all(r.finished for r in ws.rounds() if r.kind == "train-suggestive")


def test_continued_inq_reruns_its_schedule_from_the_latent_weights(tmp_path, monkeypatch):
    """A finished INQ model is fully frozen: continuing it as it is would train nothing. The
    continued round drops the frozen set and re-runs float phase + portions on the latent weights."""
    ws, cfg = _workspace(tmp_path, ["ensemble.continue_fraction=0.5", "ensemble.quant.weight=inq",
                                    "ensemble.members=1", "ensemble.steps=8"])
    spy = Spy(monkeypatch)
    train_workspace(ws, cfg, progress=False)
    _label_more(ws)
    train_workspace(ws, cfg, progress=False)
    prev = load_checkpoint(_ckpt(ws, "suggestive", 1, 0))["model"]
    after = load_checkpoint(_ckpt(ws, "suggestive", 2, 0))["model"]
    assert torch.equal(spy.calls[1]["weight"], _first_weight_in(prev))   # latent W loaded
    masks = [k for k in prev if k.endswith("mask")]
    assert masks and all(prev[k].all() and after[k].all() for k in masks)  # both fully quantized
    w = [k for k in after if k.endswith(".weight") and after[k].dim() == 4]
    assert any(not torch.equal(prev[k], after[k]) for k in w)            # it trained
    assert spy.calls[1]["steps"] == 4


def test_budget_and_config_checks():
    assert _continued_budget(0.4, 60, None) == (24, None)
    assert _continued_budget(0.4, 2, None) == (1, None)
    assert _continued_budget(0.01, 10, None) == (1, None)          # at least one step
    steps, minutes = _continued_budget(0.4, 60, 5.0)
    assert math.isclose(minutes, 2.0)
    with pytest.raises(ConfigError, match="ensemble.continue_fraction must be in"):
        load_config(None, ["ensemble.continue_fraction=1.5"])
    with pytest.raises(ConfigError, match="final.continue_fraction"):
        load_config(None, ["final.continue_fraction=-0.1"])
