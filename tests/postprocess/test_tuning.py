"""tune_postprocess against an independent brute force over the same grid."""

import itertools

import numpy as np
import pytest

from seglearn.metrics import glas_metrics
from seglearn.postprocess import PostprocessParams, instances_from_probs, tune_postprocess

YY, XX = np.mgrid[:24, :40]


def bridged_pair(cx0):
    """Two r=6 discs joined by a bridge of probability 0.55, plus a 9-px speck at 0.8."""
    gt = np.zeros((24, 40), np.int32)
    gt[(YY - 11) ** 2 + (XX - cx0) ** 2 <= 36] = 1
    gt[(YY - 11) ** 2 + (XX - cx0 - 16) ** 2 <= 36] = 2
    fg = np.where(gt > 0, 0.9, 0.05)
    fg[10:13, cx0 + 6 : cx0 + 11] = 0.55
    fg[19:22, 1:4] = 0.8
    return fg, gt


def brute_force(fgs, cts, gts, grid):
    keys = list(grid)
    best, best_f1, f1s = None, -1.0, []
    for vals in itertools.product(*grid.values()):
        p = PostprocessParams(**dict(zip(keys, vals)))
        preds = [instances_from_probs(f, c, p) for f, c in zip(fgs, cts)]
        f1 = glas_metrics(preds, gts, hausdorff=False)["f1"]
        f1s.append(f1)
        if f1 > best_f1:
            best, best_f1 = p, f1
    return best, best_f1, f1s


def test_thresholds_and_min_area_match_brute_force():
    pairs = [bridged_pair(c) for c in (7, 9, 11)]
    fgs, gts = [p[0] for p in pairs], [p[1] for p in pairs]
    grid = {"fg_threshold": (0.4, 0.5, 0.6, 0.7), "min_area": (0, 20)}
    params, f1, table = tune_postprocess(fgs, None, gts, grid=grid)
    want, want_f1, want_f1s = brute_force(fgs, [None] * 3, gts, grid)
    assert params == want and f1 == pytest.approx(want_f1)
    assert [row["f1"] for row in table] == pytest.approx(want_f1s)
    # Worked out by hand: 0.6 cuts the 0.55 bridge, min_area 20 drops the 9-px speck; 0.7 ties
    # with 0.6 and loses to the earlier grid point.
    assert (params.fg_threshold, params.min_area, f1) == (0.6, 20, 1.0)
    assert table[0]["fg_threshold"] == 0.4 and table[0]["min_area"] == 0 and len(table) == 8


def test_contour_threshold_matches_brute_force():
    gt = np.zeros((24, 40), np.int32)
    gt[(YY - 11) ** 2 + (XX - 12) ** 2 <= 64] = 1
    gt[((YY - 11) ** 2 + (XX - 27) ** 2 <= 64) & (gt == 0)] = 2  # touching the first
    fg = np.where(gt > 0, 0.9, 0.05)
    ct = np.where((np.abs(XX - 19.5) < 2.5) & (gt > 0), 0.8, 0.1)
    grid = {"contour_threshold": (0.9, 0.5), "fg_threshold": (0.5,), "min_area": (0, 30)}
    params, f1, table = tune_postprocess([fg], [ct], [gt], grid=grid)
    want, want_f1, want_f1s = brute_force([fg], [ct], [gt], grid)
    assert params == want and f1 == pytest.approx(want_f1)
    assert [row["f1"] for row in table] == pytest.approx(want_f1s)
    assert params.contour_threshold == 0.5 and f1 == 1.0  # 0.9 leaves the glands merged


def _random_case(rng, shape=(40, 48)):
    """Blobs with lumens (holes), touching pairs, specks, an empty-GT image now and then."""
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    gt = np.zeros(shape, np.int32)
    fg = rng.random(shape) * 0.3
    ct = rng.random(shape) * 0.3
    for k in range(1, rng.integers(0, 6) + 1):
        cy, cx, r = rng.integers(0, shape[0]), rng.integers(0, shape[1]), rng.integers(3, 10)
        d = np.hypot(yy - cy, xx - cx)
        gt[(d < r) & (gt == 0)] = k
        fg[d < r] = rng.uniform(0.45, 0.95)
        fg[d < r * rng.uniform(0, 0.5)] = rng.uniform(0.0, 0.5)  # a lumen: a hole at some thresholds
        ct[np.abs(d - r) < 1.5] = rng.uniform(0.3, 0.9)
    return fg, ct, gt


def test_every_table_field_equals_the_finished_images_scores():
    """The shared-table scoring equals object F1 and pooled pixel Dice of the images
    instances_from_probs returns at each point, over every finishing setting."""
    from seglearn.metrics.glas import object_f1
    from seglearn.metrics.pixel import pixel_metrics

    rng = np.random.default_rng(3)
    # min_area 0 and 1 keep the same objects (every kept one has area > 0): the filled rows are
    # reused across them, and must still equal the images finished at each
    grid = {"fg_threshold": (0.4, 0.6), "contour_threshold": (0.5,), "min_area": (0, 1, 5, 40),
            "fill_holes": (True, False)}
    for trial in range(12):
        cases = [_random_case(rng) for _ in range(3)]
        fgs, cts, gts = ([c[i] for c in cases] for i in range(3))
        use_ct = trial % 2 == 0
        _, _, table = tune_postprocess(fgs, cts if use_ct else None, gts, grid=grid)
        g = dict(grid) if use_ct else {k: v for k, v in grid.items() if k != "contour_threshold"}
        for row, vals in zip(table, itertools.product(*g.values())):
            p = PostprocessParams(**dict(zip(g, vals)))
            preds = [instances_from_probs(f, c if use_ct else None, p) for f, c in zip(fgs, cts)]
            want = {**object_f1(preds, gts), "pixel_dice": pixel_metrics(preds, gts)["dice"]}
            assert {k: row[k] for k in want} == want


def test_bad_grid_and_inputs():
    fg, gt = bridged_pair(7)
    with pytest.raises(ValueError, match="unknown post-processing grid keys"):
        tune_postprocess([fg], None, [gt], grid={"threshold": (0.5,)})
    with pytest.raises(ValueError, match="fg_threshold"):
        tune_postprocess([fg], None, [gt], grid={"fg_threshold": (2.0,)})
    with pytest.raises(ValueError, match="1 fg maps but 2"):
        tune_postprocess([fg], None, [gt, gt])
    with pytest.raises(ValueError, match="contour maps"):
        tune_postprocess([fg], [], [gt])
