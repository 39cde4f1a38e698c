"""QDQ ONNX export: ONNX Runtime runs the file and agrees with the torch fake-quant model."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from seglearn.export.onnx_qdq import OnnxExportError, export_onnx
from seglearn.models.fcn import FCN
from seglearn.quant.convert import quantize_model

from .conftest import discs, to_tensor, torch_foreground, train_briefly


def session(path) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def ort_foreground(sess, img: np.ndarray) -> np.ndarray:
    return sess.run(None, {"image": to_tensor(img).numpy()})[0][0, 0] > 0


@pytest.fixture(scope="module")
def test_images():
    # two shapes: H and W are dynamic in the exported graph
    return discs(2, seed=7)[0] + discs(2, h=48, w=32, seed=8)[0]


@pytest.fixture(scope="module")
def iao(data, tmp_path_factory):
    imgs, masks = data
    torch.manual_seed(0)
    model = train_briefly(quantize_model(FCN(3, width=4, depth=2), {"weight": "iao", "act": "iao"}),
                          imgs, masks, steps=12)
    path = tmp_path_factory.mktemp("onnx") / "iao.onnx"
    return model, path, export_onnx(model, path)


def test_iao_runs_in_onnxruntime_and_agrees(iao, test_images):
    model, path, info = iao
    sess = session(path)
    fgs = [torch_foreground(model, img) for img in test_images]
    agree = [np.mean(ort_foreground(sess, img) == fg) for img, fg in zip(test_images, fgs)]
    assert min(agree) >= 0.99, agree
    assert 0.0 < np.mean([f.mean() for f in fgs]) < 1.0  # a non-trivial mask
    assert info["ops"]["Conv"] == 7 and info["ops"]["QuantizeLinear"] >= 7


def test_iao_graph_is_qdq_with_uint8_acts_and_int8_per_channel_weights(iao):
    model, path, _ = iao
    proto = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    q_nodes = [n for n in proto.graph.node if n.op_type == "QuantizeLinear"]
    assert q_nodes and all(inits[n.input[2]].dtype == np.uint8 for n in q_nodes)
    # the first int8 DequantizeLinear holds enc.0.0's weights: scale x codes == torch's folded
    # fake-quant weight (QuantConvBN2d.quantized_weight), channel by channel
    dq = [n for n in proto.graph.node if n.op_type == "DequantizeLinear"
          and n.input[0] in inits and inits[n.input[0]].dtype == np.int8]
    assert len(dq) == 7
    codes, scale = inits[dq[0].input[0]], inits[dq[0].input[1]]
    assert scale.shape == (codes.shape[0],)
    assert [a.i for a in dq[0].attribute if a.name == "axis"] == [0]
    with torch.no_grad():
        w_torch = model.enc[0][0][0].quantized_weight().numpy()
    np.testing.assert_allclose(scale[:, None, None, None] * codes, w_torch, rtol=1e-6, atol=1e-7)
    assert np.abs(codes).max() == 127  # IAO's narrow range: the largest weight of a channel is +-127
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["N", 3, "H", "W"]


@pytest.mark.parametrize("scheme,kw", [({"weight": "twn", "act": "dorefa"}, {"depth": 3, "up": "transpose"}),
                                       ({"weight": "binarynet", "act": "binarynet"}, {"depth": 2})])
def test_other_int8_representable_schemes(scheme, kw, data, test_images, tmp_path):
    imgs, masks = data
    torch.manual_seed(1)
    model = train_briefly(quantize_model(FCN(3, width=4, **kw), scheme), imgs, masks, steps=8)
    export_onnx(model, tmp_path / "m.onnx")
    sess = session(tmp_path / "m.onnx")
    for img in test_images[:2]:  # depth 3 needs multiples of 4: the 32 x 48 images
        assert np.mean(ort_foreground(sess, img) == torch_foreground(model, img)) >= 0.99


@pytest.mark.parametrize("scheme,name", [({"weight": "clipq", "act": "iao"}, "clipq"),
                                         ({"weight": "iao", "act": "tsq"}, "tsq"),
                                         ({"weight": "elq", "act": "hwgq"}, "hwgq")])
def test_unsupported_schemes_name_the_method(scheme, name, data, tmp_path):
    imgs, masks = data
    torch.manual_seed(2)
    model = train_briefly(quantize_model(FCN(3, width=4, depth=2), scheme), imgs[:2], masks[:2], steps=2)
    with pytest.raises(OnnxExportError, match=rf"{name}.*supports"):
        export_onnx(model, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_non_fcn_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="FCN"):
        export_onnx(torch.nn.Sequential(torch.nn.Conv2d(3, 1, 1)), tmp_path / "x.onnx")


def test_float_fcn_exports_as_plain_float_graph(test_images, tmp_path):
    """No quantizers: no Q/DQ, batch norm folded; ONNX Runtime reproduces torch's logits."""
    torch.manual_seed(3)
    model = FCN(3, width=4, depth=2)
    with torch.no_grad():  # non-trivial BN statistics and affine parameters to fold
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2), m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(-1.5, 1.5), m.bias.uniform_(-0.3, 0.3)
    info = export_onnx(model.eval(), tmp_path / "f.onnx")
    assert "QuantizeLinear" not in info["ops"] and "DequantizeLinear" not in info["ops"]
    x = to_tensor(test_images[0])
    got = session(tmp_path / "f.onnx").run(None, {"image": x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), rtol=1e-4, atol=1e-5)
