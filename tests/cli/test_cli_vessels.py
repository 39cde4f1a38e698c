"""A thin-structure pool end to end: init --synthetic-kind vessels, train --final, evaluate scores
pixels, and the tuned post-processing was chosen by pixel Dice."""

import json

from conftest import TINY


def run(runner, cli, *args):
    return runner.invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_vessels_pool_end_to_end(runner, cli, tmp_path):
    from seglearn.app.tune import stored_tuning
    from seglearn.data import read_mask
    from seglearn.store import Workspace

    ws = tmp_path / "ws"
    # 96 px: long enough trees that every image reads as thin (32 px crops keep training cheap)
    r = run(runner, cli, "init", ws, "--synthetic", 8, "--synthetic-kind", "vessels", *TINY,
            "--set", "synthetic.size=96", "--set", "active.initial_labeled=0.5")
    assert r.exit_code == 0, r.output
    with Workspace.open(ws) as w:
        assert w.meta("config")["synthetic"]["kind"] == "vessels"
        it = w.items(split="test")[0]
        mask = read_mask(w.resolve(it.oracle_mask_path))
        assert mask.shape == (96, 96)
    r = run(runner, cli, "train", ws, "--final", "--no-progress")
    assert r.exit_code == 0, r.output
    with Workspace.open(ws) as w:
        final = [x for x in w.rounds() if "final" in x.kind]
        record = stored_tuning(w, final[-1].id)
    assert record["objective"] == "dice" and "f1" not in record
    r = run(runner, cli, "tune", ws, "--no-progress")  # re-tuning says what it maximised
    assert r.exit_code == 0 and "(pixel Dice " in r.output and "mode=" in r.output, r.output
    r = run(runner, cli, "evaluate", ws, "--no-progress")
    assert r.exit_code == 0, r.output
    reports = list((ws / "reports").glob("evaluate_round_*/metrics.json"))
    saved = json.loads(reports[0].read_text())
    m = saved["metrics"]
    assert "pixel_dice" in m and "f1" not in m and "obj_dice" not in m
    assert 0.0 <= m["pixel_dice"] <= 1.0 and saved["kind"] == "pixels"
    # evaluate ran the round's stored (pixel-Dice-tuned) post-processing
    assert {k: saved["postprocess"][k] for k in record["params"]} == record["params"]


def test_bad_synthetic_kind_is_one_line(runner, cli, tmp_path):
    r = runner.invoke(cli, ["init", str(tmp_path / "ws"), "--synthetic", "4",
                            "--synthetic-kind", "fibres"])
    assert r.exit_code == 2
    assert "error: --synthetic-kind: synthetic.kind must be one of glands, vessels, not 'fibres'" \
        in r.output and "Traceback" not in r.output
    assert not (tmp_path / "ws").exists()
