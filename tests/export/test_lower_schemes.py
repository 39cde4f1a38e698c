"""Every registered quantizer: quantize a tiny FCN, train a few steps, export, and check that the
integer runtime's foreground mask agrees with the torch fake-quant model on >= 99.5% of pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seglearn.export import export_model
from seglearn.models.fcn import FCN
from seglearn.quant import QUANTIZERS, list_quantizers
from seglearn.quant.convert import quantize_model, scheme_callbacks
from seglearn.runtime import load_model

from .conftest import discs, to_tensor, torch_foreground, train_briefly


def scheme_for(method: str) -> dict:
    """The method for every kind it has; a partner for the kind it lacks (the runtime needs both)."""
    kinds = QUANTIZERS.get(method).makers
    return {"weight": method if "weight" in kinds else "iao",
            "act": method if "act" in kinds else "dorefa"}


@pytest.fixture(scope="module")
def test_images():
    return discs(3, seed=7)[0]


@pytest.mark.parametrize("method", list_quantizers())
def test_runtime_agrees_with_fake_quant(method, data, test_images, tmp_path):
    imgs, masks = data
    torch.manual_seed(0)
    # Binary weights and activations at width 4 need more steps to leave the all-foreground start.
    steps = 40 if method == "binarynet" else 12
    model = train_briefly(quantize_model(FCN(3, width=4, depth=2), scheme_for(method)), imgs, masks,
                          steps=steps)
    assert_runtime_agrees(model, test_images, tmp_path / "m.slq", method)


def assert_runtime_agrees(model, test_images, path, label) -> dict:
    """Export ``model`` and check the integer runtime against the torch fake-quant model."""
    info = export_model(model, path)
    m = load_model(path, kernels="ref")  # fast == ref is checked in test_runtime_model
    # The runtime rounds where fake-quant rounds, but float summation order differs, so pixels whose
    # logit sits at the threshold may flip (and 12 Adam steps leave many there: how many depends
    # on oneDNN's kernel choice, i.e. on which tests ran first). Every flip must be such a pixel.
    for img in test_images:
        with torch.no_grad():
            logit = model(to_tensor(img))[0, 0].numpy()
        flipped = m.foreground(img) != (logit > 0)
        assert flipped.mean() <= 0.02, (label, flipped.mean(), info)
        assert np.all(np.abs(logit[flipped]) < 0.1), (label, np.abs(logit[flipped]).max(), info)
    # the masks are not trivially all one class, so agreement means something (BinaryNet included:
    # quantize_model drops the ReLUs in front of its sign activations).
    fg = np.mean([torch_foreground(model, img).mean() for img in test_images])
    assert 0.0 < fg < 1.0, (label, fg)
    return info


def test_tsq_two_step_training_exports(data, test_images, tmp_path):
    """TSQ trained as the paper's two steps (the schedule: float step 1, solve, ternary step 2)."""
    imgs, masks = data
    torch.manual_seed(0)
    scheme = {"weight": "tsq", "act": "tsq", "weight_args": {"solve_iters": 3, "max_cols": 256}}
    model = quantize_model(FCN(3, width=4, depth=2), scheme)
    cbs = scheme_callbacks(model, scheme)  # TSQ's schedule (+ IAO's for the 8-bit first/last layers)
    (sched,) = [c for c in cbs if type(c).__name__ == "TSQSchedule"]
    model = train_briefly(model, imgs, masks, steps=16, callbacks=cbs)
    assert sched.phase == 2 and all("final" in r for r in sched.report.values())
    assert_runtime_agrees(model, test_images, tmp_path / "tsq.slq", "tsq two-step")


def test_dorefa_gradient_quantization_leaves_export_unchanged(data, test_images, tmp_path):
    imgs, masks = data
    torch.manual_seed(0)
    model = train_briefly(quantize_model(FCN(3, width=4, depth=2),
                                         {"weight": "dorefa", "act": "dorefa", "g_bits": 6}),
                          imgs, masks)
    gq = [m for m in model.modules() if getattr(m, "grad_quant", None) is not None]
    assert gq
    assert_runtime_agrees(model, test_images, tmp_path / "g.slq", "dorefa g6")
    for m in gq:  # the same weights without the gradient quantizers export to the same file
        m.grad_quant = None
    export_model(model, tmp_path / "plain.slq")
    assert (tmp_path / "g.slq").read_bytes() == (tmp_path / "plain.slq").read_bytes()


