"""GlaS object-level metrics: object F1, object Dice and object Hausdorff.

Sirinukunwattana et al., "Gland segmentation in colon histology images: The GlaS challenge contest",
Medical Image Analysis 35 (2017); the definitions follow the challenge's official Matlab code
(``F1score.m``, ``ObjectDice.m``, ``ObjectHausdorff.m``). Inputs are 2D integer instance-label
arrays (0 = background, each positive label one object). All quantities are *pooled* over the images
of a test part: TP/FP/FN are summed, and the Dice/Hausdorff weights are normalised by the total
object area of the whole part, not per image.

Matching. A segmented object S_i is matched to the ground-truth object G that shares the most pixels
with it (ties: the smallest label, as Matlab's ``mode``); symmetrically each G_j is matched to its
max-overlap segmented object.

Object F1. S_i is a true positive iff ``|S_i ∩ G| / |G| > 0.5`` for its matched G, else a false
positive; FN = #GT - TP. Two segmented objects can never both be TP for the same G: labels are
disjoint, so two objects each holding more than half of G's pixels would need more than |G| pixels
of G between them. Hence TP <= #GT and FN >= 0. ``F1 = 2 TP / (2 TP + FP + FN)``.

Object Dice. ``1/2 [ sum_i w_i Dice(G_i, S_i) + sum_j w~_j Dice(G~_j, S~_j) ]`` with
``w_i = |S_i| / sum_S |S|`` and ``w~_j = |G~_j| / sum_G |G|`` (sums over the whole part);
``Dice(A, B) = 2 |A ∩ B| / (|A| + |B|)``; an object with no overlap contributes Dice 0.

Object Hausdorff. The same weighting with the symmetric Hausdorff distance between the two pixel
sets, ``H(A, B) = max(max_{a in A} d(a, B), max_{b in B} d(b, A))`` (Euclidean, pixel units, as the
official code computes it with ``bwdist`` on the filled object masks). An object that overlaps no
object of the other set is matched to the object of the other set (same image) at minimum Hausdorff
distance.

Edge-case conventions (the official code leaves these undefined or errors):
- an object whose image has *no* object of the other set gets the image diagonal
  ``hypot(H - 1, W - 1)``, the largest distance two pixels of the image can have, so an unmatched
  object is never scored better than any real match;
- F1: 0 whenever TP = 0, except that a part with no objects on either side scores 1; precision with
  no segmented objects is 1 if there are no GT objects too, else 0 (recall likewise);
- Dice/Hausdorff: if one side has no objects in the whole part its half-sum is undefined and the
  measure is the other half alone (so an empty prediction gets Dice 0 and the diagonal penalty);
  both sides empty -> Dice 1, Hausdorff 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
from scipy import ndimage

__all__ = [
    "glas_metrics",
    "object_f1",
    "object_dice",
    "object_hausdorff",
    "hausdorff_distance",
    "PreparedTruth",
    "f1_from_counts",
]


# ----------------------------------------------------------------------------- input checks


def _as_list(x: np.ndarray | Sequence[np.ndarray], name: str) -> list[np.ndarray]:
    """A single 2D array, an (N, H, W) stack or a sequence of 2D arrays -> list of arrays."""
    if isinstance(x, np.ndarray):
        if x.ndim == 2:
            return [x]
        if x.ndim == 3:
            return list(x)
        raise ValueError(
            f"{name}: expected a 2D label image, an (N, H, W) stack or a list, got shape {x.shape}"
        )
    try:
        return [np.asarray(a) for a in x]
    except TypeError:
        raise ValueError(f"{name}: expected a list of 2D label images, got {type(x).__name__}") from None


def _check_labels(a: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 2:
        raise ValueError(f"{what} must be a 2D instance-label array, got shape {a.shape}")
    if a.dtype == bool:
        # A boolean mask would silently count as a single object; make the caller choose.
        raise ValueError(
            f"{what} is a boolean mask; instance labels are needed "
            "(label connected components first, e.g. scipy.ndimage.label)"
        )
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{what} must have an integer dtype (instance labels), got {a.dtype}")
    if a.size and a.min() < 0:
        raise ValueError(f"{what} has negative labels; 0 is background and objects are 1..N")
    return a


def _pairs(preds, gts) -> list[tuple[np.ndarray, np.ndarray]]:
    ps, gs = _as_list(preds, "preds"), _as_list(gts, "gts")
    if len(ps) != len(gs):
        raise ValueError(f"got {len(ps)} predictions but {len(gs)} ground truths")
    out = []
    for k, (p, g) in enumerate(zip(ps, gs)):
        p = _check_labels(p, f"prediction {k}")
        g = _check_labels(g, f"ground truth {k}")
        if p.shape != g.shape:
            raise ValueError(f"image {k}: prediction shape {p.shape} != ground-truth shape {g.shape}")
        out.append((p, g))
    return out


def _compact(a: np.ndarray) -> tuple[np.ndarray, int]:
    """Relabel the positive labels present in ``a`` to 1..n (order kept); returns (labels, n)."""
    if a.size == 0:
        return np.zeros(a.shape, np.int64), 0
    top = int(a.max())
    if top == 0:
        return np.zeros(a.shape, np.int64), 0
    if top <= 4 * a.size:
        # A lookup table is O(pixels); np.unique would sort every pixel.
        present = np.bincount(a.ravel()) > 0
        present[0] = False
        lut = np.zeros(top + 1, np.int64)
        n = int(present.sum())
        lut[present] = np.arange(1, n + 1)
        return lut[a], n
    values, inv = np.unique(a, return_inverse=True)
    inv = inv.reshape(a.shape).astype(np.int64)
    if values[0] == 0:
        return inv, len(values) - 1
    return inv + 1, len(values)


# ----------------------------------------------------------------------------- Hausdorff


def _set_hausdorff(a: np.ndarray, b: np.ndarray) -> float:
    """Symmetric Hausdorff distance of two non-empty boolean masks of the same (cropped) shape.

    ``distance_transform_edt(~a)`` is each pixel's distance to the nearest pixel of ``a``; the crop is
    exact as long as it contains both sets, because the nearest pixel of a set lies inside the set.
    """
    da = ndimage.distance_transform_edt(~a)
    db = ndimage.distance_transform_edt(~b)
    return float(max(db[a].max(), da[b].max()))


def _union_box(b1: tuple[slice, slice], b2: tuple[slice, slice]) -> tuple[slice, slice]:
    return (
        slice(min(b1[0].start, b2[0].start), max(b1[0].stop, b2[0].stop)),
        slice(min(b1[1].start, b2[1].start), max(b1[1].stop, b2[1].stop)),
    )


def _box_gap(b1: tuple[slice, slice], b2: tuple[slice, slice]) -> float:
    """Euclidean gap between two pixel boxes: a lower bound on the Hausdorff distance of their sets."""
    dy = max(0, b1[0].start - (b2[0].stop - 1), b2[0].start - (b1[0].stop - 1))
    dx = max(0, b1[1].start - (b2[1].stop - 1), b2[1].start - (b1[1].stop - 1))
    return math.hypot(dy, dx)


def hausdorff_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Symmetric Hausdorff distance between two 2D masks (nonzero = in the set), in pixels.

    ``H(A, B) = max(max_{a in A} min_{b in B} |a - b|, max_{b in B} min_{a in A} |a - b|)``.
    Both empty -> 0.0; exactly one empty -> ``inf``.
    """
    a, b = np.asarray(a) != 0, np.asarray(b) != 0
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"hausdorff_distance needs two 2D masks of one shape, got {a.shape} and {b.shape}")
    ea, eb = not a.any(), not b.any()
    if ea and eb:
        return 0.0
    if ea or eb:
        return math.inf
    box = _union_box(ndimage.find_objects(a.astype(np.int8))[0], ndimage.find_objects(b.astype(np.int8))[0])
    return _set_hausdorff(a[box], b[box])


