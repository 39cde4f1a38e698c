"""Whole-slide pools end to end: `init --slides` on a 3-level pyramidal TIFF made here, slide
coordinates in the suggestion CSV and in the pre-annotation GeoJSON, and `label --geojson` of a
slide-wide GeoJSON mapped back onto the tiles it covers."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

pytest.importorskip("tiffslide")

from seglearn.data import slides as S  # noqa: E402
from seglearn.store import Workspace  # noqa: E402

# As tests/data/test_slides.py: 2048 x 1536, 512 px tiles; tissue fractions 1, 0.5 and 0.125.
RECTS = [(0, 0, 512, 512), (512, 512, 768, 1024), (1536, 1024, 1664, 1280)]


@pytest.fixture(scope="module")
def slides_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("slides")
    S.write_synthetic_slide(d / "s1.tif", 2048, 1536, RECTS, levels=3, tile=256)
    return d


def init(runner, cli, ws, slides_dir, *opts):
    r = runner.invoke(cli, ["init", str(ws), "--slides", str(slides_dir), *opts])
    assert r.exit_code == 0, r.output
    return r


def test_init_keeps_the_tissue_tiles_as_pool_items(runner, cli, tmp_path, slides_dir):
    r = init(runner, cli, tmp_path / "ws", slides_dir, "--tile", "512", "--tissue-threshold", "0.1")
    assert "slide s1.tif: 3 of 12 512px tiles of level 0 kept" in r.output
    with Workspace.open(tmp_path / "ws") as ws:
        items = ws.items()
        assert [(it.name, it.split, it.height, it.width, it.labeled) for it in items] == [
            (f"s1_L0_x{x}_y{y}", "pool", 512, 512, False)
            for x, y in [(0, 0), (512, 512), (1536, 1024)]]
        assert [it.tile.tissue for it in items] == [1.0, 0.5, 0.125]
        assert {it.image_path for it in items} == {str((slides_dir / "s1.tif").resolve())}
        assert not any((tmp_path / "ws" / "images").iterdir())  # no tile written up front
        from seglearn.app.images import item_image

        want = S._synthetic_tile(RECTS, 512, 512, 1, 512)
        np.testing.assert_array_equal(item_image(ws, "s1_L0_x512_y512"), want)


def test_the_suggestion_csv_gives_slide_coordinates(runner, cli, tmp_path, slides_dir):
    ws = tmp_path / "ws"
    init(runner, cli, ws, slides_dir, "--tile", "256", "--level", "1", "--tissue-threshold", "0.1")
    r = runner.invoke(cli, ["select", str(ws), "--strategy", "random", "--budget", "3"])
    assert r.exit_code == 0, r.output
    with open(ws / "suggestions" / "round_01.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    got = sorted((r["item"], r["slide"], int(r["x"]), int(r["y"]), int(r["level"])) for r in rows)
    assert got == [(f"s1_L1_x{x}_y{y}", "s1.tif", x, y, 1)
                   for x, y in [(0, 0), (1536, 1024), (512, 512)]]


class DarkIsForeground:
    """A stand-in model: foreground where the tile is darker than the glass (the tissue)."""

    role, round_id, scale = "suggestive", 1, 1.0

    def predict_mean(self, image, scale=1.0, device="cpu", flips=False):
        return np.where(image.mean(axis=2) < 200, 0.9, 0.05).astype(np.float32)[None]


@pytest.mark.parametrize("tile,level", [(512, 0), (256, 1)])
def test_pre_annotations_land_in_slide_coordinates_and_label_back(runner, cli, tmp_path,
                                                                  slides_dir, tile, level):
    from seglearn.app.evaluate import postprocess_params
    from seglearn.app.preannotate import PreAnnotator, write_pre_annotations
    from seglearn.config import load_config
    from seglearn.data import read_mask

    ws_dir = tmp_path / "ws"
    init(runner, cli, ws_dir, slides_dir, "--tile", str(tile), "--level", str(level))
    cfg = load_config(None, ["model.contour_head=false", "postprocess.min_area=0",
                             "postprocess.seed_min_area=0"])
    with Workspace.open(ws_dir) as ws:
        rid = ws.start_round("select", cfg.hash())
        pa = PreAnnotator(DarkIsForeground(), postprocess_params(cfg.postprocess, False), 1.0, "stub")
        folder = write_pre_annotations(ws, pa, rid, [{"item_id": it.id} for it in ws.items()])
    name = f"s1_L{level}_x512_y512"
    feats = json.loads((folder / f"{name}_pre.geojson").read_text())["features"]
    # The tissue of that tile is the level-0 rectangle x 512..768, y 512..1024: its outline.
    from shapely.geometry import shape

    assert [shape(f["geometry"]).bounds for f in feats] == [(512.0, 512.0, 768.0, 1024.0)]
    r = runner.invoke(cli, ["label", str(ws_dir), "--geojson", str(folder)])
    assert r.exit_code == 0, r.output
    with Workspace.open(ws_dir) as ws:
        for it in ws.items():
            assert (it.label.source, it.label.changed) == ("pre-annotation", False)
            pre = read_mask(folder / f"{it.name}_pre.png", shape=(tile, tile))
            np.testing.assert_array_equal(ws.read_label(it), pre)
        half = ws.read_label(name)
        assert (half[:, : tile // 2] > 0).all() and not half[:, tile // 2:].any()


def polygon(x0, y0, x1, y1, cls="Gland"):
    ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
    return {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": {"objectType": "annotation", "classification": {"name": cls}}}


def expected(tile_x, tile_y, size, ds, boxes):
    """Oracle: label k where the pixel centre (level-0: corner + (c + 0.5) ds) is in box k."""
    cx = tile_x + (np.arange(size) + 0.5) * ds
    cy = tile_y + (np.arange(size) + 0.5) * ds
    out = np.zeros((size, size), np.int64)
    for k, (a, b, c, d) in enumerate(boxes, 1):
        out[np.ix_((cy > b) & (cy < d), (cx > a) & (cx < c))] = k
    return out


@pytest.mark.parametrize("tile,level", [(512, 0), (256, 1)])
def test_a_slide_wide_geojson_labels_the_tiles_it_covers(runner, cli, tmp_path, slides_dir,
                                                         tile, level):
    ws_dir = tmp_path / "ws"
    init(runner, cli, ws_dir, slides_dir, "--tile", str(tile), "--level", str(level),
         "--tissue-threshold", "0")  # all 12 tiles
    across = (400.5, 100.5, 700.5, 300.5)     # over tiles (0, 0) and (512, 0)
    inside = (1550.5, 1030.5, 1650.5, 1270.5)  # inside tile (1536, 1024)
    geo = tmp_path / "geo"
    geo.mkdir()
    (geo / "s1.geojson").write_text(json.dumps(
        {"type": "FeatureCollection", "features": [polygon(*across), polygon(*inside),
                                                   polygon(0, 0, 2048, 1536, "Region")]}))
    r = runner.invoke(cli, ["label", str(ws_dir), "--geojson", str(geo), "--class", "Gland"])
    assert r.exit_code == 0, r.output
    assert "labeled 3 item(s)" in r.output
    ds = 2 ** level
    with Workspace.open(ws_dir) as ws:
        labeled = {it.name: it for it in ws.items(labeled=True)}
        assert sorted(labeled) == sorted(f"s1_L{level}_x{x}_y{y}"
                                         for x, y in [(0, 0), (512, 0), (1536, 1024)])
        for name, it in labeled.items():
            want = expected(it.tile.x, it.tile.y, tile, ds, [across, inside])
            got = ws.read_label(it)
            np.testing.assert_array_equal(got > 0, want > 0)
            assert len(np.unique(got[got > 0])) == 1  # the part of one object over this tile
            assert it.label.source == "expert"


def test_a_slide_wide_geojson_that_covers_no_tile_is_an_error(runner, cli, tmp_path, slides_dir):
    ws_dir = tmp_path / "ws"
    init(runner, cli, ws_dir, slides_dir, "--tile", "512")  # tiles (0, 0) and (512, 512)
    geo = tmp_path / "geo"
    geo.mkdir()
    (geo / "s1.geojson").write_text(json.dumps([polygon(1100, 100, 1200, 200)]))
    r = runner.invoke(cli, ["label", str(ws_dir), "--geojson", str(geo)])
    assert r.exit_code == 2
    assert "s1.geojson is for slide" in r.output and "none of its objects lies in one of the " \
        "slide's 2 tiles" in r.output and "Traceback" not in r.output


@pytest.mark.parametrize("opts,needles", [
    (["--tile", "4096"], ["s1.tif: --tile 4096 is larger than level 0 of the slide (2048x1536"]),
    (["--level", "5"], ["s1.tif has no level 5: it has 3 level(s)"]),
    (["--tissue-threshold", "1.5"], ["--tissue-threshold is a fraction of a tile, in [0, 1]"]),
    (["--initial-labeled", "0.5"], ["--initial-labeled needs masks"]),
])
def test_bad_slide_options_are_one_line_errors(runner, cli, tmp_path, slides_dir, opts, needles):
    r = runner.invoke(cli, ["init", str(tmp_path / "ws"), "--slides", str(slides_dir), *opts])
    assert r.exit_code == 2, r.output
    assert r.output.strip().startswith("error:") and "Traceback" not in r.output
    for n in needles:
        assert n in " ".join(r.output.split()), r.output
    assert not (tmp_path / "ws").exists()


def test_a_slide_that_cannot_be_opened_is_named(runner, cli, tmp_path):
    d = tmp_path / "slides"
    d.mkdir()
    (d / "broken.svs").write_bytes(b"II*\x00garbage")
    r = runner.invoke(cli, ["init", str(tmp_path / "ws"), "--slides", str(d)])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "broken.svs cannot be opened as a pyramidal TIFF/SVS slide" in " ".join(r.output.split())


def test_ordinary_images_leave_the_slide_columns_empty(runner, cli, tmp_path):
    ws = tmp_path / "ws"
    r = runner.invoke(cli, ["init", str(ws), "--synthetic", "4", "--set", "synthetic.size=32"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["select", str(ws), "--strategy", "random", "--budget", "2"])
    assert r.exit_code == 0, r.output
    with open(ws / "suggestions" / "round_01.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2
    assert all((r["slide"], r["x"], r["y"], r["level"]) == ("", "", "", "") for r in rows)


def test_a_slide_changed_after_init_is_refused_when_a_tile_is_read(tmp_path, slides_dir):
    import os
    import shutil

    from seglearn.app.images import item_image
    from seglearn.app.init import init_workspace
    from seglearn.config import load_config
    from seglearn.store import WorkspaceError

    mine = tmp_path / "slides"
    mine.mkdir()
    shutil.copy(slides_dir / "s1.tif", mine / "s1.tif")
    with init_workspace(tmp_path / "ws", load_config(None, []), slides=mine, tile=512,
                        progress=False) as ws:
        assert item_image(ws, "s1_L0_x0_y0").shape == (512, 512, 3)
        S.write_synthetic_slide(mine / "s1.tif", 2048, 1536, RECTS[:1], levels=3)
        os.utime(mine / "s1.tif", ns=(1, 1))  # a new stamp, so the file is hashed again
        with pytest.raises(WorkspaceError, match=r"s1\.tif of item 's1_L0_x0_y0' has changed"):
            item_image(ws, "s1_L0_x0_y0")