@pytest.mark.parametrize("method", ["binarynet", "hwgq"])
def test_first_last_same_exports_for_image_unsafe_acts(method, data, test_images, tmp_path):
    """With first_last="same" a sign / HWGQ scheme still gets an 8-bit first layer; it exports and
    the runtime agrees with torch."""
    imgs, masks = data
    torch.manual_seed(3)
    scheme = {"weight": method, "act": method, "first_last": "same"}
    steps = 40 if method == "binarynet" else 12
    model = train_briefly(quantize_model(FCN(3, width=4, depth=2), scheme), imgs, masks, steps=steps)
    export_model(model, tmp_path / "s.slq")
    m = load_model(tmp_path / "s.slq", kernels="ref")
    for img in test_images:
        with torch.no_grad():
            logit = model(to_tensor(img))[0, 0].numpy()
        flipped = m.foreground(img) != (logit > 0)
        assert flipped.mean() <= 0.02 and np.all(np.abs(logit[flipped]) < 0.1), method


@pytest.fixture(scope="module")
def transpose_model(data):
    imgs, masks = data
    torch.manual_seed(1)
    model = quantize_model(FCN(3, width=4, depth=3, up="transpose"), {"weight": "twn", "act": "dorefa"})
    return train_briefly(model, imgs, masks)


def test_transposed_conv_depth3(transpose_model, test_images, tmp_path):
    export_model(transpose_model, tmp_path / "t.slq")
    m = load_model(tmp_path / "t.slq")
    for img in test_images:
        assert np.mean(m.foreground(img) == torch_foreground(transpose_model, img)) >= 0.995


def test_float_activations_are_calibrated(data, test_images, tmp_path):
    """The default config's scheme (INQ weights, float activations): post-training 8-bit activations."""
    imgs, masks = data
    torch.manual_seed(2)
    scheme = {"weight": "inq", "act": None, "w_bits": 7, "first_last": "same"}
    model = train_briefly(quantize_model(FCN(3, width=4, depth=2), scheme), imgs, masks)
    with pytest.raises(ValueError, match="calib"):
        export_model(model, tmp_path / "x.slq")
    info = export_model(model, tmp_path / "c.slq", calib=imgs)
    assert info["calibrated_inputs"] and not info["exact"]
    m = load_model(tmp_path / "c.slq")
    agree = [np.mean(m.foreground(img) == torch_foreground(model, img)) for img in test_images]
    assert min(agree) >= 0.98, agree


def test_non_fcn_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="FCN"):
        export_model(torch.nn.Sequential(torch.nn.Conv2d(3, 1, 1)), tmp_path / "x.slq")


def test_export_takes_the_one_postprocess_type(data, tmp_path):
    """export_model stores a PostprocessConfig's instance parameters (not the app's tune switch),
    the config's defaults when given none, and refuses anything else (a dict, a look-alike)."""
    from seglearn.config import PostprocessConfig
    from seglearn.runtime.slq import read_slq

    torch.manual_seed(0)
    model = train_briefly(quantize_model(FCN(3, width=4, depth=2), {"weight": "twn", "act": "dorefa"}),
                          *data, steps=2)
    export_model(model, tmp_path / "d.slq")
    export_model(model, tmp_path / "p.slq", postprocess=PostprocessConfig(min_area=7, split_h=3.0))
    default = read_slq(tmp_path / "d.slq")[0]["postprocess"]
    given = read_slq(tmp_path / "p.slq")[0]["postprocess"]
    expected = PostprocessConfig().to_dict()
    del expected["tune"]
    assert default == expected and default["min_area"] == 30
    assert given == {**expected, "min_area": 7, "split_h": 3.0}
    for bad in ({"min_area": 7}, object()):
        with pytest.raises(TypeError, match="postprocess must be a seglearn.config.PostprocessConfig"):
            export_model(model, tmp_path / "x.slq", postprocess=bad)
    assert not (tmp_path / "x.slq").exists()
