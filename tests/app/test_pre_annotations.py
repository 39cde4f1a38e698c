"""Pre-annotations: written beside the suggestions, recorded, and recognised when labeled back."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from seglearn.app.evaluate import instances_from_output, postprocess_params
from seglearn.app.init import init_workspace
from seglearn.app.label import label_workspace, same_instances
from seglearn.app.preannotate import PreAnnotator, write_pre_annotations
from seglearn.config import load_config
from seglearn.data import read_image, read_mask, write_mask
from seglearn.data.geojson import read_geojson_mask
from seglearn.store.digest import file_sha256


class FromOracle:
    """A stand-in model: confident foreground exactly on the image's hidden mask."""

    role, round_id, scale = "suggestive", 1, 1.0

    def __init__(self, ws):
        self.by_image = {}
        for it in ws.items():
            gt = read_mask(ws.resolve(it.oracle_mask_path), shape=(it.height, it.width))
            self.by_image[read_image(ws.resolve(it.image_path)).tobytes()] = gt

    def predict_mean(self, image, scale=1.0, device="cpu", flips=False):
        return np.where(self.by_image[image.tobytes()] > 0, 0.9, 0.05).astype(np.float32)[None]


@pytest.fixture
def pre(tmp_path):
    cfg = load_config(None, ["synthetic.n=8", "synthetic.size=48", "model.contour_head=false",
                             "postprocess.min_area=0", "postprocess.seed_min_area=0"])
    ws = init_workspace(tmp_path / "ws", cfg, synthetic=8, initial_labeled=0.1, progress=False)
    model = FromOracle(ws)
    params = postprocess_params(cfg.postprocess, False)
    rid = ws.start_round("select", cfg.hash())
    items = ws.unlabeled("pool")[:3]
    folder = write_pre_annotations(ws, PreAnnotator(model, params, 1.0, "stub round 1"), rid,
                                   [{"item_id": it.id} for it in items])
    return ws, model, params, items, folder


def labels_of(ws, name):
    return [(lb.source, lb.changed) for lb in ws.label_history(name)]


def test_files_are_the_prediction_and_are_recorded(pre):
    ws, model, params, items, folder = pre
    assert folder == ws.root / "suggestions" / "round_01"
    recs = {p.item_id: p for p in ws.pre_annotations()}
    assert set(recs) == {it.id for it in items}
    for it in items:
        png, geo = folder / f"{it.name}_pre.png", folder / f"{it.name}_pre.geojson"
        probs = model.predict_mean(read_image(ws.image_file(it)))
        want = instances_from_output(probs, params)
        got = read_mask(png)
        assert want.max() > 0 and np.array_equal(got, want)
        assert same_instances(read_geojson_mask(geo, got.shape).astype(np.int32), got)
        r = recs[it.id]
        assert (r.mask_sha256, r.geojson_sha256) == (file_sha256(png), file_sha256(geo))
        assert r.instances == len(np.unique(got)) - 1 and r.model == "stub round 1"


def test_label_sources_say_where_each_label_started(pre, tmp_path):
    ws, _, _, (a, b, c), folder = pre
    d = ws.unlabeled("pool")[3]  # no pre-annotation
    masks = tmp_path / "masks"
    masks.mkdir()
    shutil.copy(folder / f"{a.name}_pre.png", masks / f"{a.name}.png")  # accepted as written
    edited = read_mask(folder / f"{b.name}_pre.png")
    edited[:4, :4] = edited.max() + 1  # the expert adds an object
    write_mask(masks / f"{b.name}_pre.png", edited.astype(np.uint16))
    own = read_mask(ws.resolve(c.oracle_mask_path))
    own[own == own.max()] = 0  # drawn from scratch: no pre-annotation file, name or hash
    write_mask(masks / f"{c.name}.png", own.astype(np.uint16))
    shutil.copy(ws.resolve(d.oracle_mask_path), masks / f"{d.name}.png")
    assert label_workspace(ws, masks_dir=masks) == 4
    assert labels_of(ws, a.name) == [("pre-annotation", False)]
    assert labels_of(ws, b.name) == [("pre-annotation", True)]
    assert labels_of(ws, c.name) == [("expert", None)]
    assert labels_of(ws, d.name) == [("expert", None)]
    assert ws.item(a.name).label.pre_annotation == ws.pre_annotations(a.id)[0].id
    assert np.array_equal(ws.read_label(b.name), edited)


def test_qupath_export_is_recognised_by_its_feature_ids(pre, tmp_path):
    ws, _, _, (a, b, _), folder = pre
    qp = tmp_path / "qupath"
    qp.mkdir()
    fa = json.loads((folder / f"{a.name}_pre.geojson").read_text())
    (qp / f"{a.name}.geojson").write_text(json.dumps(fa, indent=2))  # re-saved, same objects
    fb = json.loads((folder / f"{b.name}_pre.geojson").read_text())
    assert len(fb["features"]) >= 2
    fb["features"] = fb["features"][1:]  # the expert deleted an object
    (qp / f"{b.name}.json").write_text(json.dumps(fb["features"]))
    assert label_workspace(ws, geojson_dir=qp) == 2
    assert labels_of(ws, a.name) == [("pre-annotation", False)]
    assert labels_of(ws, b.name) == [("pre-annotation", True)]
    for f in fa["features"]:  # without the ids it is the expert's own drawing
        f.pop("id")
    (qp / f"{a.name}.geojson").write_text(json.dumps(fa))
    (qp / f"{b.name}.json").unlink()
    label_workspace(ws, geojson_dir=qp)
    assert labels_of(ws, a.name)[-1] == ("expert", None)


def test_same_instances_ignores_label_numbers_only():
    a = np.array([[1, 1, 0], [2, 2, 0]])
    assert same_instances(a, np.array([[5, 5, 0], [3, 3, 0]]))
    assert not same_instances(a, np.array([[5, 5, 0], [5, 5, 0]]))  # two objects merged
    assert not same_instances(a, np.array([[1, 1, 0], [2, 3, 0]]))  # one split
    assert not same_instances(a, np.array([[1, 1, 1], [2, 2, 0]]))  # one grown
