"""Tuning fits the structure: pixel Dice and the semantic mode for vessels, object F1 and the
instances mode for touching glands; the record says which objective chose."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from seglearn.app.tune import (AREA_FACTORS, final_postprocess, stored_tuning, tune_final,
                               tuning_grids)
from seglearn.config import PostprocessConfig, load_config
from seglearn.metrics.glas import object_f1
from seglearn.metrics.pixel import pixel_dice_pooled
from seglearn.postprocess import instances_from_probs, tune_postprocess

YY, XX = np.mgrid[:64, :96]
FRAGMENTS = ((30, 60, 18), (36, 62, 22), (46, 58, 20), (54, 64, 26))  # row, first column, length


def _vessels() -> np.ndarray:
    """Two 2-px vessels 3 px apart, joined at both ends (a thin strip of background enclosed
    between them), a loop, and four short 1-px branches of 18-26 px on their own."""
    m = np.zeros((64, 96), bool)
    m[10:12, 8:88] = True
    m[15:17, 8:88] = True            # parallel, 3 px of background between
    m[10:17, 8:10] = m[10:17, 86:88] = True  # joined at both ends: the strip is a hole
    r = np.hypot(YY - 40, XX - 30)
    m |= (r >= 9) & (r < 11)          # a loop enclosing a disc of background
    for y, x0, n in FRAGMENTS:
        m[y, x0:x0 + n] = True        # short thin fragments: a 30-px min_area prunes them
    return m


def _blurred(mask: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """A soft probability map of ``mask``: blurred, so the gap between close vessels is grey."""
    p = ndi.gaussian_filter(mask.astype(np.float64), sigma)
    return np.clip(0.05 + 1.3 * p, 0, 1)


def _dice(fg, gt, params) -> float:
    return pixel_dice_pooled([instances_from_probs(fg, None, params)], [gt])


def test_vessels_pick_semantic_without_hole_filling_and_beat_the_gland_defaults():
    gt = _vessels()
    gts = [ndi.label(gt, np.ones((3, 3)))[0].astype(np.int32)]
    fg = _blurred(gt)
    base = PostprocessConfig(use_contour=False)
    params, score, table = tune_postprocess([fg], None, gts, grid=tuning_grids(30, False, "pixels"),
                                            base=base, objective="dice")
    assert params.mode == "semantic" and params.fill_holes is False
    assert params.min_area == 15  # the grid's smallest (0.5 x 30): keeps the thin fragments
    pred = instances_from_probs(fg, None, params)
    assert all(pred[y, x0 + n // 2] > 0 for y, x0, n in FRAGMENTS)
    assert (pred[12:15, 12:84] == 0).all()  # the strip between the parallel vessels stays empty
    assert score == pytest.approx(_dice(fg, gt, params))
    default = _dice(fg, gt, PostprocessConfig())  # the gland defaults: fill holes, min_area 30
    assert score > default + 0.05
    # no instances-mode point scores more (ties go to the mode that fits thin structures)
    assert score >= max(r["pixel_dice"] for r in table if r["mode"] == "instances")
    assert "f1" not in table[0]  # object matching is not computed for the dice objective


def test_touching_glands_with_a_contour_map_keep_the_instances_mode():
    """Pairs of touching discs: only the contour cut separates them, so object F1 prefers the
    instances mode (the semantic mode merges each pair)."""
    gt = np.zeros((64, 96), np.int32)
    k = 0
    for cy, cx in ((18, 16), (18, 62), (46, 30)):
        for dx in (0, 17):
            k += 1
            gt[((YY - cy) ** 2 + (XX - cx - dx) ** 2 <= 81) & (gt == 0)] = k
    fg = _blurred(gt > 0, 0.7)
    edge = (ndi.grey_dilation(gt, size=3) != ndi.grey_erosion(gt, size=3))
    contour = _blurred(edge & (gt > 0), 0.5)
    params, score, table = tune_postprocess([fg], [contour], [gt], grid=tuning_grids(30, True),
                                            base=PostprocessConfig(), objective="f1")
    assert params.mode == "instances" and score == 1.0
    assert max(r["f1"] for r in table if r["mode"] == "semantic") < score - 0.3
    preds = [instances_from_probs(fg, contour, params)]
    assert object_f1(preds, [gt])["f1"] == score


def test_area_grid_reaches_16x():
    assert AREA_FACTORS[-1] == 16
    grids = tuning_grids(30, False)
    assert [g["mode"] for g in grids] == [("instances",), ("semantic",)]
    assert [g["mode"] for g in tuning_grids(30, False, "pixels")] == [("semantic",), ("instances",)]
    assert max(grids[0]["min_area"]) == 480 and min(grids[0]["min_area"]) == 15
    assert grids[0]["split_touching"] == (False, True)  # no contour map: splitting is searched
    assert "split_touching" not in tuning_grids(30, True)[0]


class BlurredTruth:
    """A stand-in final segmenter: the image's own mask blurred into a probability map."""

    round_id = 3

    def __init__(self, masks: dict):
        self._by_image = masks

    def predict_mean(self, image, scale=1.0, device="cpu", flips=False):
        return _blurred(self._by_image[image.tobytes()] > 0).astype(np.float32)[None]


