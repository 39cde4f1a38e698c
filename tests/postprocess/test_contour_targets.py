"""contour_targets / fg_targets against a full-image distance-transform oracle and hand cases."""

import numpy as np
import pytest
from scipy import ndimage

from seglearn.train.targets import contour_targets, fg_targets


def oracle(lab, width):
    """Per instance, a full-image EDT to the nearest non-k pixel (no cropping)."""
    out = np.zeros(lab.shape, np.uint8)
    for k in np.unique(lab[lab > 0]):
        obj = lab == k
        out |= (obj & (ndimage.distance_transform_edt(obj) <= width)).astype(np.uint8)
    return out


def test_hand_case_square_and_touching_pair():
    lab = np.zeros((9, 12), np.int32)
    lab[1:8, 1:6] = 1  # 7 x 5
    lab[1:8, 6:11] = 2  # touches label 1 along a vertical border
    c = contour_targets(lab, width=1)
    # width 1: exactly the pixels 4-adjacent to a different label (the image border is not one).
    padded = np.pad(lab, 1, mode="edge")
    diff = np.zeros(lab.shape, bool)
    for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        diff |= padded[1 + dy : 10 + dy, 1 + dx : 13 + dx] != lab
    assert np.array_equal(c, ((lab > 0) & diff).astype(np.uint8))
    assert c[4, 5] == 1 and c[4, 6] == 1  # both sides of the shared border
    assert c.dtype == np.uint8


@pytest.mark.parametrize("width", [1, 2, 3, 5])
def test_matches_full_image_oracle_on_random_instances(width):
    rng = np.random.default_rng(width)
    lab = ndimage.label(ndimage.binary_opening(rng.random((30, 34)) > 0.4))[0]
    lab[0:6, 0:8] = lab.max() + 1  # an instance at the image corner
    assert np.array_equal(contour_targets(lab, width), oracle(lab, width))


def test_image_border_is_not_a_contour_and_fg():
    lab = np.ones((6, 6), np.int32)
    assert contour_targets(lab).sum() == 0
    lab[:, 3:] = 2
    assert np.array_equal(contour_targets(lab, 1).nonzero()[1], np.tile([2, 3], 6))
    assert np.array_equal(fg_targets(np.array([[0, 3], [1, 0]])), np.array([[0, 1], [1, 0]], np.uint8))


def test_bad_input():
    with pytest.raises(ValueError, match="width"):
        contour_targets(np.zeros((3, 3), int), width=0)
    with pytest.raises(ValueError, match="integer dtype"):
        contour_targets(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="2D"):
        fg_targets(np.zeros(3, int))
