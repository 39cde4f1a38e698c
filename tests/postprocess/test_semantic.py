"""postprocess.mode semantic: the foreground's components and min_area only, against scipy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from seglearn.config import ConfigError
from seglearn.postprocess import PostprocessConfig, instances_from_probs


def _oracle(fg: np.ndarray, threshold: float, min_area: int) -> np.ndarray:
    """8-connected components of fg > threshold, those under min_area px removed, renumbered in
    scan order (scipy.ndimage.label numbers components in scan order too)."""
    lab, n = ndi.label(fg > threshold, structure=np.ones((3, 3), bool))
    areas = ndi.sum_labels(np.ones_like(lab), lab, index=np.arange(1, n + 1))
    keep = np.flatnonzero(areas >= min_area) + 1
    out = np.zeros_like(lab)
    for new, old in enumerate(keep, start=1):
        out[lab == old] = new
    return out.astype(np.int32)


def _rings_and_specks(seed: int):
    """Two touching rings (holes inside), a diagonal 1-px line and random specks; a contour map
    with a ridge across the rings' shared border."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:48, :64]
    r1 = np.hypot(yy - 20, xx - 18)
    r2 = np.hypot(yy - 20, xx - 35)  # overlaps the first: touching rings
    rings = ((r1 > 5) & (r1 < 10)) | ((r2 > 5) & (r2 < 10))
    line = (yy == xx - 10) & (yy > 32)  # 8-connected only
    fg = np.where(rings | line, rng.uniform(0.6, 1.0, yy.shape), rng.uniform(0, 0.45, yy.shape))
    specks = rng.random(yy.shape) < 0.01
    fg[specks] = 0.9
    contour = np.where(np.abs(xx - 26.5) < 2, 0.9, 0.1)
    return fg, contour


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("min_area", [0, 3, 40])
def test_semantic_equals_components_oracle(seed, min_area):
    fg, contour = _rings_and_specks(seed)
    # every instances-only setting on: the semantic mode must ignore them all
    p = PostprocessConfig(mode="semantic", fg_threshold=0.5, min_area=min_area, fill_holes=True,
                          split_touching=True, use_contour=True, seed_min_area=50)
    got = instances_from_probs(fg, contour, p)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, _oracle(fg, 0.5, min_area))
    np.testing.assert_array_equal(instances_from_probs(fg, None, p), got)  # contour map ignored


def test_semantic_keeps_holes_and_does_not_split_where_instances_do():
    fg, contour = _rings_and_specks(0)
    semantic = instances_from_probs(fg, contour, PostprocessConfig(mode="semantic", min_area=3))
    inst = instances_from_probs(fg, contour, PostprocessConfig(min_area=3))  # the default mode
    assert PostprocessConfig().mode == "instances"
    yy, xx = np.mgrid[:48, :64]
    hole = np.hypot(yy - 20, xx - 18) < 4
    assert (semantic[hole] == 0).all() and (inst[hole] > 0).all()  # instances fill the ring
    # the contour ridge cuts the touching rings in two in the instances mode only
    assert len(np.unique(semantic[(yy == 20) & (xx > 10) & (xx < 46)])) < \
        len(np.unique(inst[(yy == 20) & (xx > 10) & (xx < 46)]))


def test_mode_field_loads_old_dicts_and_refuses_bad_values():
    old = {"fg_threshold": 0.4, "min_area": 5, "fill_holes": False}  # written before the field
    assert PostprocessConfig.from_dict(old).mode == "instances"
    assert PostprocessConfig.from_dict({**old, "mode": "semantic"}).mode == "semantic"
    with pytest.raises(ConfigError, match="postprocess.mode must be one of instances, semantic"):
        PostprocessConfig.from_dict({"mode": "foreground"})
    with pytest.raises(ConfigError, match="postprocess.mode"):
        PostprocessConfig(mode="Semantic")
