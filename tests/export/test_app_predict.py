"""`seglearn predict` as a function: files and folders in, uint16 label PNGs (and overlays) out."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from seglearn.app.predict import predict_files
from seglearn.export import export_model
from seglearn.models.fcn import FCN
from seglearn.quant.convert import quantize_model
from seglearn.runtime import load_model

from .conftest import discs, train_briefly


def test_predict_files_writes_label_pngs(data, tmp_path):
    imgs, masks = data
    torch.manual_seed(5)
    model = train_briefly(quantize_model(FCN(3, width=4, depth=2), {"weight": "twn", "act": "dorefa"}),
                          imgs[:4], masks[:4], steps=6)
    export_model(model, tmp_path / "m.slq", postprocess={"min_area": 3})
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
