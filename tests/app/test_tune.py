"""`postprocess.tune`: thresholds picked by object F1 on the labeled images, used by evaluate."""

import json

import numpy as np
import pytest

from seglearn.app.evaluate import evaluate_workspace
from seglearn.app.init import init_workspace
from seglearn.app.tune import META_KEY, NotTunedError, final_postprocess, stored_tuning
from seglearn.config import load_config
from seglearn.postprocess import DEFAULT_GRID

TINY = ["synthetic.n=8", "synthetic.size=32", "train.bf16=false"]


class UnderConfident:
    """A stand-in final segmenter: 0.45 on the true glands, 0.05 elsewhere, so the default
    threshold 0.5 finds nothing and a tuned threshold (0.3 or 0.4) finds every gland."""

    round_id = 7

    def predict_mean(self, image, scale=1.0, device="cpu", flips=False):
        self.flips_seen = getattr(self, "flips_seen", set()) | {flips}
        gt = self._by_image[image.tobytes()]  # the image's own mask, found by its pixels
        return np.where(gt > 0, 0.45, 0.05).astype(np.float32)[None]


@pytest.fixture
def ws_and_model(tmp_path):
    from seglearn.data import read_image, read_mask

    cfg = load_config(None, TINY + ["postprocess.tune=true", "model.contour_head=false"])
    ws = init_workspace(tmp_path / "ws", cfg, synthetic=8, initial_labeled=1.0, progress=False)
    model = UnderConfident()
    model._by_image = {}
    for it in ws.items():
        gt = read_mask(ws.resolve(it.oracle_mask_path), shape=(it.height, it.width))
        model._by_image[read_image(ws.resolve(it.image_path)).tobytes()] = gt
    return ws, cfg, model


def test_tuned_thresholds_are_picked_stored_and_used(ws_and_model):
    ws, cfg, model = ws_and_model
    params = final_postprocess(ws, cfg, model, progress=False)
    assert params.fg_threshold in DEFAULT_GRID["fg_threshold"] and params.fg_threshold < 0.45
    stored = stored_tuning(ws, 7)
    assert stored["round"] == 7 and stored["images"] == len(ws.training_items()) > 0
    assert stored_tuning(ws, 8) is None
    # the stored F1 is the pooled object F1 of the tuned parameters on the training images
    from seglearn.data import read_image
    from seglearn.metrics.glas import object_f1
    from seglearn.postprocess import instances_from_probs

    items = ws.training_items()
    preds = [instances_from_probs(model.predict_mean(read_image(ws.resolve(it.image_path)))[0],
                                  None, params) for it in items]
    gts = [ws.read_label(it).astype(np.int32) for it in items]
    assert stored["f1"] == pytest.approx(object_f1(preds, gts)["f1"]) and stored["f1"] > 0.5
    ev = evaluate_workspace(ws, cfg, progress=False, overlays=False, ensemble=model)
    assert ev.metrics["f1"] > 0.5  # the default threshold finds nothing (next test)
    saved = json.loads((ev.report_dir / "metrics.json").read_text())
    assert saved["postprocess"]["fg_threshold"] == params.fg_threshold


def test_tta_tunes_on_flip_averaged_maps_and_is_stored(ws_and_model):
    """postprocess.tta: tuning, evaluate and the stored record all use the flip-averaged maps."""
    ws, cfg, model = ws_and_model
    cfg.postprocess.tta = True
    params = final_postprocess(ws, cfg, model, progress=False)
    assert params.tta is True and stored_tuning(ws, 7)["params"]["tta"] is True
    assert model.flips_seen == {True}
    cfg.postprocess.tta = False  # a later config does not change what the model was tuned with
    assert final_postprocess(ws, cfg, model, progress=False).tta is True
    evaluate_workspace(ws, cfg, progress=False, overlays=False, ensemble=model)
    assert model.flips_seen == {True}


def test_without_tune_the_config_thresholds_apply(ws_and_model):
    ws, cfg, model = ws_and_model
    cfg.postprocess.tune = False
    params = final_postprocess(ws, cfg, model, progress=False)
    assert params.fg_threshold == cfg.postprocess.fg_threshold == 0.5
    ev = evaluate_workspace(ws, cfg, progress=False, overlays=False, ensemble=model)
    assert ev.metrics["f1"] == 0.0  # 0.45 < 0.5: nothing is foreground
    assert ws.meta(META_KEY) is None