# ----------------------------------------------------------------------------- per-image matching


@dataclass
class _ImageMatch:
    """Overlaps and max-overlap matches of one image's segmented (s) and ground-truth (g) objects."""

    s: np.ndarray
    g: np.ndarray
    n_s: int
    n_g: int
    area_s: np.ndarray
    area_g: np.ndarray
    overlap: np.ndarray  # (n_s, n_g) pixel counts
    match_s: np.ndarray  # (n_s,) index of the max-overlap GT object, -1 if none overlaps
    match_g: np.ndarray  # (n_g,) index of the max-overlap segmented object, -1 if none
    _boxes: dict = field(default_factory=dict)
    _hd: dict = field(default_factory=dict)

    @classmethod
    def build(cls, pred: np.ndarray, gt: np.ndarray) -> "_ImageMatch":
        s, n_s = _compact(pred)
        g, n_g = _compact(gt)
        table = _contingency(s, n_s, g, n_g)
        overlap = table[1:, 1:]
        area_s, area_g = table[1:, :].sum(axis=1), table[:, 1:].sum(axis=0)
        return cls(s, g, n_s, n_g, area_s, area_g, overlap, _best(overlap), _best(overlap.T))

    # -- F1
    def tp(self) -> int:
        return _true_positives(self.overlap, self.match_s, self.area_g)

    # -- Dice: sum of |object| * Dice(object, its match), per side
    def dice_sums(self) -> tuple[float, float]:
        def side(match, area_self, area_other, ov):
            k = np.flatnonzero(match >= 0)
            d = 2.0 * ov[k, match[k]] / (area_self[k] + area_other[match[k]])
            return float(np.sum(area_self[k] * d))

        return (
            side(self.match_s, self.area_s, self.area_g, self.overlap),
            side(self.match_g, self.area_g, self.area_s, self.overlap.T),
        )

    # -- Hausdorff
    def _box(self, side: str, i: int) -> tuple[slice, slice]:
        if side not in self._boxes:
            lab, n = (self.s, self.n_s) if side == "s" else (self.g, self.n_g)
            self._boxes[side] = ndimage.find_objects(lab, max_label=n)
        return self._boxes[side][i]

    def _pair_hd(self, i: int, j: int) -> float:
        """Hausdorff distance between segmented object i and GT object j (0-based), cached."""
        key = (i, j)
        if key not in self._hd:
            box = _union_box(self._box("s", i), self._box("g", j))
            self._hd[key] = _set_hausdorff(self.s[box] == i + 1, self.g[box] == j + 1)
        return self._hd[key]

    def _nearest_hd(self, side: str, i: int) -> float:
        """Min Hausdorff distance from object i of ``side`` to any object of the other side."""
        n_other = self.n_g if side == "s" else self.n_s
        if n_other == 0:
            h, w = self.s.shape
            return math.hypot(h - 1, w - 1)
        other = "g" if side == "s" else "s"
        mine = self._box(side, i)
        gaps = [(_box_gap(mine, self._box(other, j)), j) for j in range(n_other)]
        best = math.inf
        for gap, j in sorted(gaps):
            if gap >= best:  # the box gap bounds the distance from below: nothing later can win
                break
            d = self._pair_hd(i, j) if side == "s" else self._pair_hd(j, i)
            best = min(best, d)
        return best

    def hausdorff_sums(self) -> tuple[float, float]:
        tot_s = 0.0
        for i in range(self.n_s):
            j = self.match_s[i]
            d = self._pair_hd(i, j) if j >= 0 else self._nearest_hd("s", i)
            tot_s += float(self.area_s[i]) * d
        tot_g = 0.0
        for j in range(self.n_g):
            i = self.match_g[j]
            d = self._pair_hd(i, j) if i >= 0 else self._nearest_hd("g", j)
            tot_g += float(self.area_g[j]) * d
        return tot_s, tot_g


