"""GlaS object metrics against hand-worked cases, closed forms and a naive independent oracle."""

import math

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.distance import cdist

from seglearn.metrics import glas_metrics, hausdorff_distance, object_dice, object_f1, object_hausdorff


def rect(shape, r0, r1, c0, c1, label=1, out=None):
    """Label rows r0..r1-1, cols c0..c1-1 (on ``out`` or a fresh zero image)."""
    a = np.zeros(shape, np.int32) if out is None else out
    a[r0:r1, c0:c1] = label
    return a


def brute_hd(a, b):
    """Set Hausdorff distance from all pixel pairs (independent of the distance-transform code)."""
    d = cdist(np.argwhere(a), np.argwhere(b))
    return max(d.min(axis=1).max(), d.min(axis=0).max())


def naive_glas(preds, gts):
    """Plain-loop transcription of the GlaS definitions (module doc of seglearn.metrics.glas)."""
    tp = fp = n_gt = 0
    s_rows, g_rows = [], []  # (area, dice, hausdorff) per object
    for p, g in zip(preds, gts):
        diag = math.hypot(p.shape[0] - 1, p.shape[1] - 1)
        for mine, other, rows, is_s in ((p, g, s_rows, True), (g, p, g_rows, False)):
            other_ids = [int(k) for k in np.unique(other) if k]
            for k in (int(k) for k in np.unique(mine) if k):
                obj = mine == k
                ov = [(int(np.sum(obj & (other == j))), -j) for j in other_ids]
                best = max(ov) if ov else (0, 0)
                if best[0] > 0:
                    match = other == -best[1]
                    dice = 2 * best[0] / (obj.sum() + match.sum())
                    hd = brute_hd(obj, match)
                    if is_s:
                        tp += 2 * best[0] > match.sum()
                else:
                    dice = 0.0
                    hd = min((brute_hd(obj, other == j) for j in other_ids), default=diag)
                rows.append((obj.sum(), dice, hd))
        n_gt += len([k for k in np.unique(g) if k])
    n_s = len(s_rows)
    fp = n_s - tp
    fn = n_gt - tp

    def half(rows, col):
        tot = sum(r[0] for r in rows)
        return sum(r[0] * r[col] for r in rows) / tot

    return {
        "f1": 2 * tp / (2 * tp + fp + fn),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "dice": 0.5 * (half(s_rows, 1) + half(g_rows, 1)),
        "hausdorff": 0.5 * (half(s_rows, 2) + half(g_rows, 2)),
    }


SHAPE = (16, 30)


def test_perfect_match_with_permuted_labels():
    gt = rect(SHAPE, 1, 9, 1, 9, 1)
    rect(SHAPE, 3, 12, 15, 25, 2, out=gt)
    pred = np.where(gt == 1, 7, np.where(gt == 2, 3, 0))
    m = glas_metrics([pred], [gt])
    assert (m["tp"], m["fp"], m["fn"]) == (2, 0, 0)
    assert m["f1"] == 1.0 and m["precision"] == 1.0 and m["recall"] == 1.0
    assert m["dice"] == pytest.approx(1.0)
    assert m["hausdorff"] == 0.0


def test_split_gland_one_tp_one_fp():
    gt = rect(SHAPE, 0, 10, 0, 10)  # 100 px
    pred = rect(SHAPE, 0, 10, 0, 6, 1)  # 60 px: 60/100 > 0.5 -> TP
    rect(SHAPE, 0, 10, 6, 10, 2, out=pred)  # 40 px: 40/100 -> FP
    m = glas_metrics([pred], [gt])
    assert (m["tp"], m["fp"], m["fn"]) == (1, 1, 0)
    assert m["f1"] == pytest.approx(2 / 3)
    d1, d2 = 2 * 60 / (60 + 100), 2 * 40 / (40 + 100)
    # S side weights 60/100 and 40/100; G side: G matched to the 60-px piece, weight 1.
    assert m["dice"] == pytest.approx(0.5 * (0.6 * d1 + 0.4 * d2 + 1.0 * d1))
    # H(S1, G): G's column 9 is 4 from S1's column 5; H(S2, G): G's column 0 is 6 from column 6.
    assert m["hausdorff"] == pytest.approx(0.5 * (0.6 * 4 + 0.4 * 6 + 1.0 * 4))


def test_exactly_half_is_not_a_true_positive():
    gt = rect(SHAPE, 0, 10, 0, 10)
    pred = rect(SHAPE, 0, 10, 0, 5, 1)
    rect(SHAPE, 0, 10, 5, 10, 2, out=pred)  # two halves of 50 px: 50/100 is not > 0.5
    m = object_f1([pred], [gt])
    assert (m["tp"], m["fp"], m["fn"], m["f1"]) == (0, 2, 1, 0.0)


