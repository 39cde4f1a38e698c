"""Grid search of post-processing parameters on a validation split, by pooled object F1 or Dice.

For every point of the Cartesian product of ``grid`` (keys = fields of
:class:`seglearn.config.PostprocessConfig`, in the dict's order; other fields from ``base``; a
list of such dicts searches the union of their products, in order: e.g. one grid per ``mode``),
every validation image is post-processed with :func:`instances_from_probs` and scored pooled over
the split, by the ``objective``:

* ``"f1"`` (blob-like objects: glands, nuclei): the GlaS object F1 (Sirinukunwattana et al. 2017).
  The point with the highest F1 wins; among equal F1s the highest pooled pixel Dice (object F1
  counts an object as found when it covers half of its ground truth, so it cannot see a filled
  hole, a bridge between two vessels or a pruned thin branch; pixel Dice can);
* ``"dice"`` (thin structures: vessels, where one object is a whole tree and object matching says
  nothing; DRIVE, Staal et al. 2004): the pooled pixel Dice ``2 |P & G| / (|P| + |G|)``;

then the earliest point in grid order, so the result does not depend on floating-point noise in
the table.

Work is shared, not skipped: the steps before the area filter depend only on the thresholds and
growth settings, so they run once per such setting and every ``min_area``/``fill_holes`` value
reuses them. The results equal calling :func:`instances_from_probs` at every point.
"""

from __future__ import annotations

import itertools
from dataclasses import fields, replace
from typing import Sequence

import numpy as np

from seglearn.metrics.glas import PreparedTruth, f1_from_counts
from seglearn.config import PostprocessConfig
from seglearn.postprocess.flood import enclosed as _enclosed
from seglearn.postprocess.instances import (
    _check_prob,
    _fill_holes_in,
    _raw_instances,
)

__all__ = ["DEFAULT_GRID", "OBJECTIVES", "tune_postprocess"]

OBJECTIVES = ("f1", "dice")

DEFAULT_GRID: dict[str, tuple] = {
    "fg_threshold": (0.3, 0.4, 0.5, 0.6, 0.7),
    "contour_threshold": (0.3, 0.5, 0.7),
    "min_area": (0, 25, 50, 100, 200),
}

# Fields applied after the expensive part (see _finish); everything else keys the shared work.
_FINISH_FIELDS = ("min_area", "fill_holes")


def _check_grid(grid: dict) -> dict[str, tuple]:
    known = {f.name for f in fields(PostprocessConfig)}
    unknown = sorted(set(grid) - known)
    if unknown:
        raise ValueError(f"unknown post-processing grid keys {unknown}; known: {sorted(known)}")
    out = {}
    for k, v in grid.items():
        if isinstance(v, np.ndarray):
            v = v.tolist()
        vals = (v,) if isinstance(v, (str, bytes)) or not isinstance(v, Sequence) else tuple(v)
        if not vals:
            raise ValueError(f"grid[{k!r}] is empty")
        out[k] = vals
    return out


