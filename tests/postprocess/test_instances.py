"""instances_from_probs on small synthetic probability maps with known instance structure."""

import numpy as np
import pytest
from scipy import ndimage

from seglearn.metrics import glas_metrics
from seglearn.postprocess import PostprocessParams, fill_holes, instances_from_probs, relabel, remove_small
from seglearn.data.transforms import contour_band as contour_targets

H, W = 32, 52
YY, XX = np.mgrid[:H, :W]


def disc(cy, cx, r):
    return (YY - cy) ** 2 + (XX - cx) ** 2 <= r * r


def touching_discs():
    """Two r=9 discs whose centres are 17 apart: they overlap in a thin lens; GT splits at x = 24.5."""
    a, b = disc(16, 16, 9), disc(16, 33, 9)
    gt = np.zeros((H, W), np.int32)
    gt[a & (XX <= 24)] = 1
    gt[b & (XX >= 25)] = 2
    return gt


def probs(mask, hi=0.9, lo=0.05):
    return np.where(mask, hi, lo).astype(np.float32)


def test_touching_discs_split_by_contour_only_on_shared_border():
    gt = touching_discs()
    shared = (contour_targets(gt, width=2) > 0) & (np.abs(XX - 24.5) < 4)  # the touching border only
    fg, ct = probs(gt > 0), probs(shared)
    p = PostprocessParams(min_area=0, seed_min_area=5)
    for params in (p, PostprocessParams(**{**p.to_dict(), "watershed": False})):
        out = instances_from_probs(fg, ct, params)
        assert out.dtype == np.int32 and out.max() == 2
        m = glas_metrics([out], [gt])
        assert m["f1"] == 1.0 and m["dice"] > 0.9
        # Everything foreground is labelled again after regrowth.
        assert np.array_equal(out > 0, gt > 0)
    assert instances_from_probs(fg, None, p).max() == 1  # no contour: one merged object
    assert instances_from_probs(fg, ct, PostprocessParams(use_contour=False, min_area=0)).max() == 1


def test_distance_split_without_contour():
    gt = touching_discs()
    out = instances_from_probs(probs(gt > 0), None, PostprocessParams(split_touching=True, min_area=0))
    assert out.max() == 2 and glas_metrics([out], [gt])["f1"] == 1.0


def test_small_object_removal_and_thresholds():
    mask = disc(12, 12, 6)
    fg = probs(mask)
    fg[25:28, 40:43] = 0.8  # a 9-px speck
    fg[2:6, 40:44] = 0.45  # below the 0.5 threshold
    assert instances_from_probs(fg, None, PostprocessParams(min_area=0)).max() == 2
    out = instances_from_probs(fg, None, PostprocessParams(min_area=10))
    assert out.max() == 1 and np.array_equal(out > 0, mask)
    assert instances_from_probs(fg, None, PostprocessParams(min_area=0, fg_threshold=0.4)).max() == 3


def test_hole_filling_keeps_nested_objects():
    ring = disc(16, 20, 10) & ~disc(16, 20, 6)
    inner = disc(16, 20, 2)  # a separate object inside the hole
    fg = probs(ring | inner)
    filled = instances_from_probs(fg, None, PostprocessParams(min_area=0))
    assert filled.max() == 2
    outer = filled[16, 20 + 8]  # a ring pixel
    assert np.array_equal(filled == outer, disc(16, 20, 10) & ~inner)
    assert np.array_equal(filled[inner], np.full(inner.sum(), filled[16, 20]))
    unfilled = instances_from_probs(fg, None, PostprocessParams(min_area=0, fill_holes=False))
    assert np.array_equal(unfilled > 0, ring | inner)


def test_seedless_component_is_kept_whole():
    fg = probs(disc(16, 16, 8) | ((YY >= 3) & (YY < 7) & (XX >= 40) & (XX < 46)))
    ct = probs((YY >= 2) & (YY < 8) & (XX >= 39) & (XX < 47))  # the small blob is all contour
    out = instances_from_probs(fg, ct, PostprocessParams(min_area=0))
    assert out.max() == 2 and np.all(out[3:7, 40:46] > 0)


def test_label_helpers_against_numpy():
    lab = np.array([[0, 4, 4, 0], [9, 9, 9, 0], [0, 0, 7, 0]])
    assert np.array_equal(relabel(lab), np.array([[0, 1, 1, 0], [3, 3, 3, 0], [0, 0, 2, 0]]))
    areas = np.bincount(lab.ravel())
    kept = remove_small(lab, 2)
    assert set(np.unique(kept)) == {0} | {int(k) for k in np.unique(lab) if k and areas[k] >= 2} == {0, 4, 9}
    assert np.array_equal(kept[kept > 0], lab[kept > 0])
    ring = np.zeros((5, 5), int)
    ring[0:3, 0:3] = 3
    ring[1, 1] = 0
    assert np.array_equal(fill_holes(ring) == 3, ndimage.binary_fill_holes(ring == 3))