def test_overlap_tie_goes_to_the_smallest_label():
    # The pred overlaps G1 (100 px) and G2 (60 px) by 50 px each. Matlab's mode picks the smaller
    # label, G1: 50/100 is not > 0.5, so FP. Relabelling the GTs swaps the outcome to TP (50/60).
    gt = rect(SHAPE, 0, 10, 0, 10, 1)
    rect(SHAPE, 0, 10, 12, 18, 2, out=gt)
    pred = rect(SHAPE, 0, 10, 5, 10)
    pred[0:10, 12:17] = 1
    assert object_f1([pred], [gt])["tp"] == 0
    swapped = np.where(gt == 1, 2, np.where(gt == 2, 1, 0))
    assert object_f1([pred], [swapped])["tp"] == 1


def test_merged_gland_one_tp_one_fn():
    gt = rect(SHAPE, 0, 10, 0, 10, 1)
    rect(SHAPE, 0, 10, 12, 22, 2, out=gt)
    pred = rect(SHAPE, 0, 10, 0, 22)  # 220 px over both
    m = glas_metrics([pred], [gt])
    # The pred's max overlap ties (100 and 100): the smallest label (G1) wins, 100/100 > 0.5.
    assert (m["tp"], m["fp"], m["fn"]) == (1, 0, 1)
    assert m["f1"] == pytest.approx(2 / 3)
    d = 2 * 100 / (220 + 100)
    assert m["dice"] == pytest.approx(0.5 * (d + (0.5 * d + 0.5 * d)))
    # Pred column 21 is 12 from G1's column 9; pred column 0 is 12 from G2's column 12.
    assert m["hausdorff"] == pytest.approx(12.0)


def test_missed_gland_matched_at_min_hausdorff():
    gt = rect(SHAPE, 0, 10, 0, 10, 1)  # 100 px
    rect(SHAPE, 0, 5, 20, 25, 2, out=gt)  # 25 px, missed
    pred = (gt == 1).astype(np.int32)
    m = glas_metrics([pred], [gt])
    assert (m["tp"], m["fp"], m["fn"]) == (1, 0, 1)
    assert m["precision"] == 1.0 and m["recall"] == 0.5
    assert m["dice"] == pytest.approx(0.5 * (1.0 + 100 / 125))
    # The missed G2 goes to the only pred; farthest pair: pred corner (9, 0) to G2 corner (4, 20).
    h2 = math.hypot(9 - 4, 20 - 0)
    assert m["hausdorff"] == pytest.approx(0.5 * (0.0 + 25 / 125 * h2))


def test_empty_prediction_and_empty_gt_conventions():
    gt = rect(SHAPE, 0, 10, 0, 10)
    empty = np.zeros(SHAPE, np.int32)
    diag = math.hypot(SHAPE[0] - 1, SHAPE[1] - 1)
    m = glas_metrics([empty], [gt])
    assert (m["tp"], m["fp"], m["fn"], m["f1"]) == (0, 0, 1, 0.0)
    assert m["precision"] == 0.0 and m["recall"] == 0.0
    assert m["dice"] == 0.0 and m["hausdorff"] == pytest.approx(diag)
    m = glas_metrics([gt], [empty])
    assert (m["tp"], m["fp"], m["fn"], m["f1"]) == (0, 1, 0, 0.0)
    assert m["dice"] == 0.0 and m["hausdorff"] == pytest.approx(diag)
    m = glas_metrics([empty], [empty])
    assert (m["f1"], m["dice"], m["hausdorff"]) == (1.0, 1.0, 0.0)
    assert m["precision"] == 1.0 and m["recall"] == 1.0


def test_pooled_weights_across_two_images():
    a = rect(SHAPE, 0, 10, 0, 10)  # image A: a perfect 100-px match
    gt_b = rect(SHAPE, 0, 10, 0, 10)
    pred_b = rect(SHAPE, 0, 10, 0, 6)  # image B: 60 px of a 100-px gland
    m = glas_metrics([a, pred_b], [a, gt_b])
    d = 2 * 60 / 160
    pooled = 0.5 * ((100 * 1 + 60 * d) / 160 + (100 * 1 + 100 * d) / 200)
    assert m["dice"] == pytest.approx(pooled)
    per_image_mean = 0.5 * (1.0 + d)
    assert abs(pooled - per_image_mean) > 1e-3  # the case does tell pooling from averaging
    assert m["hausdorff"] == pytest.approx(0.5 * (60 * 4 / 160 + 100 * 4 / 200))
    assert (m["tp"], m["fp"], m["fn"], m["n_images"]) == (2, 0, 0, 2)
    # An empty-GT image in the pool: its false positive gets that image's diagonal.
    speck = rect((5, 7), 1, 3, 1, 3)
    m2 = glas_metrics([a, speck], [a, np.zeros((5, 7), np.int32)])
    assert m2["hausdorff"] == pytest.approx(0.5 * (4 * math.hypot(4, 6) / 104 + 0.0))
    assert (m2["tp"], m2["fp"], m2["fn"]) == (1, 1, 0)


