"""Pixel Dice / IoU against hand counts and a numpy oracle."""

import numpy as np
import pytest

from seglearn.metrics import (
    pixel_counts,
    pixel_dice,
    pixel_dice_pooled,
    pixel_iou,
    pixel_iou_pooled,
    pixel_metrics,
)


def test_hand_counted_pair():
    gt = np.zeros((6, 6), np.int32)
    gt[0:4, 0:4] = 1  # 16 px
    pred = np.zeros((6, 6), np.int32)
    pred[2:6, 2:6] = 5  # 16 px, instance label 5 still counts as foreground; overlap 4 px
    assert pixel_counts(pred, gt) == (4, 12, 12, 36 - 28)
    assert pixel_dice(pred, gt) == pytest.approx(2 * 4 / 32)
    assert pixel_iou(pred, gt) == pytest.approx(4 / 28)


def test_empty_cases():
    z = np.zeros((3, 3), np.uint8)
    one = z.copy()
    one[1, 1] = 1
    assert pixel_dice(z, z) == 1.0 and pixel_iou(z, z) == 1.0
    assert pixel_dice(z, one) == 0.0 and pixel_iou(one, z) == 0.0


def test_pooled_equals_counts_summed_over_images():
    rng = np.random.default_rng(3)
    preds = [rng.random((8, 9)) > 0.5, rng.random((5, 5)) > 0.3]
    gts = [rng.random((8, 9)) > 0.5, rng.random((5, 5)) > 0.6]
    inter = sum(np.sum(p & g) for p, g in zip(preds, gts))
    sp, sg = sum(p.sum() for p in preds), sum(g.sum() for g in gts)
    union = sum(np.sum(p | g) for p, g in zip(preds, gts))
    assert pixel_dice_pooled(preds, gts) == pytest.approx(2 * inter / (sp + sg))
    assert pixel_iou_pooled(preds, gts) == pytest.approx(inter / union)
    m = pixel_metrics(preds, gts)
    assert m["dice"] == pytest.approx(2 * inter / (sp + sg))
    assert m["mean_dice"] == pytest.approx(np.mean([pixel_dice(p, g) for p, g in zip(preds, gts)]))
    assert m["precision"] == pytest.approx(inter / sp) and m["recall"] == pytest.approx(inter / sg)
    agree = sum(np.sum(p == g) for p, g in zip(preds, gts))
    assert m["accuracy"] == pytest.approx(agree / (72 + 25))


def test_bad_input():
    with pytest.raises(ValueError, match="shape"):
        pixel_dice(np.zeros((3, 3)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="2D"):
        pixel_iou(np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match="1 predictions but 2"):
        pixel_dice_pooled([np.zeros((2, 2))], [np.zeros((2, 2))] * 2)
