"""Blob-like or thin: the elongation A / (2 r)^2 behind evaluate.metrics: auto."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.draw import disk, line

from seglearn.metrics.shape import THIN_ELONGATION, elongations, median_elongation, metrics_kind


def test_rectangle_elongation_closed_form():
    """A w x l bar (w odd): its centre row is (w + 1) / 2 pixels from the nearest background pixel,
    so A / (2 r)^2 = l w / (w + 1)^2: about the aspect ratio l / w."""
    for w, l in ((3, 40), (5, 21), (9, 9)):
        m = np.zeros((w + 6, l + 6), np.int32)
        m[3:3 + w, 3:3 + l] = 1
        el, area = elongations(m)
        assert area.tolist() == [l * w]
        assert el[0] == pytest.approx(l * w / (w + 1) ** 2)


def test_disc_is_near_pi_over_4():
    m = np.zeros((80, 80), np.int32)
    m[disk((40, 40), 30)] = 1
    (el,), _ = elongations(m)
    assert el == pytest.approx(np.pi / 4, rel=0.05)


def test_area_weighted_median_hand_computed():
    """Instances (elongation, area): bar 3x40 (40*3/16 = 7.5, 120), bar 5x21 (105/36, 105) and
    a 9x9 square (81/100, 81): total area 306, half 153; sorted by elongation the cumulative areas
    are 81, 186, 306, so the median pixel lies in the 5x21 bar."""
    m = np.zeros((60, 60), np.int32)
    m[2:5, 2:42] = 1
    m[10:15, 2:23] = 2
    m[30:39, 30:39] = 3
    assert median_elongation([m]) == pytest.approx(105 / 36)
    # the same instances split over two masks give the same median
    a, b = m.copy(), m.copy()
    a[a == 3] = 0
    b[b != 3] = 0
    assert median_elongation([a, b]) == pytest.approx(105 / 36)
    assert median_elongation([np.zeros((5, 5), np.int32)]) == 0.0


def _tree(n=128, width=2):
    m = np.zeros((n, n), bool)

    def branch(y, x, ang, length, depth):
        if depth > 4:
            return
        y2 = int(np.clip(y + length * np.sin(ang), 0, n - 1))
        x2 = int(np.clip(x + length * np.cos(ang), 0, n - 1))
        rr, cc = line(y, x, y2, x2)
        m[rr, cc] = True
        branch(y2, x2, ang + 0.5, length * 0.7, depth + 1)
        branch(y2, x2, ang - 0.5, length * 0.7, depth + 1)

    branch(n - 1, n // 2, -np.pi / 2, n * 0.4, 0)
    return ndi.binary_dilation(m, iterations=width).astype(np.int32)


def test_auto_picks_pixels_for_vessels_and_objects_for_glands(tmp_path):
    from seglearn.data import make_synthetic, read_mask

    trees = [_tree(width=w) for w in (1, 2, 3)]
    # small fragments beside the tree do not outvote it (area-weighted)
    for k in range(10):
        trees[0][5 * k + 2: 5 * k + 4, 124:126] = k + 2
    assert trees[0].max() == 11 and np.median(elongations(trees[0])[0]) < 2  # most are blobs
    kind, med = metrics_kind("auto", trees)
    assert kind == "pixels" and med > THIN_ELONGATION
    glands = [read_mask(s.mask_path) for s in
              make_synthetic(6, tmp_path, size=(96, 96), seed=1)]
    kind, med = metrics_kind("auto", glands)
    assert kind == "objects" and med < 2
    assert metrics_kind("pixels", glands) == ("pixels", None)
    assert metrics_kind("objects", trees) == ("objects", None)
    with pytest.raises(ValueError, match="evaluate.metrics must be one of auto, objects, pixels"):
        metrics_kind("blobs", glands)
