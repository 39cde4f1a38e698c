"""``postprocess.flood`` (numba watershed, h-maxima) equals scikit-image, the oracle, pixel for pixel;
and so does the whole post-processing that uses it."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage.morphology import h_maxima as sk_h_maxima
from skimage.morphology import reconstruction as sk_reconstruction
from skimage.segmentation import watershed as sk_watershed

from seglearn.postprocess import PostprocessParams, instances, instances_from_probs
from seglearn.postprocess.flood import h_maxima, reconstruct_dilation, watershed


def _case(seed: int):
    """Small maps with many ties (few elevation levels): the heap's tie order decides there."""
    r = np.random.default_rng(seed)
    h, w = (int(v) for v in r.integers(1, 30, 2))
    elev = r.integers(0, int(r.integers(1, 6)), (h, w)).astype(np.float64) + (0.25 if seed % 2 else 0.0)
    mask = r.random((h, w)) < r.uniform(0.3, 1.0)
    markers = np.zeros((h, w), np.int32 if seed % 3 else np.int64)
    k = int(r.integers(0, 9))
    markers[r.integers(0, h, k), r.integers(0, w, k)] = r.integers(1, 5, k)
    return elev, markers, mask


@pytest.mark.parametrize("seed", range(0, 400, 7))
def test_watershed_equals_skimage(seed):
    elev, markers, mask = _case(seed)
    want = sk_watershed(elev, markers=markers, mask=mask)
    got = watershed(elev, markers, mask)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


def test_watershed_on_a_large_smooth_map_equals_skimage():
    r = np.random.default_rng(5)
    elev = ndimage.gaussian_filter(r.random((200, 180)), 3)
    mask = ndimage.gaussian_filter(r.random((200, 180)), 2) > 0.48
    markers = ndimage.label(r.random((200, 180)) < 0.002)[0]
    np.testing.assert_array_equal(watershed(elev, markers, mask), sk_watershed(elev, markers=markers, mask=mask))


def test_watershed_plateau_split_between_two_markers_by_hand():
    # a flat 1 x 6 strip, markers at both ends: the nearest marker wins each pixel (ties by age)
    got = watershed(np.zeros((1, 6)), np.array([[1, 0, 0, 0, 0, 2]]), np.ones((1, 6), bool))
    np.testing.assert_array_equal(got, [[1, 1, 1, 2, 2, 2]])
    # outside the mask stays 0, and a marker cut off by the mask floods nothing past it
    mask = np.array([[1, 1, 0, 1, 1, 1]], bool)
    np.testing.assert_array_equal(watershed(np.zeros((1, 6)), np.array([[1, 0, 0, 0, 0, 0]]), mask),
                                  [[1, 1, 0, 0, 0, 0]])


@pytest.mark.parametrize("seed", range(12))
def test_h_maxima_and_reconstruction_equal_skimage(seed):
    r = np.random.default_rng(seed)
    fg = ndimage.gaussian_filter(r.random((40, 50)), 2) > 0.47
    dist = ndimage.distance_transform_edt(fg)
    for h in (0.5, 1, 2.0, 3.5, 1e9):
        np.testing.assert_array_equal(h_maxima(dist, h), sk_h_maxima(dist, h))
    seed_img = dist - 1.5
    np.testing.assert_array_equal(reconstruct_dilation(seed_img, dist),
                                  sk_reconstruction(seed_img, dist, method="dilation"))


def test_h_maxima_by_hand():
    # two peaks of height 3 and 1 above a floor of 0: h = 2 keeps only the first
    img = np.array([[0, 3, 0, 0, 1, 0]], np.float64)
    np.testing.assert_array_equal(h_maxima(img, 2.0), [[0, 1, 0, 0, 0, 0]])
    np.testing.assert_array_equal(h_maxima(img, 1.0), [[0, 1, 0, 0, 1, 0]])
    with pytest.raises(ValueError, match="seed <= mask"):
        reconstruct_dilation(img + 1, img)


def _skimage_instances(monkeypatch, fg, contour, p):
    """The post-processing as it was, on scikit-image (the oracle)."""
    with monkeypatch.context() as m:
        m.setattr(instances, "_watershed", lambda e, markers, mask: sk_watershed(e, markers=markers, mask=mask))
        m.setattr(instances, "h_maxima", sk_h_maxima)
        return instances_from_probs(fg, contour, p)


@pytest.mark.parametrize("seed", range(6))
def test_instances_from_probs_equal_the_skimage_route(monkeypatch, seed):
    r = np.random.default_rng(seed)
    fg = ndimage.gaussian_filter(r.random((64, 72)), 3)
    fg = (fg - fg.min()) / (np.ptp(fg) + 1e-12)
    contour = ndimage.gaussian_filter(r.random((64, 72)), 1.5)
    contour = np.round((contour - contour.min()) / (np.ptp(contour) + 1e-12), 2)  # ties on purpose
    variants = [PostprocessParams(seed_min_area=2, min_area=5),
                PostprocessParams(use_contour=False, split_touching=True, split_h=1.0, min_area=3),
                PostprocessParams(use_contour=False, split_touching=True, split_h=0.5, watershed=True)]
    for p in variants:
        want = _skimage_instances(monkeypatch, fg, contour, p)
        got = instances_from_probs(fg, contour, p)
        np.testing.assert_array_equal(got, want)
        assert p.use_contour is False or want.max() > 1, "the case should split some objects"


@pytest.mark.parametrize("seed", range(40))
def test_enclosed_equals_a_labelling_and_a_border_lookup(seed):
    """flood.enclosed: the mask's 4-connected components that do not touch the border, as
    scipy's labelling finds them (1-pixel and 1-row arrays included)."""
    from seglearn.postprocess.flood import enclosed

    r = np.random.default_rng(seed)
    h, w = (int(v) for v in r.integers(1, 40, 2))
    mask = r.random((h, w)) < r.uniform(0.2, 0.9)
    lab, n = ndimage.label(mask, structure=ndimage.generate_binary_structure(2, 1))
    border = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
    want = mask & ~np.isin(lab, border)
    np.testing.assert_array_equal(enclosed(mask), want)
    assert enclosed(np.zeros((0, 3), bool)).shape == (0, 3)

