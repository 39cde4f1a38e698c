"""postprocess.mode travels in the .slq: the runtime's semantic labels are the torch route's, and a
file written before the field predicts as the instances mode."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from seglearn.export import export_model
from seglearn.models.fcn import FCN
from seglearn.postprocess import PostprocessParams, instances_from_probs
from seglearn.quant.convert import quantize_model
from seglearn.runtime import load_model
from seglearn.runtime.slq import SlqFormatError, read_slq, write_slq

from .conftest import discs, train_briefly

SEMANTIC = PostprocessParams(mode="semantic", min_area=6, fill_holes=True, seed_min_area=2)
INSTANCES = PostprocessParams(min_area=6, seed_min_area=2)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    imgs, masks = discs(8, h=48, w=64, seed=3)
    torch.manual_seed(2)
    model = train_briefly(quantize_model(FCN(3, width=4, depth=2, contour_head=True),
                                         {"weight": "iao", "act": "iao"}), imgs[:4], masks[:4],
                          steps=10)
    d = tmp_path_factory.mktemp("sem")
    export_model(model, d / "semantic.slq", postprocess=SEMANTIC)
    export_model(model, d / "instances.slq", postprocess=INSTANCES)
    return model, imgs[4:], d


def _components(fg: np.ndarray, min_area: int) -> np.ndarray:
    """Oracle: 8-connected components of fg, those under min_area removed, numbered 1..N."""
    lab, n = ndi.label(fg, structure=np.ones((3, 3), bool))
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    keep = np.flatnonzero(sizes >= min_area)
    lut = np.zeros(n + 1, np.int32)
    keep = keep[keep > 0]
    lut[keep] = np.arange(1, len(keep) + 1)
    return lut[lab]


def test_runtime_semantic_labels_equal_the_torch_route(exported):
    from seglearn.models.infer import predict_image

    model, imgs, d = exported
    m = load_model(d / "semantic.slq", kernels="ref")
    assert m.postprocess["mode"] == "semantic"
    for img in imgs:
        probs, _ = predict_image(model, img)
        want = instances_from_probs(probs[0], probs[1], SEMANTIC)  # the contour map is ignored
        got = m.predict(img)
        assert got.dtype == np.int32 and got.shape == img.shape[:2]
        # exactly the components of the runtime's own (integer) foreground
        np.testing.assert_array_equal(got, _components(m.foreground(img), SEMANTIC.min_area))
        assert np.mean((got > 0) == (want > 0)) >= 0.99
        assert abs(int(got.max()) - int(want.max())) <= 1
        assert want.max() >= 1


def test_a_file_without_the_mode_field_predicts_as_instances(exported, tmp_path):
    _, imgs, d = exported
    graph, arrays = read_slq(d / "instances.slq")
    assert graph["postprocess"]["mode"] == "instances"
    del graph["postprocess"]["mode"]  # as written before the field existed
    old = load_model(write_slq(tmp_path / "old.slq", graph, arrays), kernels="ref")
    new = load_model(d / "instances.slq", kernels="ref")
    for img in imgs:
        np.testing.assert_array_equal(old.predict(img), new.predict(img))


def test_a_bad_mode_in_the_file_is_refused_naming_the_field(exported, tmp_path):
    _, _, d = exported
    graph, arrays = read_slq(d / "semantic.slq")
    graph["postprocess"]["mode"] = "panoptic"
    bad = write_slq(tmp_path / "bad.slq", graph, arrays)
    with pytest.raises(SlqFormatError, match="postprocess.mode must be one of instances, semantic"):
        load_model(bad)