def test_tuning_uses_only_labels_older_than_the_final_round(ws_and_model):
    """A label added after the final model's round started was not its training data."""
    from seglearn.app.evaluate import postprocess_params
    from seglearn.app.tune import tune_on_training_images
    from seglearn.store import LabelEntry

    ws, cfg, model = ws_and_model
    before = len(ws.training_items())
    with ws.writer():
        model.round_id = ws.start_round("final", cfg.hash())
    relabeled = ws.training_items()[0]
    with ws.writer():  # a new revision of one label, made after the round started
        ws.add_labels([LabelEntry(relabeled.id, ws.read_label(relabeled))])
    base = postprocess_params(cfg.postprocess, False)
    _, _, n = tune_on_training_images(ws, cfg, model, base, progress=False, device="cpu")
    assert n == before - 1 > 0


def test_stored_record_is_reused_and_export_never_tunes(ws_and_model, monkeypatch):
    """evaluate (and export) read the round's stored record; export refuses a round without one."""
    import seglearn.app.tune as tune

    ws, cfg, model = ws_and_model
    with pytest.raises(NotTunedError, match="seglearn tune"):
        final_postprocess(ws, cfg, model, progress=False, tune_if_missing=False)
    first = final_postprocess(ws, cfg, model, progress=False)
    calls = []
    monkeypatch.setattr(tune, "tune_on_training_images", lambda *a, **k: calls.append(a))
    again = final_postprocess(ws, cfg, model, progress=False, tune_if_missing=False)
    assert again == first and calls == []
    # a record per round: tuning round 8 keeps round 7's
    monkeypatch.undo()
    model.round_id = 8
    tune.tune_final(ws, cfg, model, progress=False)
    assert stored_tuning(ws, 7)["params"] == stored_tuning(ws, 8)["params"]


def test_old_single_record_layout_is_read(ws_and_model):
    ws, cfg, model = ws_and_model
    with ws.writer():
        ws.set_meta(META_KEY, {"round": 7, "config_hash": "x", "f1": 0.9, "images": 3,
                               "params": {"fg_threshold": 0.3, "contour_threshold": 0.5,
                                          "min_area": 4}})
    params = final_postprocess(ws, cfg, model, progress=False, tune_if_missing=False)
    assert (params.fg_threshold, params.min_area) == (0.3, 4)


def test_hole_filling_is_chosen_by_the_structure():
    """Ring-shaped objects (a lumen, the space inside a vessel loop) keep their holes when filling
    them would lose object F1; solid objects get them filled."""
    from seglearn.app.evaluate import postprocess_params
    from seglearn.app.tune import tuning_grid
    from seglearn.postprocess import tune_postprocess

    yy, xx = np.mgrid[:64, :64]
    r2 = (yy - 32) ** 2 + (xx - 32) ** 2
    ring = ((r2 <= 20 ** 2) & (r2 >= 12 ** 2)).astype(np.int32)
    # a small object inside the hole that the ground truth counts as its own instance
    inner = (((yy - 32) ** 2 + (xx - 32) ** 2) <= 4 ** 2)
    gt_ring = ring + 2 * inner
    prob_ring = np.where((ring > 0) | inner, 0.9, 0.05).astype(np.float32)
    cfg = load_config(None, TINY + ["model.contour_head=false"])
    base = postprocess_params(cfg.postprocess, False)
    params, _, _ = tune_postprocess([prob_ring], None, [gt_ring.astype(np.int32)],
                                    grid=tuning_grid(base.min_area), base=base)
    assert params.fill_holes is False  # filling the ring would swallow the inner object
    solid = (r2 <= 20 ** 2).astype(np.int32)
    # a gland whose dark lumen the model missed: the ring alone covers < 50% of the gland
    thin = (r2 <= 20 ** 2) & (r2 >= 15 ** 2)
    prob_holey = np.where(thin, 0.9, 0.05).astype(np.float32)
    params, _, _ = tune_postprocess([prob_holey], None, [solid],
                                    grid=tuning_grid(base.min_area), base=base)
    assert params.fill_holes is True
