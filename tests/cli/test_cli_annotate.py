"""Where annotators work, through the CLI: select --pre-annotate, label the corrections back
(PNG and QuPath GeoJSON), and the refusals with one `error:` line."""

import csv
import json
import shutil

import numpy as np
import pytest

from conftest import TINY


def run(runner, cli, *args):
    return runner.invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.slow
def test_pre_annotate_then_label_back(runner, cli, tmp_path):
    from seglearn.app.label import same_instances
    from seglearn.data import read_mask
    from seglearn.data.geojson import read_geojson_mask
    from seglearn.store import Workspace
    from seglearn.store.digest import file_sha256

    ws = tmp_path / "ws"
    assert run(runner, cli, "init", ws, "--synthetic", 10, *TINY).exit_code == 0
    r = run(runner, cli, "train", ws, "--no-progress")
    assert r.exit_code == 0, r.output
    r = run(runner, cli, "select", ws, "--budget", 2, "--candidates", 3, "--no-progress",
            "--pre-annotate")
    assert r.exit_code == 0, r.output
    folder = ws / "suggestions" / "round_01"
    assert "pre-annotations to correct" in r.output
    names = [row["item"] for row in csv.DictReader((ws / "suggestions" / "round_01.csv").open())]
    w = Workspace.open(ws)
    recs = {w.item(p.item_id).name: p for p in w.pre_annotations()}
    assert sorted(recs) == sorted(names)
    for n in names:
        png, geo = folder / f"{n}_pre.png", folder / f"{n}_pre.geojson"
        mask = read_mask(png)
        assert mask.shape == (32, 32)
        assert same_instances(read_geojson_mask(geo, mask.shape).astype(np.int32), mask)
        assert recs[n].mask_sha256 == file_sha256(png) and recs[n].model == "suggestive round 1"
    w.close()

    # the expert accepts one pre-annotation as written, edits the other (same file name)
    fixed = tmp_path / "fixed"
    fixed.mkdir()
    shutil.copy(folder / f"{names[0]}_pre.png", fixed / f"{names[0]}_pre.png")
    edited = read_mask(folder / f"{names[1]}_pre.png")
    edited[-3:, -3:] = edited.max() + 1
    from seglearn.data import write_mask

    write_mask(fixed / f"{names[1]}_pre.png", edited.astype(np.uint16))
    r = run(runner, cli, "label", ws, "--masks", fixed)
    assert r.exit_code == 0 and "labeled 2 item(s)" in r.output, r.output
    w = Workspace.open(ws)
    got = {n: (w.item(n).label.source, w.item(n).label.changed) for n in names}
    assert got == {names[0]: ("pre-annotation", False), names[1]: ("pre-annotation", True)}
    w.close()

    # with a final segmenter, the next pre-annotations come from it
    r = run(runner, cli, "train", ws, "--final", "--no-progress")
    assert r.exit_code == 0, r.output
    r = run(runner, cli, "select", ws, "--budget", 1, "--candidates", 2, "--no-progress",
            "--set", "active.pre_annotate=true")
    assert r.exit_code == 0, r.output
    w = Workspace.open(ws)
    newest = w.pre_annotations()[-1]
    assert newest.model.startswith("final round") and w.item(newest.item_id).label is None
    w.close()


def test_pre_annotate_without_a_model_is_refused(runner, cli, tmp_path):
    ws = tmp_path / "ws"
    assert run(runner, cli, "init", ws, "--synthetic", 6, *TINY).exit_code == 0
    r = run(runner, cli, "select", ws, "--strategy", "random", "--pre-annotate", "--no-progress")
    assert r.exit_code == 2
    assert "error:" in r.output and "no trained model to pre-annotate" in r.output
    assert not list((ws / "suggestions").iterdir())  # refused before anything was written


def gland(x0, y0, x1, y1, cls="Gland"):
    return {"type": "Feature", "properties": {"objectType": "annotation",
                                              "classification": {"name": cls}},
            "geometry": {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1],
                                                             [x0, y1], [x0, y0]]]}}


def test_label_geojson_folder_with_class_filter_and_errors(runner, cli, tmp_path):
    from seglearn.store import Workspace

    ws = tmp_path / "ws"
    assert run(runner, cli, "init", ws, "--synthetic", 6, *TINY).exit_code == 0
    w = Workspace.open(ws)
    a, b = [it.name for it in w.unlabeled("pool")][:2]
    w.close()
    qp = tmp_path / "qupath"
    qp.mkdir()
    (qp / f"{a}.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [
        gland(2, 2, 10, 8), gland(12, 2, 20, 8, "Stroma"), gland(28, 28, 40, 40)]}))
    (qp / f"{b}.json").write_text(json.dumps([gland(0, 0, 4, 4)]))
    with pytest.warns(UserWarning, match=r"reach outside the 32x32 image and were clipped"):
        r = run(runner, cli, "label", ws, "--geojson", qp, "--class", "Gland")
    assert r.exit_code == 0 and "labeled 2 item(s)" in r.output, r.output
    w = Workspace.open(ws)
    m = w.read_label(a)
    want = np.zeros((32, 32), np.int32)
    want[2:8, 2:10] = 1
    want[28:, 28:] = 2  # clipped at the image's edge (warned)
    np.testing.assert_array_equal(m, want)
    assert w.item(a).label.source == "expert"
    w.close()

    r = run(runner, cli, "label", ws, "--geojson", qp, "--class", "Glands")
    assert r.exit_code == 2 and "no feature of class 'Glands'" in r.output
    assert "classes found: Gland, Stroma" in r.output
    (qp / f"{b}.json").write_text('[{"type": "Feature",')
    r = run(runner, cli, "label", ws, "--geojson", qp)
    assert r.exit_code == 2 and f"{b}.json is not valid JSON" in r.output
    assert "Traceback" not in r.output
    (qp / f"{b}.json").unlink()
    (qp / "nobody.geojson").write_text("[]")
    r = run(runner, cli, "label", ws, "--geojson", qp)
    assert r.exit_code == 2 and "matches no item" in r.output
    r = run(runner, cli, "label", ws, "--masks", qp, "--class", "Gland")
    assert r.exit_code == 2 and "--class filters GeoJSON features" in r.output
    r = run(runner, cli, "label", ws, "--masks", qp)
    assert r.exit_code == 2 and "use --geojson DIR" in r.output
    one = tmp_path / "one.geojson"  # one item, one GeoJSON file
    one.write_text(json.dumps([gland(1, 1, 3, 4, "Stroma"), gland(5, 5, 7, 7)]))
    r = run(runner, cli, "label", ws, "--item", b, "--mask", one, "--class", "Stroma")
    assert r.exit_code == 0, r.output
    w = Workspace.open(ws)
    m = w.read_label(b)
    assert m[1:4, 1:3].all() and m.sum() == 6
    w.close()
