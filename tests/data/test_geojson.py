"""QuPath GeoJSON: rasterising every geometry kind, repairs and refusals, writing, round trip."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from seglearn.data import DataError
from seglearn.data.geojson import (feature_ids, mask_to_features, rasterise, read_features,
                                   read_geojson_mask, to_geojson)


def feat(geometry: dict, cls: str | None = "Gland", **extra) -> dict:
    props = {"objectType": "annotation"}
    if cls is not None:
        props["classification"] = {"name": cls, "color": [0, 200, 0]}
    return {"type": "Feature", "geometry": geometry, "properties": props, **extra}


def poly(*rings) -> dict:
    return {"type": "Polygon", "coordinates": [list(map(list, r)) for r in rings]}


def square(x0, y0, x1, y1):
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]


def centres_inside_triangle(shape, a, b, c):
    """Oracle: pixel centres strictly inside triangle abc (half-plane signs), numpy only."""
    yy, xx = np.mgrid[:shape[0], :shape[1]] + 0.5
    pts = [a, b, c]

    def side(p, q):
        return (q[0] - p[0]) * (yy - p[1]) - (q[1] - p[1]) * (xx - p[0])

    s = [side(pts[i], pts[(i + 1) % 3]) for i in range(3)]
    return ((s[0] > 0) & (s[1] > 0) & (s[2] > 0)) | ((s[0] < 0) & (s[1] < 0) & (s[2] < 0))


def test_polygon_covers_the_pixels_whose_centres_it_contains():
    out = rasterise([feat(poly(square(1, 2, 4, 5)))], (8, 8))
    want = np.zeros((8, 8), np.uint16)
    want[2:5, 1:4] = 1  # x = column 1..3, y = row 2..4: pixel-corner coordinates
    np.testing.assert_array_equal(out, want)
    tri = [(0.3, 0.7), (11.2, 2.1), (4.9, 9.6)]
    out = rasterise([feat(poly(tri + [tri[0]]))], (10, 12))
    np.testing.assert_array_equal(out > 0, centres_inside_triangle((10, 12), *tri))


def test_hole_multipolygon_and_one_instance_per_feature():
    ring = poly(square(0, 0, 6, 6), square(2, 2, 4, 4))
    multi = {"type": "MultiPolygon", "coordinates": [
        [list(map(list, square(7, 0, 9, 2)))],
        [list(map(list, square(7, 4, 10, 8))), list(map(list, square(8, 5, 9, 6)))]]}
    out = rasterise([feat(ring), feat(multi)], (8, 10))
    want = np.zeros((8, 10), np.uint16)
    want[0:6, 0:6] = 1
    want[2:4, 2:4] = 0
    want[0:2, 7:9] = 2
    want[4:8, 7:10] = 2
    want[5, 8] = 0
    np.testing.assert_array_equal(out, want)


def test_file_forms_collection_list_single_feature(tmp_path):
    f = feat(poly(square(0, 0, 2, 2)))
    shapes = {"fc.geojson": {"type": "FeatureCollection", "features": [f]},
              "list.json": [f], "one.geojson": f}
    for name, data in shapes.items():
        (tmp_path / name).write_text(json.dumps(data))
        m = read_geojson_mask(tmp_path / name, (3, 3))
        assert m.sum() == 4 and m[:2, :2].all(), name


def test_class_filter_keeps_only_that_class():
    feats = [feat(poly(square(0, 0, 2, 2)), "Gland"), feat(poly(square(3, 0, 5, 2)), "Stroma"),
             feat(poly(square(0, 3, 2, 5)), None), feat(poly(square(3, 3, 5, 5)), "Gland")]
    out = rasterise(feats, (5, 5), class_filter="Gland")
    assert out[0, 0] == 1 and out[4, 4] == 2 and out[0, 4] == 0 and out[4, 0] == 0
    assert rasterise(feats, (5, 5)).max() == 4  # no filter: every feature


def test_outside_the_image_is_clipped_with_a_warning():
    feats = [feat(poly(square(-3, -3, 2, 2))), feat(poly(square(20, 20, 30, 30)))]
    with pytest.warns(UserWarning, match=r"2 feature\(s\) reach outside the 6x4 image.*1 lie "
                                         r"entirely outside"):
        out = rasterise(feats, (4, 6), "GeoJSON file a.geojson")
    want = np.zeros((4, 6), np.uint16)
    want[:2, :2] = 1
    np.testing.assert_array_equal(out, want)


def test_bad_json_names_the_file_and_position(tmp_path):
    p = tmp_path / "a.geojson"
    p.write_text('{"type": "FeatureCollection", "features": [\n{"type": ')
    with pytest.raises(DataError, match=r"a\.geojson is not valid JSON: .* line 2"):
        read_features(p)
    p.write_text('{"type": "Polygon", "coordinates": []}')
    with pytest.raises(DataError, match="neither a FeatureCollection nor a list of features"):
        read_features(p)


def test_self_intersecting_polygon_is_repaired_with_a_warning_naming_it():
    bowtie = [(0, 0), (4, 4), (4, 0), (0, 4), (0, 0)]  # left and right triangles meeting at (2, 2)
    with pytest.warns(UserWarning, match=r"feature 1 \(name 'bow'\): invalid Polygon "
                                         r"\(Self-intersection.*repaired"):
        out = rasterise([{**feat(poly(bowtie)), "properties": {"name": "bow"}}], (4, 4))
    yy, xx = np.mgrid[:4, :4] + 0.5
    want = np.abs(xx - 2) > np.abs(yy - 2)  # no centre lies on a diagonal
    np.testing.assert_array_equal(out > 0, want)  # the two triangles' pixel centres


def test_polygon_without_area_is_refused_naming_the_feature():
    flat = [(0, 0), (3, 0), (5, 0), (0, 0)]
    with pytest.raises(DataError, match=r"x\.geojson feature 2 \(id abc\): .*no area after repair"):
        rasterise([feat(poly(square(0, 0, 1, 1))), feat(poly(flat), id="abc")], (4, 4),
                  "GeoJSON file x.geojson")


def test_malformed_coordinates_and_other_geometry_kinds():
    with pytest.raises(DataError, match="feature 1: Polygon coordinates are malformed"):
        rasterise([feat({"type": "Polygon", "coordinates": [[["a", 1], [2, 3]]]})], (4, 4))
    pt = feat({"type": "Point", "coordinates": [1, 1]})
    with pytest.warns(UserWarning, match=r"1 feature\(s\) skipped: not Polygon/MultiPolygon \(Point\)"):
        out = rasterise([pt, feat(poly(square(0, 0, 1, 1)))], (2, 2))
    assert out[0, 0] == 1 and out.sum() == 1


def test_written_features_are_qupath_annotations():
    lab = np.zeros((5, 6), np.uint16)
    lab[1:3, 1:4] = 7
    lab[4, 5] = 9
    fc = json.loads(to_geojson(lab, class_name="Gland", color=(1, 2, 3), id_key="a/round_01"))
    assert fc["type"] == "FeatureCollection" and len(fc["features"]) == 2
    f = fc["features"][0]
    assert f["properties"] == {"objectType": "annotation",
                               "classification": {"name": "Gland", "color": [1, 2, 3]}}
    assert [g["id"] for g in fc["features"]] == feature_ids("a/round_01", 2)
    # exact pixel-corner outline: the 3x2 block is the rectangle x 1..4, y 1..3
    ring = np.array(f["geometry"]["coordinates"][0])
    assert {tuple(p) for p in ring} == {(1, 1), (4, 1), (4, 3), (1, 3)}


def random_instances(seed: int, h: int = 48, w: int = 64) -> np.ndarray:
    """Touching blobs (a label grid cut by random discs), holes, 1-pixel and diagonal objects."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    lab = np.zeros((h, w), np.int64)
    for k in range(1, 12):
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(3, 12)
        lab[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = k  # later discs cut into (touch) earlier
    cy, cx = rng.integers(8, h - 8), rng.integers(8, w - 8)
    lab[(yy - cy) ** 2 + (xx - cx) ** 2 < 49] = 20
    lab[(yy - cy) ** 2 + (xx - cx) ** 2 < 9] = 0  # a ring: one hole
    lab[0, 0] = 21                                 # one pixel at the corner
    lab[h - 1, w - 3] = lab[h - 2, w - 2] = 22     # touching only diagonally
    return lab


@pytest.mark.parametrize("seed", range(6))
def test_round_trip_keeps_every_instance(seed):
    from shapely.geometry import shape

    lab = random_instances(seed)
    feats = mask_to_features(lab)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the outlines written must be valid: no repair
        back = rasterise(json.loads(json.dumps(feats)), lab.shape)
    values = [v for v in np.unique(lab) if v]
    assert len(feats) == len(values) == back.max()
    for k, (v, f) in enumerate(zip(values, feats), start=1):
        a, b = lab == v, back == k
        iou = (a & b).sum() / (a | b).sum()
        assert iou >= 0.98, (v, iou)
        assert shape(f["geometry"]).area == a.sum()  # the outline encloses exactly its pixels