def _contingency(s: np.ndarray, top_s: int, g: np.ndarray, n_g: int) -> np.ndarray:
    """(top_s + 1, n_g + 1) pixel counts of label k of ``s`` (row) and GT object j of the compact
    ``g`` (column); row 0 / column 0 = background. One bincount gives the whole table."""
    flat = s.astype(np.int64, copy=False).ravel() * (n_g + 1) + g.ravel()
    return np.bincount(flat, minlength=(top_s + 1) * (n_g + 1)).reshape(top_s + 1, n_g + 1)


def _true_positives(overlap: np.ndarray, match: np.ndarray, area_g: np.ndarray) -> int:
    """Segmented objects whose max-overlap GT object ``match`` (``_best``; -1: none) is covered by
    more than half: ``|S ∩ G| / |G| > 0.5``, compared in integers."""
    i = np.flatnonzero(match >= 0)
    j = match[i]
    return int(np.count_nonzero(2 * overlap[i, j] > area_g[j]))


def _best(overlap: np.ndarray) -> np.ndarray:
    """Row-wise argmax of an overlap table (first = smallest label on ties); -1 where a row is all 0."""
    if overlap.shape[1] == 0:
        return np.full(overlap.shape[0], -1, np.int64)
    idx = overlap.argmax(axis=1)
    return np.where(overlap.max(axis=1) > 0, idx, -1)


# ----------------------------------------------------------------------------- pooling


def _f1_from_counts(tp: int, fp: int, fn: int) -> dict:
    n_pred, n_gt = tp + fp, tp + fn
    precision = tp / n_pred if n_pred else (1.0 if n_gt == 0 else 0.0)
    recall = tp / n_gt if n_gt else (1.0 if n_pred == 0 else 0.0)
    denom = 2 * tp + fp + fn
    f1 = 2 * tp / denom if denom else 1.0
    return {"f1": f1, "precision": precision, "recall": recall, "tp": tp, "fp": fp, "fn": fn}