@pytest.mark.parametrize(
    "kwargs,msg",
    [
        ({"fg_threshold": 1.5}, "fg_threshold"),
        ({"contour_threshold": float("nan")}, "contour_threshold"),
        ({"min_area": -1}, "min_area"),
        ({"seed_min_area": 2.5}, "seed_min_area"),
        ({"watershed": "yes"}, "watershed"),
        ({"split_h": 0}, "split_h"),
    ],
)
def test_bad_params(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        PostprocessParams(**kwargs)


def test_bad_maps_and_roundtrip():
    with pytest.raises(ValueError, match="shape"):
        instances_from_probs(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="float"):
        instances_from_probs(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="NaN"):
        instances_from_probs(np.full((4, 4), np.nan))
    with pytest.raises(ValueError, match="unknown key 'postprocess.fg_thresh'"):
        PostprocessParams.from_dict({"fg_thresh": 0.5})
    p = PostprocessParams(fg_threshold=0.3, min_area=7)
    assert PostprocessParams.from_dict(p.to_dict()) == p


def test_one_parameter_type_with_the_configs_defaults():
    """PostprocessParams is the config's section class: one set of defaults (min_area 30, not the
    20 the twin had), one check of each value, the same message whether built or loaded."""
    from seglearn.config import ConfigError, PostprocessConfig, load_config

    assert PostprocessParams is PostprocessConfig
    assert load_config().postprocess == PostprocessParams() and PostprocessParams().min_area == 30
    with pytest.raises(ConfigError) as built:
        PostprocessParams(min_area=-1)
    with pytest.raises(ConfigError) as loaded:
        load_config(None, ["postprocess.min_area=-1"])
    assert str(built.value).split(": ", 1)[1] == str(loaded.value).split(": ", 1)[1] \
        == "postprocess.min_area must be at least 0, not -1"


def test_numpy_scalars_are_taken_as_python_values():
    """Array code hands over numpy scalars: they are checked (and stored) as the Python values."""
    p = PostprocessParams(min_area=np.int64(4), fg_threshold=np.float32(0.25), fill_holes=np.bool_(False))
    assert (type(p.min_area), type(p.fg_threshold), type(p.fill_holes)) == (int, float, bool)
    assert (p.min_area, p.fg_threshold, p.fill_holes) == (4, 0.25, False)
    fg = np.zeros((12, 12)); fg[1:4, 1:4] = 0.9; fg[6:11, 6:11] = 0.9   # 9 px and 25 px
    assert instances_from_probs(fg, None, p).max() == 2
    assert instances_from_probs(fg, None, PostprocessParams(min_area=np.int64(10))).max() == 1


def _fill_holes_oracle(labels):
    """The definition, one object at a time with scipy's binary_fill_holes (the former code)."""
    out = np.array(labels, copy=True)
    for k, box in enumerate(ndimage.find_objects(out), start=1):
        if box is None:
            continue
        crop = out[box]
        holes = ndimage.binary_fill_holes(crop == k) & (crop == 0)
        crop[holes] = k
    return out


def _rings(rng, shape=(48, 56), n=6):
    """Random label images with rings (holes), nested rings, rings holding other objects,
    touching rings and specks: the cases the fast path must get right."""
    lab = np.zeros(shape, np.int32)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    k = 0
    for _ in range(n):
        cy, cx = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        r_out = rng.integers(3, 14)
        r_in = rng.integers(0, r_out)
        d = np.hypot(yy - cy, xx - cx)
        k += 1
        lab[(d < r_out) & (d >= r_in)] = k
        if rng.random() < 0.5 and r_in > 2:  # an object nested in the ring's hole
            k += 1
            lab[d < r_in / 2] = k
    specks = rng.random(shape) < 0.02
    lab[specks] = rng.integers(0, k + 2, size=int(specks.sum()))
    return lab


def test_fill_holes_equals_binary_fill_holes_per_object():
    rng = np.random.default_rng(0)
    filled_any = 0
    for _ in range(300):
        lab = _rings(rng)
        got = fill_holes(lab)
        want = _fill_holes_oracle(lab)
        np.testing.assert_array_equal(got, want)
        filled_any += int((got != lab).any())
    assert filled_any > 100  # the cases do have holes to fill


def test_fill_holes_nested_rings_take_the_smallest_label():
    lab = np.zeros((15, 15), np.int32)
    lab[1:14, 1:14] = 2          # outer ring, label 2
    lab[2:13, 2:13] = 0
    lab[4:11, 4:11] = 1          # inner ring, label 1
    lab[5:10, 5:10] = 0
    got = fill_holes(lab)
    assert (got[5:10, 5:10] == 1).all()      # inside both rings: the smaller label
    assert (got[2:4, 2:13] == 2).all()       # between the rings: only the outer encloses it
    np.testing.assert_array_equal(got, _fill_holes_oracle(lab))
    swapped = np.where(lab == 1, 2, np.where(lab == 2, 1, 0)).astype(np.int32)
    assert (fill_holes(swapped)[5:10, 5:10] == 1).all()  # the outer ring is 1 now and wins
