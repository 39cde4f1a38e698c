"""The CLI end to end on tiny synthetic data: init, train, select, label, train --final, evaluate."""

import csv
import json

import pytest

from conftest import TINY


def run(runner, cli, *args):
    res = runner.invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return res


@pytest.mark.slow
def test_full_loop(runner, cli, tmp_path):
    ws = tmp_path / "ws"
    r = run(runner, cli, "init", ws, "--synthetic", 10, *TINY)
    assert r.exit_code == 0, r.output
    from seglearn.store import Workspace

    w = Workspace.open(ws)
    pool = w.items(split="pool")
    assert len(pool) + len(w.items(split="test")) == 10
    n0 = len(w.labeled("pool"))
    assert n0 >= 1
    # The hidden masks of the unlabeled pool are never visible as labels.
    assert all(it.label is None for it in w.unlabeled("pool"))
    w.close()

    r = run(runner, cli, "train", ws, "--no-progress")
    assert r.exit_code == 0, r.output
    r = run(runner, cli, "select", ws, "--budget", 2, "--candidates", 3, "--no-progress")
    assert r.exit_code == 0, r.output
    csvs = sorted((ws / "suggestions").glob("round_*.csv"))
    assert len(csvs) == 1 and (ws / "suggestions" / (csvs[0].stem + ".png")).is_file()
    rows = list(csv.DictReader(csvs[0].open()))
    assert [int(x["rank"]) for x in rows] == [1, 2]
    assert set(rows[0]) == {"rank", "item", "path", "uncertainty", "coverage_gain",
                            "slide", "x", "y", "level"}  # slide columns: empty for plain images
    assert all(rows[0][k] == "" for k in ("slide", "x", "y", "level"))

    r = run(runner, cli, "label", ws, "--oracle")
    assert r.exit_code == 0, r.output
    w = Workspace.open(ws)
    labeled = {it.name for it in w.labeled("pool")}
    assert {x["item"] for x in rows} <= labeled and len(labeled) == n0 + 2
    w.close()

    r = run(runner, cli, "train", ws, "--final", "--no-progress")
    assert r.exit_code == 0, r.output
    r = run(runner, cli, "evaluate", ws, "--no-progress")
    assert r.exit_code == 0, r.output
    reports = list((ws / "reports").glob("evaluate_round_*/metrics.json"))
    assert len(reports) == 1
    m = json.loads(reports[0].read_text())["metrics"]
    assert {"f1", "obj_dice", "obj_hausdorff", "pixel_dice"} <= set(m)
    assert 0.0 <= m["f1"] <= 1.0
    r = run(runner, cli, "status", ws)
    assert r.exit_code == 0 and "pool" in r.output


def test_help_lists_every_command(runner, cli):
    r = run(runner, cli, "--help")
    for cmd in ("init", "status", "train", "select", "label", "evaluate", "simulate", "export",
                "predict", "demo"):
        assert cmd in r.output


@pytest.mark.slow
def test_demo_with_its_default_relative_folder(runner, cli, tmp_path, monkeypatch):
    """`seglearn demo` as the README runs it: no folder given, so ./seglearn-demo, a relative path
    (a relative workspace path used to be joined to the workspace root twice)."""
    monkeypatch.chdir(tmp_path)
    r = run(runner, cli, "demo", *TINY, "--set", "synthetic.n=12",
            "--set", "active.budget=2", "--set", "active.candidates=3", "--no-progress")
    assert r.exit_code == 0, r.output
    out = tmp_path / "seglearn-demo"
    from seglearn.runtime import load_model
    from seglearn.store import Workspace

    w = Workspace.open(out / "workspace")
    n_test = len(w.items(split="test"))
    # two annotation rounds of the default budget, each adding labels from the oracle
    assert len(w.labeled("pool")) > 1
    w.close()
    assert load_model(out / "model.slq").predict is not None
    assert len(list((out / "predictions").glob("*_overlay.png"))) == n_test > 0
    assert "summary" in r.output
    # the steps app.demo reports, printed by cmd_demo as they happen
    for line in ("seglearn demo", "annotation round 1/2", "annotation round 2/2", "oracle labeled 2",
                 "final segmenter on", "integer ops:", "predicted:"):
        assert line in r.output, line