def tune_postprocess(
    fg_probs: Sequence[np.ndarray],
    contour_probs: Sequence[np.ndarray] | None,
    gts: Sequence[np.ndarray],
    grid: dict | Sequence[dict] | None = None,
    base: PostprocessConfig | None = None,
    objective: str = "f1",
) -> tuple[PostprocessConfig, float, list[dict]]:
    """Pick the post-processing parameters that maximise the pooled ``objective`` ("f1": object
    F1, "dice": pixel Dice; see the module docstring) on a validation split.

    ``fg_probs``: list of (H, W) float foreground probabilities; ``contour_probs``: matching list or
    None (then ``contour_threshold`` is dropped from the grid, it would change nothing); ``gts``:
    matching instance-label images. ``grid``: ``{field: values}`` or a list of them (searched one
    after the other), default :data:`DEFAULT_GRID`. Returns ``(best_params, best_score, table)``
    (``best_score``: the objective's value); ``table`` has one row per grid point in grid order:
    the gridded values plus ``pixel_dice`` and, for "f1", ``f1``, ``precision``, ``recall``,
    ``tp``, ``fp``, ``fn``.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, not {objective!r}")
    base = PostprocessConfig() if base is None else base
    if not isinstance(base, PostprocessConfig):
        raise ValueError(f"base must be a PostprocessConfig (PostprocessParams), got "
                         f"{type(base).__name__}")
    fg_probs, gts = list(fg_probs), list(gts)
    if not fg_probs:
        raise ValueError("tune_postprocess needs at least one validation image")
    if len(fg_probs) != len(gts):
        raise ValueError(f"got {len(fg_probs)} fg maps but {len(gts)} ground truths")
    fgs = [_check_prob(f, f"fg_probs[{i}]") for i, f in enumerate(fg_probs)]
    if contour_probs is None:
        contours: list = [None] * len(fgs)
    else:
        contour_probs = list(contour_probs)
        if len(contour_probs) != len(fgs):
            raise ValueError(f"got {len(fgs)} fg maps but {len(contour_probs)} contour maps")
        contours = [
            _check_prob(c, f"contour_probs[{i}]", f.shape) for i, (c, f) in enumerate(zip(contour_probs, fgs))
        ]

    grid = DEFAULT_GRID if grid is None else grid
    points = []
    for sub in [grid] if isinstance(grid, dict) else list(grid):
        g = _check_grid(sub)
        if contour_probs is None:
            g.pop("contour_threshold", None)
        keys = list(g)
        points += [dict(zip(keys, vals)) for vals in itertools.product(*g.values())]
    if not points:
        raise ValueError("the post-processing grid is empty")
    params = [replace(base, **pt) for pt in points]  # validates every value up front

    # Group grid points by the settings of the shared (pre-area-filter) work.
    groups: dict[tuple, list[int]] = {}
    for i, p in enumerate(params):
        key = tuple(getattr(p, f.name) for f in fields(p) if f.name not in _FINISH_FIELDS)
        groups.setdefault(key, []).append(i)

    truths = [PreparedTruth(g, f"ground truth {k}") for k, g in enumerate(gts)]
    table: list[dict | None] = [None] * len(points)
    for idx in groups.values():
        raw = [_raw_instances(f, c, params[idx[0]]) for f, c in zip(fgs, contours)]
        scored = _score_finishes(raw, truths, [params[i] for i in idx])
        for i, row in zip(idx, scored):
            if objective != "f1":  # object matching says nothing about thin structures
                row = {"pixel_dice": row["pixel_dice"]}
            table[i] = {**points[i], **row}

    order = ("f1", "pixel_dice") if objective == "f1" else ("pixel_dice",)
    best = max(range(len(points)),
               key=lambda i: (*(round(table[i][k], 12) for k in order), -i))
    return params[best], float(table[best][order[0]]), table  # type: ignore[return-value]


def _score_finishes(raw: list[np.ndarray], truths: list[PreparedTruth],
                    params: list[PostprocessConfig]) -> list[dict]:
    """Pooled object F1 counts and pixel Dice of ``_finish(raw, p)`` for every ``p`` (which differ
    only in the finishing fields), without building every finished image.

    Renumbering changes no score, and without hole filling the area filter only drops table rows:
    each image's raw contingency table (raw objects x GT objects) is built once and every
    ``min_area`` reads its kept rows. With hole filling the filtered image is filled and tabled,
    once per distinct set of kept objects (two ``min_area`` values that keep the same objects give
    the same image), and only where the filtered image encloses background at all (else filling
    changes nothing and the kept rows are the table). The results equal ``object_f1`` and
    ``pixel_metrics(...)["dice"]`` of the finished images (``tests/postprocess/test_tuning.py``)."""
    tables = [t.table(r) for r, t in zip(raw, truths)]
    areas = [tab.sum(axis=1) for tab in tables]
    filled: dict[tuple, np.ndarray] = {}  # (image, kept objects) -> rows of the filled image
    out = []
    for p in params:
        tp = n_s = n_g = px_tp = px_pred = px_gt = 0
        for j, (r, t, tab, area) in enumerate(zip(raw, truths, tables, areas)):
            keep = (area > 0) & (area >= p.min_area)
            keep[0] = False
            if p.fill_holes and p.mode != "semantic":  # _finish's steps
                key = (j, keep.tobytes())
                rows = filled.get(key)
                if rows is None:
                    rows = filled[key] = _filled_rows(r, t, tab, keep)
            else:
                rows = tab[keep]
            tp += t.true_positives(rows)
            n_s += rows.shape[0]
            n_g += t.n_g
            px_pred += int(rows.sum())
            px_tp += int(rows[:, 1:].sum())
            px_gt += t.n_fg
        denom = px_pred + px_gt  # pooled pixel Dice 2 TP / (|P| + |G|); both empty -> 1.0
        out.append({**f1_from_counts(tp, n_s - tp, n_g - tp),
                    "pixel_dice": 2 * px_tp / denom if denom else 1.0})
    return out


def _filled_rows(raw: np.ndarray, truth: PreparedTruth, table: np.ndarray,
                 keep: np.ndarray) -> np.ndarray:
    """The table rows of the objects of ``fill_holes(raw with only the ``keep`` labels)``. Where
    that image encloses no background, filling changes nothing and they are ``table[keep]`` (the
    kept labels' rows of the raw table: the same pixels, in the same label order)."""
    kept = np.where(keep[raw], raw, 0)
    inner = _enclosed(kept == 0)
    if not inner.any():
        return table[keep]
    tab = truth.table(_fill_holes_in(kept, inner))
    nonempty = tab.sum(axis=1) > 0
    nonempty[0] = False
    return tab[nonempty]