@pytest.mark.parametrize("dy,dx", [(0, 3), (2, 0), (3, 4), (1, 7), (0, 14)])
def test_hausdorff_of_translated_squares_is_the_offset(dy, dx):
    # Two a x a squares offset by (dy, dx): the far corners are hypot(dy, dx) apart and nothing is
    # farther. dx = 14 > a: no overlap, so the object-level match goes through the min-distance rule.
    a = np.zeros((24, 32), np.int32)
    b = np.zeros_like(a)
    a[2:10, 2:10] = 1
    b[2 + dy : 10 + dy, 2 + dx : 10 + dx] = 1
    assert hausdorff_distance(a, b) == pytest.approx(math.hypot(dy, dx))
    assert object_hausdorff([b], [a]) == pytest.approx(math.hypot(dy, dx))


def test_hausdorff_distance_matches_brute_force_and_edge_cases():
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:20, :20]
    ring = ((yy - 10) ** 2 + (xx - 10) ** 2 <= 64) & ((yy - 10) ** 2 + (xx - 10) ** 2 > 16)
    hole = (yy - 10) ** 2 + (xx - 10) ** 2 <= 4  # farthest point of the hole is its interior
    assert hausdorff_distance(ring, hole) == pytest.approx(brute_hd(ring, hole))
    for _ in range(5):
        a, b = rng.random((12, 15)) > 0.8, rng.random((12, 15)) > 0.9
        assert hausdorff_distance(a, b) == pytest.approx(brute_hd(a, b))
    z = np.zeros((4, 4), bool)
    assert hausdorff_distance(z, z) == 0.0 and hausdorff_distance(z, ring[:4, :4] | True) == math.inf


def test_random_instances_match_naive_oracle():
    rng = np.random.default_rng(0)
    preds, gts = [], []
    for _ in range(4):
        g = ndimage.label(ndimage.binary_opening(rng.random((22, 26)) > 0.45))[0]
        p = ndimage.label(ndimage.binary_opening(rng.random((22, 26)) > 0.45))[0]
        preds.append(p * 3)  # non-contiguous labels must not matter
        gts.append(g)
    want = naive_glas(preds, gts)
    got = glas_metrics(preds, gts)
    for k in ("tp", "fp", "fn"):
        assert got[k] == want[k]
    for k in ("f1", "dice", "hausdorff"):
        assert got[k] == pytest.approx(want[k]), k
    assert object_f1(preds, gts)["f1"] == pytest.approx(want["f1"])
    assert object_dice(preds, gts) == pytest.approx(want["dice"])


def test_huge_label_values_give_the_same_result():
    gt = rect(SHAPE, 0, 10, 0, 10, 1)
    pred = rect(SHAPE, 0, 10, 0, 6, 1)
    rect(SHAPE, 0, 10, 6, 10, 2, out=pred)
    big = np.where(pred == 2, 10**9, pred).astype(np.int64)  # exercises the np.unique path
    assert glas_metrics([big], [gt]) == glas_metrics([pred], [gt])


def test_stack_input_and_single_image():
    gt = rect(SHAPE, 0, 10, 0, 10)
    assert glas_metrics(gt, gt)["f1"] == 1.0
    assert glas_metrics(np.stack([gt, gt]), np.stack([gt, gt]))["n_images"] == 2


@pytest.mark.parametrize(
    "preds,gts,msg",
    [
        ([np.zeros((4, 4), int)], [], "1 predictions but 0"),
        ([np.zeros((4, 4), int)], [np.zeros((4, 5), int)], "shape"),
        ([np.zeros((4, 4), float)], [np.zeros((4, 4), int)], "integer dtype"),
        ([np.zeros((4, 4), bool)], [np.zeros((4, 4), int)], "boolean mask"),
        ([np.full((4, 4), -1)], [np.zeros((4, 4), int)], "negative"),
        ([np.zeros(4, int)], [np.zeros(4, int)], "2D"),
    ],
)
def test_bad_input_raises_value_error(preds, gts, msg):
    with pytest.raises(ValueError, match=msg):
        glas_metrics(preds, gts)
