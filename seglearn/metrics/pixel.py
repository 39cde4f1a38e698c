"""Pixel-level (semantic) metrics of binary foreground masks.

Any nonzero pixel is foreground, so instance-label images can be passed directly.
``Dice = 2 |P ∩ G| / (|P| + |G|)`` (Sørensen-Dice), ``IoU = |P ∩ G| / |P ∪ G|`` (Jaccard).
Both masks empty -> 1.0 (perfect agreement on "nothing here").

Per-image functions take one pair of masks; the ``_pooled`` variants sum the pixel counts over a
list of images first (one big virtual image, so large images weigh more), whereas ``pixel_metrics``
also reports the mean of the per-image scores.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "pixel_counts",
    "pixel_dice",
    "pixel_iou",
    "pixel_dice_pooled",
    "pixel_iou_pooled",
    "pixel_metrics",
]


def _fg(a, what: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 2:
        raise ValueError(f"{what} must be a 2D mask, got shape {a.shape}")
    if not (a.dtype == bool or np.issubdtype(a.dtype, np.number)):
        raise ValueError(f"{what} must be a boolean or numeric mask, got dtype {a.dtype}")
    return a != 0


def pixel_counts(pred, gt) -> tuple[int, int, int, int]:
    """``(tp, fp, fn, tn)`` pixel counts of the foreground of ``pred`` against ``gt``."""
    p, g = _fg(pred, "prediction"), _fg(gt, "ground truth")
    if p.shape != g.shape:
        raise ValueError(f"prediction shape {p.shape} != ground-truth shape {g.shape}")
    tp = int(np.count_nonzero(p & g))
    fp = int(np.count_nonzero(p)) - tp
    fn = int(np.count_nonzero(g)) - tp
    return tp, fp, fn, p.size - tp - fp - fn


def _dice(tp: int, fp: int, fn: int) -> float:
    d = 2 * tp + fp + fn
    return 2 * tp / d if d else 1.0


def _iou(tp: int, fp: int, fn: int) -> float:
    d = tp + fp + fn
    return tp / d if d else 1.0


def pixel_dice(pred, gt) -> float:
    """Foreground Dice ``2|P ∩ G| / (|P| + |G|)`` of one image; both empty -> 1.0."""
    tp, fp, fn, _ = pixel_counts(pred, gt)
    return _dice(tp, fp, fn)


def pixel_iou(pred, gt) -> float:
    """Foreground IoU ``|P ∩ G| / |P ∪ G|`` of one image; both empty -> 1.0."""
    tp, fp, fn, _ = pixel_counts(pred, gt)
    return _iou(tp, fp, fn)


def _summed(preds, gts) -> tuple[list[tuple[int, int, int, int]], np.ndarray]:
    preds, gts = list(preds), list(gts)
    if len(preds) != len(gts):
        raise ValueError(f"got {len(preds)} predictions but {len(gts)} ground truths")
    per = [pixel_counts(p, g) for p, g in zip(preds, gts)]
    return per, np.sum(np.array(per, dtype=np.int64).reshape(-1, 4), axis=0)


def pixel_dice_pooled(preds, gts) -> float:
    """Dice of the pixel counts summed over all images (``sum 2 TP / sum (2 TP + FP + FN)``)."""
    _, (tp, fp, fn, _) = _summed(preds, gts)
    return _dice(int(tp), int(fp), int(fn))


def pixel_iou_pooled(preds, gts) -> float:
    """IoU of the pixel counts summed over all images."""
    _, (tp, fp, fn, _) = _summed(preds, gts)
    return _iou(int(tp), int(fp), int(fn))


def pixel_metrics(preds, gts) -> dict:
    """Pooled ``dice``, ``iou``, ``precision``, ``recall``, ``accuracy``, plus ``mean_dice`` and
    ``mean_iou`` (means of the per-image scores). No predicted (resp. true) foreground anywhere gives
    precision (resp. recall) 1.0 when the other side is empty too, else 0.0."""
    per, (tp, fp, fn, tn) = _summed(preds, gts)
    if not per:
        raise ValueError("pixel_metrics needs at least one image")
    tp, fp, fn, tn = int(tp), int(fp), int(fn), int(tn)
    return {
        "dice": _dice(tp, fp, fn),
        "iou": _iou(tp, fp, fn),
        "precision": tp / (tp + fp) if tp + fp else (1.0 if fn == 0 else 0.0),
        "recall": tp / (tp + fn) if tp + fn else (1.0 if fp == 0 else 0.0),
        "accuracy": (tp + tn) / (tp + fp + fn + tn),
        "mean_dice": float(np.mean([_dice(*c[:3]) for c in per])),
        "mean_iou": float(np.mean([_iou(*c[:3]) for c in per])),
    }