def _workspace(tmp_path, kind: str):
    from seglearn.app.init import init_workspace
    from seglearn.data import read_image, read_mask

    cfg = load_config(None, ["synthetic.size=96", "train.bf16=false", "model.contour_head=false",
                             f"synthetic.kind={kind}"])
    ws = init_workspace(tmp_path / kind, cfg, synthetic=6, initial_labeled=1.0, progress=False)
    masks = {}
    for it in ws.items():
        gt = read_mask(ws.resolve(it.oracle_mask_path), shape=(it.height, it.width))
        masks[read_image(ws.resolve(it.image_path)).tobytes()] = gt
    return ws, cfg, BlurredTruth(masks)


def test_the_record_names_the_objective_the_labels_call_for(tmp_path):
    ws, cfg, model = _workspace(tmp_path, "vessels")
    record = tune_final(ws, cfg, model, progress=False)
    assert record["objective"] == "dice" and record["objective_name"] == "pixel Dice"
    assert "f1" not in record and 0.5 < record["score"] <= 1.0
    assert record["params"]["mode"] == "semantic" and record["params"]["fill_holes"] is False
    assert stored_tuning(ws, 3) == record
    params = final_postprocess(ws, cfg, model, progress=False, tune_if_missing=False)
    assert params.mode == "semantic"
    ws.close()

    ws, cfg, model = _workspace(tmp_path, "glands")
    record = tune_final(ws, cfg, model, progress=False)
    assert record["objective"] == "f1" and record["f1"] == record["score"]
    assert record["params"]["mode"] == "instances"
    # --set evaluate.metrics=pixels: the user's choice of metrics is the objective too
    forced = load_config(None, ["synthetic.size=96", "train.bf16=false", "evaluate.metrics=pixels",
                                "model.contour_head=false"])
    assert tune_final(ws, forced, model, progress=False)["objective"] == "dice"
    ws.close()


def test_an_old_record_without_the_new_fields_keeps_the_configured_mode(tmp_path):
    from seglearn.app.tune import META_KEY

    ws, cfg, model = _workspace(tmp_path, "glands")
    with ws.writer():
        ws.set_meta(META_KEY, {"3": {"round": 3, "config_hash": "x", "f1": 0.8, "images": 2,
                                     "params": {"fg_threshold": 0.4, "contour_threshold": 0.5,
                                                "min_area": 9, "fill_holes": False}}})
    params = final_postprocess(ws, cfg, model, progress=False, tune_if_missing=False)
    assert (params.mode, params.split_touching, params.min_area) == ("instances", False, 9)
    ws.close()
