"""Integer post-processing equals the probability post-processing it replaces."""

from __future__ import annotations

import numpy as np

from seglearn.postprocess import PostprocessParams, instances_from_probs
from seglearn.runtime.postprocess_int import labels_from_margins, margins


def _maps(seed: int):
    """Head accumulators with two blobs and a contour ridge, and their logits A acc + B."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:40, :60]
    blob = np.maximum(12 - np.hypot(yy - 20, xx - 18), 11 - np.hypot(yy - 20, xx - 40))
    ridge = 6 - np.abs(xx - 29) - 0.3 * np.abs(yy - 20)
    acc = np.stack([blob * 40, -ridge * 40], -1).round().astype(np.int32)
    acc += rng.integers(-3, 4, acc.shape).astype(np.int32)
    return acc


def test_labels_match_probability_route():
    acc = _maps(0)
    A, B = np.array([0.05, -0.04]), np.array([-0.1, 0.3])
    logits = A * acc + B
    probs = 1 / (1 + np.exp(-logits))
    p = PostprocessParams(fg_threshold=0.6, contour_threshold=0.4, min_area=5, seed_min_area=3)
    # integer thresholds by brute force over the accumulator range (the export computes them by bisection)
    dec = {}
    for name, c, pt in (("fg", 0, 0.6), ("contour", 1, 0.4)):
        a = np.arange(-2000, 2001)
        on = 1 / (1 + np.exp(-(A[c] * a + B[c]))) > pt
        if A[c] > 0:
            dec[name] = {"channel": c, "t": int(a[on].min()) - 1, "direction": 1}
        else:
            dec[name] = {"channel": c, "t": int(a[on].max()) + 1, "direction": -1}
    m = margins(acc, dec)
    np.testing.assert_array_equal(m["fg"] > 0, probs[..., 0] > 0.6)
    want = instances_from_probs(probs[..., 0], probs[..., 1], p)
    got = labels_from_margins(m["fg"], m["contour"], p.to_dict())
    assert want.max() >= 2  # the ridge splits the blobs: the contour route is exercised
    np.testing.assert_array_equal(got, want)


def test_margins_may_carry_any_positive_factor():
    """The runtime interpolates margins exactly times D = (2h)(2w); labels must not change."""
    acc = _maps(1)
    dec = {"fg": {"channel": 0, "t": 100, "direction": 1},
           "contour": {"channel": 1, "t": -60, "direction": -1}}
    params = {"min_area": 5, "seed_min_area": 3}
    m = margins(acc, dec)
    want = labels_from_margins(m["fg"], m["contour"], params)
    assert want.max() >= 2
    np.testing.assert_array_equal(labels_from_margins(m["fg"] * 9600, m["contour"] * 9600, params), want)
