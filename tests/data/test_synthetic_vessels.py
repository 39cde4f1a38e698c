"""The thin-structure generator (synthetic.kind vessels) and the gland output it must not change."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from scipy import ndimage as ndi

from seglearn.data import instances_from_mask, make_synthetic, read_image, read_mask, synth_image, \
    synth_vessels
from seglearn.metrics.shape import metrics_kind

SIZE = (128, 128)


@pytest.fixture(scope="module")
def samples():
    return [synth_vessels(np.random.default_rng(i), SIZE) for i in range(6)]


def test_types_binary_mask_and_determinism(samples):
    for img, mask in samples:
        assert img.shape == SIZE + (3,) and img.dtype == np.uint8
        assert mask.shape == SIZE and mask.dtype == np.int32
        assert set(np.unique(mask)) == {0, 1}
        assert 0.02 < mask.mean() < 0.3  # a tree, neither empty nor a flood
    a = synth_vessels(np.random.default_rng(3), (64, 96))
    b = synth_vessels(np.random.default_rng(3), (64, 96))
    c = synth_vessels(np.random.default_rng(4), (64, 96))
    assert a[0].shape == (64, 96, 3) and a[1].shape == (64, 96)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])
    with pytest.raises(ValueError, match="at least 32x32"):
        synth_vessels(np.random.default_rng(0), (16, 64))


def test_vessels_are_thin_and_enclose_background(samples):
    """Widths 1-4 px (the largest inscribed disc, crossings aside, stays small), thin branches of
    1-2 px exist, and loops / near-parallel vessels enclose background that hole filling would
    wrongly take."""
    with_holes = 0
    for _, mask in samples:
        fg = mask > 0
        dist = ndi.distance_transform_edt(np.pad(fg, 1))[1:-1, 1:-1]
        assert dist.max() <= 4.0  # 4 px wide vessels (r = 2) crossing: r <= 4
        # thin pixels: foreground whose opening by a 3x3 square removes it (width < 3 px)
        thin = fg & ~ndi.binary_opening(fg, np.ones((3, 3), bool))
        assert thin.sum() > 0.1 * fg.sum()
        holes = ndi.binary_fill_holes(fg) & ~fg
        with_holes += holes.sum() >= 4
    assert with_holes >= len(samples) // 2


def test_masks_read_as_pixels_and_glands_as_objects(samples):
    """The vessel masks, read as a workspace reads them (8-connected components), are thin to
    metrics_kind("auto"), per image and pooled; the glands stay objects."""
    masks = [instances_from_mask(m) for _, m in samples]
    for m in masks:
        assert metrics_kind("auto", [m])[0] == "pixels"
    kind, med = metrics_kind("auto", masks)
    assert kind == "pixels" and med > 20
    glands = [synth_image(np.random.default_rng(i), SIZE)[1] for i in range(3)]
    assert metrics_kind("auto", glands)[0] == "objects"


def test_make_synthetic_vessels_writes_a_pool(tmp_path):
    recs = make_synthetic(4, tmp_path / "v", size=(64, 64), seed=2, kind="vessels")
    again = make_synthetic(4, tmp_path / "w", size=(64, 64), seed=2, kind="vessels")
    glands = make_synthetic(4, tmp_path / "g", size=(64, 64), seed=2)
    assert [r.split for r in recs].count("test") == 1
    for r, r2, g in zip(recs, again, glands):
        img, mask = read_image(r.image_path), read_mask(r.mask_path)
        assert img.shape == (64, 64, 3) and mask.shape == (64, 64)
        assert np.array_equal(img, read_image(r2.image_path))
        assert np.array_equal(mask, read_mask(r2.mask_path))
        assert not np.array_equal(mask > 0, read_mask(g.mask_path) > 0)
        # the file holds the binary mask of synth_vessels for that image's seed
        want = synth_vessels(np.random.default_rng(np.random.SeedSequence(2).spawn(4)[recs.index(r)]),
                             (64, 64))[1]
        assert np.array_equal(mask > 0, want > 0)
    with pytest.raises(ValueError, match="synthetic kind must be one of glands, vessels"):
        make_synthetic(2, tmp_path / "x", kind="fibres")


def _digest(records) -> str:
    h = hashlib.sha256()
    for r in records:
        h.update(np.ascontiguousarray(read_image(r.image_path)).tobytes())
        h.update(np.ascontiguousarray(read_mask(r.mask_path).astype(np.int32)).tobytes())
        h.update(r.split.encode())
        h.update(r.name.encode())
    return h.hexdigest()


def test_gland_output_is_unchanged(tmp_path):
    """The demo and the gland tests depend on the exact gland output: digests computed with the
    generator before the vessel kind was added (seglearn 2026-12, commit 2384de8)."""
    assert _digest(make_synthetic(5, tmp_path / "g", size=(64, 80), seed=7)) == \
        "4d76d7303c427f3e41515d90249eb4eb486554f15149fa3735c7ddcda64d499f"
    assert _digest(make_synthetic(5, tmp_path / "k", size=(64, 80), seed=7, kind="glands")) == \
        "4d76d7303c427f3e41515d90249eb4eb486554f15149fa3735c7ddcda64d499f"
    h = hashlib.sha256()
    for s in range(3):
        img, lab = synth_image(np.random.default_rng(s), (128, 128))
        h.update(img.tobytes())
        h.update(lab.astype(np.int32).tobytes())
    assert h.hexdigest() == "f636fbfe4872f43697f773dab8f6065386cc3a59a579c99266d3d4c8d937108d"
