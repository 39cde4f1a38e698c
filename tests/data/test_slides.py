"""Whole-slide tiles: tissue filtering on a small 3-level pyramidal TIFF made here with tifffile,
region reads against the pixels written, and the errors for bad slides and options."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tiffslide")

from seglearn.data import DataError  # noqa: E402
from seglearn.data import slides as S  # noqa: E402

# 2048 x 1536 level 0, 512 px tiles: a 4 x 3 grid. Tissue (level-0 px, end exclusive):
#   tile (0, 0):       all of it                      -> fraction 1
#   tile (512, 512):   its left half, x 512..768       -> 256 * 512 / 512**2 = 0.5
#   tile (1536, 1024): x 1536..1664, y 1024..1280     -> 128 * 256 / 512**2 = 0.125
# Every edge is a multiple of 4, so the 4x level (the tissue mask) shows them exactly.
RECTS = [(0, 0, 512, 512), (512, 512, 768, 1024), (1536, 1024, 1664, 1280)]
FRACTION = {(0, 0): 1.0, (512, 512): 0.5, (1536, 1024): 0.125}


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    return S.write_synthetic_slide(tmp_path_factory.mktemp("slides") / "s1.tif", 2048, 1536,
                                   RECTS, levels=3, tile=256)


def pixels(level: int) -> np.ndarray:
    """The whole level as written (the oracle of the region reads)."""
    ds = 2 ** level
    return S._synthetic_tile(RECTS, 0, 0, ds, 2048 // ds)[: 1536 // ds]


def test_the_slide_is_a_three_level_pyramid(slide):
    s = S.open_slide(slide)
    assert s.level_dimensions == [(2048, 1536), (1024, 768), (512, 384)]
    assert s.level_downsamples == [1.0, 2.0, 4.0]


@pytest.mark.parametrize("threshold", [0.0, 0.1, 0.25, 0.5, 0.6, 1.0])
def test_kept_tiles_are_those_with_enough_tissue(slide, threshold):
    found = S.slide_tiles(slide, 512, 0, threshold)
    want = {xy: FRACTION.get(xy, 0.0) for xy in
            [(x, y) for y in range(0, 1536, 512) for x in range(0, 2048, 512)]}
    assert found.total == 12 and found.margin == (0, 0)
    got = {(t.x, t.y): t.tissue for t in found.kept}
    assert got == {xy: f for xy, f in want.items() if f >= threshold}
    assert all((t.level, t.downsample, t.size) == (0, 1.0, 512) for t in found.kept)


def test_tiles_of_level_1_are_addressed_in_level_0_pixels(slide):
    found = S.slide_tiles(slide, 256, 1, 0.25)  # 256 px of level 1 = 512 px of level 0
    assert [(t.x, t.y, t.level, t.downsample) for t in found.kept] == [(0, 0, 1, 2.0),
                                                                       (512, 512, 1, 2.0)]


def test_a_subsampled_mask_read_in_strips_finds_the_same_tiles(slide, monkeypatch):
    # The 512 x 384 low level at stride 2 (MASK_MAX 256), 40 rows a read: still the same tiles.
    monkeypatch.setattr(S, "MASK_MAX", 256)
    monkeypatch.setattr(S, "STRIP_ROWS", 40)
    mask, px, py = S.tissue_mask(S.open_slide(slide))
    assert mask.shape == (192, 256) and (px, py) == (8.0, 8.0)
    got = {(t.x, t.y): t.tissue for t in S.slide_tiles(slide, 512, 0, 0.1).kept}
    assert got == FRACTION


def test_margins_narrower_than_a_tile_are_reported(slide):
    found = S.slide_tiles(slide, 600, 0, 0.0)  # 3 x 2 tiles of 600 px, 248 / 336 px left over
    assert (found.total, found.margin) == (6, (2048 - 1800, 1536 - 1200))
    assert [(t.x, t.y) for t in found.kept][:4] == [(0, 0), (600, 0), (1200, 0), (0, 600)]


@pytest.mark.parametrize("level,x,y,size", [(0, 512, 512, 512), (1, 512, 512, 256),
                                             (2, 1024, 0, 128), (0, 1500, 1000, 300)])
def test_a_tile_read_is_the_region_written(slide, level, x, y, size):
    t = S.Tile(x, y, level, 2.0 ** level, size, 0.0)
    ds = 2 ** level
    want = pixels(level)[y // ds: y // ds + size, x // ds: x // ds + size]
    np.testing.assert_array_equal(S.read_tile(slide, t), want)


def test_fraction_in_boxes_against_a_direct_count():
    rng = np.random.default_rng(3)
    mask = rng.random((37, 53)) < 0.4
    px, py, side = 3.0, 5.0, 40.0  # mask pixel (i, j) has its centre at ((j+.5)3, (i+.5)5)
    x0 = rng.uniform(-10, 150, 30).round()
    y0 = rng.uniform(-10, 170, 30).round()
    got = S._fraction_in_boxes(mask, px, py, x0, y0, side)
    cx = (np.arange(53) + 0.5) * px
    cy = (np.arange(37) + 0.5) * py
    for k in range(30):
        sel = np.ix_((cy >= y0[k]) & (cy < y0[k] + side), (cx >= x0[k]) & (cx < x0[k] + side))
        if mask[sel].size:
            assert got[k] == pytest.approx(mask[sel].mean())


def test_a_box_smaller_than_a_mask_pixel_takes_the_pixel_under_it():
    mask = np.array([[0, 1], [1, 0]], dtype=bool)  # 10 level-0 px per mask pixel
    got = S._fraction_in_boxes(mask, 10.0, 10.0, np.array([11.0, 1.0]), np.array([1.0, 1.0]), 2.0)
    assert got.tolist() == [1.0, 0.0]


def test_a_blank_slide_has_no_tissue(tmp_path):
    blank = S.write_synthetic_slide(tmp_path / "blank.tif", 1024, 1024, [], levels=2)
    found = S.slide_tiles(blank, 256, 0, 0.0001)
    assert found.total == 16 and found.kept == []


def test_a_file_that_is_not_a_slide_is_named(tmp_path):
    bad = tmp_path / "notes.svs"
    bad.write_text("not a slide")
    with pytest.raises(DataError, match=r"slide .*notes\.svs cannot be opened as a pyramidal"):
        S.slide_tiles(bad, 256)
    torn = tmp_path / "torn.tif"  # a TIFF header, then garbage: opens, has no readable level
    torn.write_bytes(b"II*\x00garbage")
    with pytest.raises(DataError, match=r"slide .*torn\.tif cannot be opened as a pyramidal"):
        S.slide_tiles(torn, 256)
    with pytest.raises(DataError, match=r"slide .*gone\.tif does not exist"):
        S.slide_tiles(tmp_path / "gone.tif", 256)


def test_a_tile_larger_than_the_slide_and_a_missing_level_are_named(slide):
    with pytest.raises(DataError, match=r"s1\.tif: --tile 2000 is larger than level 0 of the "
                                        r"slide \(2048x1536 px\)"):
        S.slide_tiles(slide, 2000, 0)
    with pytest.raises(DataError, match=r"larger than level 2 of the slide \(512x384"):
        S.slide_tiles(slide, 400, 2)
    with pytest.raises(DataError, match=r"s1\.tif has no level 3: it has 3 level\(s\) "
                                        r"\(0: 2048x1536, 1: 1024x768, 2: 512x384\)"):
        S.slide_tiles(slide, 256, 3)


def test_slide_folder_listing(tmp_path, slide):
    with pytest.raises(DataError, match="contains no slides"):
        S.list_slides(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        S.list_slides(tmp_path / "none")
    (tmp_path / "b.SVS").write_bytes(b"")
    (tmp_path / "a.tiff").write_bytes(b"")
    (tmp_path / "readme.txt").write_text("")
    assert [p.name for p in S.list_slides(tmp_path)] == ["a.tiff", "b.SVS"]
    assert S.slide_key(tmp_path / "b.SVS") == "b"
    assert S.tile_name(tmp_path / "a.tiff", S.Tile(512, 0, 1, 2.0, 256, 1.0)) == "a_L1_x512_y0"
