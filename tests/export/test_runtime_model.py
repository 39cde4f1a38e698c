"""Loaded models: ref == fast kernels, tiles == whole image, torch-free loading, input handling."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from seglearn.export import export_model
from seglearn.models.fcn import FCN
from seglearn.postprocess import PostprocessParams
from seglearn.quant.convert import quantize_model
from seglearn.runtime import load_model
from seglearn.runtime.tiling import plan_tiles

from .conftest import discs, train_briefly

# one model per kernel family: int8 (IAO), ternary planes (TWN), offset planes (HWGQ binary
# weights), XNOR (BinaryNet), shift-and-add (INQ), table conv (CLIP-Q re-encoded, TSQ levels)
SCHEMES = {"iao": {"weight": "iao", "act": "iao"}, "twn": {"weight": "twn", "act": "dorefa"},
           "hwgq": {"weight": "hwgq", "act": "hwgq"}, "binarynet": {"weight": "binarynet", "act": "binarynet"},
           "inq": {"weight": "inq", "act": "syq"}, "clipq_tsq": {"weight": "clipq", "act": "tsq"}}


@pytest.fixture(scope="module")
def slq_files(data, tmp_path_factory):
    imgs, masks = data
    d = tmp_path_factory.mktemp("slq")
    out = {}
    for name, scheme in SCHEMES.items():
        torch.manual_seed(3)
        model = train_briefly(quantize_model(FCN(3, width=4, depth=2, contour_head=True), scheme),
                              imgs[:4], masks[:4], steps=4)
        export_model(model, d / f"{name}.slq",
                     postprocess=PostprocessParams(min_area=5, seed_min_area=2))
        out[name] = d / f"{name}.slq"
    return out


@pytest.fixture(scope="module")
def big_image():
    return discs(1, h=70, w=101, seed=11)[0][0]  # odd sides: padding and cropping inside


def test_ref_and_fast_kernels_identical(slq_files, big_image):
    for name, path in slq_files.items():
        ref, fast = load_model(path, kernels="ref"), load_model(path, kernels="fast")
        np.testing.assert_array_equal(ref.accumulators(big_image), fast.accumulators(big_image), err_msg=name)
        np.testing.assert_array_equal(ref.predict(big_image), fast.predict(big_image), err_msg=name)


def test_tiles_equal_whole_image(slq_files, big_image):
    for name in ("iao", "binarynet", "clipq_tsq"):
        m = load_model(slq_files[name])
        whole = m.accumulators(big_image)
        tiled = m.accumulators(big_image, tile=24)  # 3 x 5 tiles, halo 16
        np.testing.assert_array_equal(whole, tiled, err_msg=name)
        assert whole.shape[:2] == big_image.shape[:2]
    np.testing.assert_array_equal(m.predict(big_image), m.predict(big_image, tile=24))
    with pytest.raises(ValueError, match="multiples"):
        plan_tiles(30, 32, 16, 16, 4)
    # the plan covers the image exactly once and every region holds its core
    tiles = plan_tiles(72, 104, 24, 16, 2)
    cover = np.zeros((72, 104), int)
    for t in tiles:
        cover[t.y0:t.y1, t.x0:t.x1] += 1
        assert t.ry0 <= t.y0 and t.ry1 >= t.y1 and t.ry0 % 2 == 0 and t.rx0 % 2 == 0
    assert (cover == 1).all()


def test_predict_shapes_and_inputs(slq_files, big_image):
    m = load_model(slq_files["iao"])
    labels = m.predict(big_image)
    assert labels.shape == big_image.shape[:2] and labels.dtype == np.int32
    gray = big_image[..., 1]
    np.testing.assert_array_equal(m.predict(gray), m.predict(np.repeat(gray[..., None], 3, 2)))
    with pytest.raises(ValueError, match="uint8"):
        m.predict(big_image.astype(np.float32))
    with pytest.raises(ValueError, match="shape"):
        m.predict(np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(ValueError, match="kernels"):
        load_model(slq_files["iao"], kernels="gpu")


def test_scale_route_matches_torch_route():
    """Exported at data.scale 0.5, the runtime resizes like training (area), interpolates its
    decision margins bilinearly back and post-processes at the image's size, as torch's route does
    with its probabilities: foreground agrees on >= 99% of pixels (nearest-neighbour resizing in
    and out, the previous rule, agreed on ~94% of this model's pixels)."""
    import tempfile

    from seglearn.models.infer import predict_image
    from seglearn.postprocess import instances_from_probs

    imgs, masks = discs(8, h=64, w=96, seed=1)
    torch.manual_seed(4)
    model = train_briefly(quantize_model(FCN(3, width=4, depth=2), {"weight": "iao", "act": "iao"}),
                          imgs[:4], masks[:4], steps=6)
    pp = PostprocessParams(min_area=12, seed_min_area=4)
    with tempfile.TemporaryDirectory() as d:
        export_model(model, f"{d}/s.slq", scale=0.5, postprocess=pp)
        m = load_model(f"{d}/s.slq", kernels="ref")
    for img in imgs[4:]:
        probs, _ = predict_image(model, img, scale=0.5)
        fg = m.foreground(img)
        assert fg.shape == img.shape[:2]
        assert 0.02 < fg.mean() < 0.5
        assert np.mean(fg == (probs[0] > 0.5)) >= 0.99
        torch_labels = instances_from_probs(probs[0], None, pp)
        labels = m.predict(img)
        assert labels.shape == img.shape[:2] and labels.dtype == np.int32
        assert np.mean((labels > 0) == (torch_labels > 0)) >= 0.99
        assert abs(int(labels.max()) - int(torch_labels.max())) <= 1


def test_loads_and_predicts_without_torch(slq_files, big_image, tmp_path):
    np.save(tmp_path / "img.npy", big_image)
    model_path, img_path = str(slq_files["twn"]), str(tmp_path / "img.npy")
    from blocking import blocker_source

    code = blocker_source("torch") + "\n".join([
        "import numpy as np",
        "from seglearn.runtime import load_model",
        "for k in ('ref', 'fast'):",
        f"    m = load_model({model_path!r}, kernels=k)",
        f"    labels = m.predict(np.load({img_path!r}))",
        "assert 'torch' not in sys.modules",
        "print('ok', labels.shape, labels.max())",
    ])
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("ok")
    expected = load_model(slq_files["twn"]).predict(big_image)
    assert r.stdout.split()[-1] == str(expected.max())
