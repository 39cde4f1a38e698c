"""app.demo.run_demo prints nothing: it returns its summary and reports each step to ``on_step``
(the CLI's cmd_demo prints them)."""

import pytest

from seglearn.app.demo import STEPS, DemoRound, run_demo
from seglearn.config import load_config

TINY = ["synthetic.n=12", "synthetic.size=32", "data.crop=32", "model.width=4", "model.depth=3",
        "train.steps=2", "ensemble.members=2", "data.batch_size=2", "train.bf16=false",
        "active.budget=2", "active.candidates=3"]


@pytest.mark.slow
def test_run_demo_returns_its_summary_and_reports_its_steps(tmp_path, capsys):
    steps = []
    summary = run_demo(tmp_path / "demo", load_config(None, TINY), progress=False, rounds=2,
                       on_step=lambda name, payload: steps.append((name, payload)))
    assert capsys.readouterr().out == ""  # printing is the CLI's job
    assert [name for name, _ in steps] == ["workspace", "round", "suggested", "round",
                                           "suggested", "final", "evaluated"]
    assert {name for name, _ in steps} == set(STEPS)
    ws = steps[0][1]
    assert summary["workspace"] == str(ws.root) == str(tmp_path / "demo" / "workspace")
    assert [p for n, p in steps if n == "round"] == [(1, 2), (2, 2)]
    rounds = [p for n, p in steps if n == "suggested"]
    assert all(isinstance(r, DemoRound) for r in rounds)
    assert [(r.index, r.of) for r in rounds] == [(1, 2), (2, 2)]
    assert all(r.labeled == len(r.suggestions.rows) == 2 for r in rounds)
    assert len(ws.labeled("pool")) >= 4 and all(r.suggestions.sheet_path.is_file() for r in rounds)
    ev = steps[-1][1]
    assert summary["metrics"] == ", ".join(f"{k} {v:.3f}" for k, v in ev.metrics.items())
    assert summary["report"] == str(ev.report_dir)
    assert (tmp_path / "demo" / "model.slq").is_file()
    assert set(summary) == {"workspace", "metrics", "report", "exported", "integer ops",
                            "predicted", "seconds"}
