"""`seglearn predict` as a function: files and folders in, uint16 label PNGs (and overlays) out."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from seglearn.app.predict import predict_files
from seglearn.export import export_model
from seglearn.models.fcn import FCN
from seglearn.postprocess import PostprocessParams
from seglearn.quant.convert import quantize_model
from seglearn.runtime import load_model

from .conftest import discs, train_briefly


def test_predict_files_writes_label_pngs(data, tmp_path):
    imgs, masks = data
    torch.manual_seed(5)
    model = train_briefly(quantize_model(FCN(3, width=4, depth=2), {"weight": "twn", "act": "dorefa"}),
                          imgs[:4], masks[:4], steps=6)
    export_model(model, tmp_path / "m.slq", postprocess=PostprocessParams(min_area=3))
    src = tmp_path / "in"
    src.mkdir()
    test = discs(3, seed=9)[0]
    for i, img in enumerate(test[:2]):
        Image.fromarray(img).save(src / f"a{i}.png")
    Image.fromarray(test[2][..., 0]).save(tmp_path / "gray.png")
    (src / "notes.txt").write_text("not an image")
    n = predict_files(tmp_path / "m.slq", [src, tmp_path / "gray.png"], tmp_path / "out",
                      overlay=True, progress=False)
    assert n == 3
    m = load_model(tmp_path / "m.slq")
    for name, img in (("a0", test[0]), ("a1", test[1]), ("gray", test[2][..., 0])):
        lab = np.asarray(Image.open(tmp_path / "out" / f"{name}.png"))
        assert lab.dtype == np.uint16 and lab.shape == img.shape[:2]
        np.testing.assert_array_equal(lab, m.predict(img))
        assert (tmp_path / "out" / f"{name}_overlay.png").is_file()
    with pytest.raises(FileNotFoundError):
        predict_files(tmp_path / "m.slq", [tmp_path / "missing.png"], tmp_path / "out", progress=False)



class FixedObjects:
    """A stand-in runtime model: the same instances (one with a hole, two touching) every time."""

    def predict(self, img):
        lab = np.zeros(img.shape[:2], np.int32)
        lab[2:14, 2:14] = 1
        lab[6:9, 6:9] = 0
        lab[2:14, 14:20] = 2
        lab[20:25, 30:40] = 3
        return lab


def test_predict_geojson_flag_writes_the_instances_as_qupath_annotations(tmp_path, monkeypatch):
    import json
    import subprocess
    import sys

    from typer.testing import CliRunner

    import seglearn.app.predict
    from seglearn.cli.app import app
    from seglearn.data.geojson import read_geojson_mask

    monkeypatch.setattr(seglearn.app.predict, "load_model", lambda path, kernels: FixedObjects())
    src = tmp_path / "in"
    src.mkdir()
    for i, img in enumerate(discs(2, seed=9)[0]):
        Image.fromarray(img).save(src / f"a{i}.png")
    r = CliRunner().invoke(app, ["predict", str(tmp_path / "m.slq"), str(src), "--out",
                                 str(tmp_path / "out"), "--geojson", "--no-progress"])
    assert r.exit_code == 0 and "GeoJSON" in r.output, r.output
    for name in ("a0", "a1"):
        lab = np.asarray(Image.open(tmp_path / "out" / f"{name}.png")).astype(np.int64)
        fc = json.loads((tmp_path / "out" / f"{name}.geojson").read_text())
        assert fc["type"] == "FeatureCollection" and len(fc["features"]) == 3
        assert all(f["properties"]["objectType"] == "annotation" for f in fc["features"])
        assert [len(f["geometry"]["coordinates"]) for f in fc["features"]] == [2, 1, 1]  # a hole
        back = read_geojson_mask(tmp_path / "out" / f"{name}.geojson", lab.shape)
        np.testing.assert_array_equal(back, FixedObjects().predict(lab))
    # the runtime and predict without --geojson never load shapely
    code = ("import sys, seglearn.runtime, seglearn.app.predict, seglearn.cli.cmd_predict; "
            "assert 'shapely' not in sys.modules, 'shapely imported'")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
