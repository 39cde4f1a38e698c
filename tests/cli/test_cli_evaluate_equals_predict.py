"""One set of post-processing parameters per trained model: `train --final` tunes and stores it,
and `evaluate`, `export` and `predict` use exactly those, so the numbers a user sees in evaluate
are the numbers of the deployed model (issue: evaluate = export = predict)."""

import json

import numpy as np
import pytest

from conftest import TINY

# An exactly exportable final scheme (TWN weights, 4-bit DoReFa activations): the runtime's masks
# equal torch's up to float-summation flips at the thresholds (tests/export/test_lower_schemes.py).
EXACT = ["--set", "final.quant.weight=twn", "--set", "final.quant.w_bits=2", "--set", "final.quant.act=dorefa",
         "--set", "final.quant.a_bits=4", "--set", "final.quant.first_last=iao8",
         "--set", "synthetic.size=48", "--set", "train.steps=40", "--set", "model.depth=2",
         "--set", "active.initial_labeled=1.0"]


def run(runner, cli, *args):
    return runner.invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.slow
def test_evaluate_export_predict_agree(runner, cli, tmp_path):
    from PIL import Image

    from seglearn.app.evaluate import score_predictions
    from seglearn.app.tune import stored_tuning
    from seglearn.data import read_mask
    from seglearn.runtime.slq import read_slq
    from seglearn.store import Workspace

    ws = tmp_path / "ws"
    assert run(runner, cli, "init", ws, "--synthetic", 10, *TINY, *EXACT).exit_code == 0
    r = run(runner, cli, "train", ws, "--final", "--no-progress")
    assert r.exit_code == 0, r.output
    w = Workspace.open(ws)
    (final_round,) = {m.round_id for m in w.models(role="final")}
    record = stored_tuning(w, final_round)
    assert record is not None and record["images"] > 0  # tuned by train --final (the default)
    tests = [(it.name, w.resolve(it.image_path), w.resolve(it.oracle_mask_path))
             for it in w.items(split="test")]
    w.close()

    r = run(runner, cli, "evaluate", ws, "--no-progress")
    assert r.exit_code == 0, r.output
    (report,) = (ws / "reports").glob("evaluate_round_*/metrics.json")
    ev = json.loads(report.read_text())
    for k, v in record["params"].items():
        assert ev["postprocess"][k] == v

    r = run(runner, cli, "export", ws, tmp_path / "m.slq")
    assert r.exit_code == 0, r.output
    graph, _ = read_slq(tmp_path / "m.slq")
    assert {k: graph["postprocess"][k] for k in record["params"]} == record["params"]

    src = tmp_path / "test-images"
    src.mkdir()
    for name, image, _ in tests:
        Image.open(image).save(src / f"{name}.png")
    r = run(runner, cli, "predict", tmp_path / "m.slq", src, "--out", tmp_path / "pred")
    assert r.exit_code == 0, r.output
    preds, gts = [], []
    for name, image, mask in tests:
        (out,) = [p for p in (tmp_path / "pred").glob(f"{name}*.png") if "overlay" not in p.name]
        preds.append(np.asarray(Image.open(out)).astype(np.int32))
        gts.append(read_mask(mask, shape=preds[-1].shape))
    deployed = score_predictions(preds, gts)
    assert ev["metrics"]["pixel_dice"] > 0.3  # a model that found glands, so agreement means something
    for key in ("f1", "obj_dice", "pixel_dice"):
        assert abs(deployed[key] - ev["metrics"][key]) <= 0.02, (key, deployed, ev["metrics"])


def test_export_refuses_an_untuned_round(runner, cli, tmp_path):
    """postprocess.tune on, but the round was trained with it off: export never tunes, it says
    what to run; with the config's values (tune off) it exports."""
    ws = tmp_path / "ws"
    assert run(runner, cli, "init", ws, "--synthetic", 6, *TINY,
               "--set", "postprocess.tune=false").exit_code == 0
    assert run(runner, cli, "train", ws, "--final", "--no-progress").exit_code == 0
    r = run(runner, cli, "export", ws, tmp_path / "a.slq", "--set", "postprocess.tune=true")
    assert r.exit_code == 2 and "seglearn tune" in r.output and not (tmp_path / "a.slq").exists()
    r = run(runner, cli, "tune", ws, "--set", "postprocess.tune=true", "--no-progress")
    assert r.exit_code == 0 and "evaluate, export and predict use these" in r.output
    r = run(runner, cli, "export", ws, tmp_path / "a.slq", "--set", "postprocess.tune=true")
    assert r.exit_code == 0, r.output