def _combine(sum_s: float, total_s: float, sum_g: float, total_g: float, both_empty: float) -> float:
    """``1/2 (sum_s / total_s + sum_g / total_g)`` with the empty-side conventions of the module doc."""
    if total_s == 0 and total_g == 0:
        return both_empty
    if total_s == 0:
        return sum_g / total_g
    if total_g == 0:
        return sum_s / total_s
    return 0.5 * (sum_s / total_s + sum_g / total_g)


class PreparedTruth:
    """One ground-truth image, checked and compacted once, for scoring many predictions of the same
    image (a post-processing grid search scores each validation image at every grid point).

    ``table(labels)`` is the contingency table of any non-negative label image against it and
    ``true_positives(rows)`` counts GlaS true positives among prediction objects given their table
    rows, exactly as :func:`object_f1` does: each object's max-overlap GT object (the first on
    ties), a hit when it covers more than half of that GT object.
    """

    def __init__(self, gt: np.ndarray, what: str = "ground truth"):
        g = _check_labels(gt, what)
        self.what = what
        self.g, self.n_g = _compact(g)
        self.area = np.bincount(self.g.ravel(), minlength=self.n_g + 1)  # [0] = background
        self.n_fg = int(self.area[1:].sum())

    def table(self, labels: np.ndarray) -> np.ndarray:
        """(max label + 1, n_g + 1) pixel counts: row k = label k of ``labels`` (not compacted;
        absent labels give rows of zeros), column j = GT object j, column 0 = GT background."""
        labels = np.asarray(labels)
        if labels.shape != self.g.shape:
            raise ValueError(f"prediction shape {labels.shape} != {self.what} shape {self.g.shape}")
        return _contingency(labels, int(labels.max()) if labels.size else 0, self.g, self.n_g)

    def true_positives(self, rows: np.ndarray) -> int:
        """TP among the prediction objects whose table rows (all n_g + 1 columns) are ``rows``."""
        overlap = rows[:, 1:]
        return _true_positives(overlap, _best(overlap), self.area[1:])


def f1_from_counts(tp: int, fp: int, fn: int) -> dict:
    """``{"f1", "precision", "recall", "tp", "fp", "fn"}`` from pooled object counts (the
    conventions of :func:`object_f1`)."""
    return _f1_from_counts(int(tp), int(fp), int(fn))


def _matches(preds, gts) -> Iterable[_ImageMatch]:
    for p, g in _pairs(preds, gts):
        yield _ImageMatch.build(p, g)


def object_f1(preds, gts) -> dict:
    """Pooled GlaS object F1: ``{"f1", "precision", "recall", "tp", "fp", "fn"}`` (see module doc)."""
    tp = fp = fn = 0
    for m in _matches(preds, gts):
        t = m.tp()
        tp, fp, fn = tp + t, fp + m.n_s - t, fn + m.n_g - t
    return _f1_from_counts(tp, fp, fn)


def object_dice(preds, gts) -> float:
    """Pooled GlaS object Dice (see module doc)."""
    return glas_metrics(preds, gts, hausdorff=False)["dice"]


def object_hausdorff(preds, gts) -> float:
    """Pooled GlaS object Hausdorff distance in pixels (see module doc)."""
    return glas_metrics(preds, gts)["hausdorff"]


def glas_metrics(preds, gts, hausdorff: bool = True) -> dict:
    """All GlaS object metrics of a test part, pooled over its images.

    ``preds``/``gts``: lists (or (N, H, W) stacks) of 2D integer instance-label arrays, 0 = background.
    Returns ``{"f1", "precision", "recall", "tp", "fp", "fn", "dice", "hausdorff", "n_images"}``;
    ``hausdorff=False`` skips the (slowest) distance computation and reports ``nan``.
    """
    tp = fp = fn = 0
    ds_s = ds_g = hs_s = hs_g = 0.0
    tot_s = tot_g = 0
    n = 0
    for m in _matches(preds, gts):
        n += 1
        t = m.tp()
        tp, fp, fn = tp + t, fp + m.n_s - t, fn + m.n_g - t
        a, b = m.dice_sums()
        ds_s, ds_g = ds_s + a, ds_g + b
        tot_s, tot_g = tot_s + int(m.area_s.sum()), tot_g + int(m.area_g.sum())
        if hausdorff:
            a, b = m.hausdorff_sums()
            hs_s, hs_g = hs_s + a, hs_g + b
    out = _f1_from_counts(tp, fp, fn)
    out["dice"] = _combine(ds_s, tot_s, ds_g, tot_g, both_empty=1.0)
    out["hausdorff"] = _combine(hs_s, tot_s, hs_g, tot_g, both_empty=0.0) if hausdorff else math.nan
    out["n_images"] = n
    return out
