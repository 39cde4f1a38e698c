"""`simulate` end to end on tiny synthetic data: learning curves for two strategies."""

import csv
import json

import pytest

from seglearn.app.simulate import simulate
from seglearn.config import load_config

TINY = ["synthetic.n=10", "synthetic.size=32", "data.crop=32", "model.width=4", "model.depth=3",
        "train.steps=2", "ensemble.members=2", "data.batch_size=2", "train.bf16=false",
        "active.budget=2", "active.candidates=3", "simulate.target_fraction=0.6",
        "simulate.strategies=[random, suggestive]", "simulate.seeds=[0]"]


@pytest.mark.slow
def test_simulate_writes_curves(tmp_path):
    cfg = load_config(None, TINY)
    res = simulate(cfg, tmp_path / "sim", progress=False)
    rows = list(csv.DictReader(res.csv_path.open()))
    assert {r["strategy"] for r in rows} == {"random", "suggestive"}
    for strategy in ("random", "suggestive"):
        fr = [float(r["fraction"]) for r in rows if r["strategy"] == strategy]
        # Starts at the random start set, grows by the budget each round, stops at the target.
        assert fr == sorted(fr) and fr[0] < 0.6 <= fr[-1] + 1e-9 and len(fr) >= 2
    # Both strategies start from the same random start set (same seed).
    firsts = {r["strategy"]: r["n_labeled"] for r in rows if r["round"] == "0"}
    assert firsts["random"] == firsts["suggestive"]
    data = json.loads(res.json_path.read_text())
    assert data["rows"] and "f1" in data["rows"][0] and data["config_hash"] == cfg.hash()
    assert res.png_path.is_file() and res.png_path.stat().st_size > 1000


def test_run_strategy_evaluates_every_nth_round_and_the_last(tmp_path):
    from seglearn.app.simulate import run_strategy

    cfg = load_config(None, TINY + ["active.budget=1", "simulate.target_fraction=0.5"])
    rows = run_strategy(cfg, tmp_path / "w", "random", 0, {"synthetic": 10}, progress=False,
                        eval_every=2, skip_start=True)
    # pool of 8 (25% test): 1 labeled at the start, +1 per round up to 4: rounds 0..3.
    assert [r["round"] for r in rows] == [2, 3]
    assert [r["n_labeled"] for r in rows] == [3, 4]
    with pytest.raises(ValueError, match="eval_every"):
        run_strategy(cfg, tmp_path / "w2", "random", 0, {"synthetic": 10}, progress=False,
                     eval_every=0)


def test_run_strategy_resumes_a_loop_killed_between_select_and_label(tmp_path, monkeypatch):
    """The suggestions of the killed round are labeled on reopening (not selected again), and the
    loop ends with the labels an uninterrupted run has."""
    from seglearn.app.simulate import run_strategy
    from seglearn.store import Workspace

    cfg = load_config(None, TINY)
    src = {"synthetic": 10}
    whole = run_strategy(cfg, tmp_path / "whole", "random", 0, src, progress=False)
    with Workspace.open(tmp_path / "whole") as ws:
        want = sorted(it.name for it in ws.training_items())

    def killed(*a, **k):
        raise KeyboardInterrupt

    seen = []

    def point(ws, row, ev):  # the start set is labeled by init; the kill hits round 1's labels
        seen.append(row["round"])
        monkeypatch.setattr(Workspace, "add_labels", killed)

    with pytest.raises(KeyboardInterrupt):
        run_strategy(cfg, tmp_path / "w", "random", 0, src, progress=False, on_point=point)
    assert seen == [0]
    monkeypatch.undo()
    rows = run_strategy(cfg, tmp_path / "w", "random", 0, src, progress=False, resume=True,
                        done_rounds=set(seen))
    assert [r["round"] for r in rows] == [r["round"] for r in whole][1:]
    assert [r["n_labeled"] for r in rows] == [r["n_labeled"] for r in whole][1:]
    with Workspace.open(tmp_path / "w") as ws:
        assert sorted(it.name for it in ws.training_items()) == want
        assert len({s.round_id for s in ws.suggestions()}) == len(whole) - 1
