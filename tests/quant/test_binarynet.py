"""BinaryNet: sign(0)=+1, hardtanh-clipped gradient, optional alpha, shadow-weight clipping."""

import numpy as np
import pytest
import torch
from torch import nn

from seglearn.quant import get_quantizer
from seglearn.quant.convert import quantize_model, scheme_callbacks
from seglearn.quant.schedules import BinaryNetClip


def test_weight_forward_and_gradient_vs_numpy():
    w = torch.randn(6, 3, 3, 3, dtype=torch.float64) * 1.5
    w[0, 0, 0, 0] = 0.0
    w.requires_grad_(True)
    y = get_quantizer("binarynet", kind="weight")(w)
    g = torch.randn_like(y)
    (y * g).sum().backward()
    wn = w.detach().numpy()
    np.testing.assert_array_equal(y.detach().numpy(), np.where(wn >= 0, 1.0, -1.0))
    assert y[0, 0, 0, 0].item() == 1.0
    np.testing.assert_array_equal(w.grad.numpy(), g.numpy() * (np.abs(wn) <= 1))


def test_act_sign_and_clipped_gradient():
    x = torch.tensor([-1.5, -1.0, -0.2, 0.0, 0.7, 2.0], dtype=torch.float64, requires_grad=True)
    y = get_quantizer("binarynet", kind="act")(x)
    y.sum().backward()
    assert y.tolist() == [-1, -1, -1, 1, 1, 1]
    assert x.grad.tolist() == [0, 1, 1, 1, 1, 0]


def test_optional_per_channel_alpha_is_mean_abs():
    w = torch.randn(5, 2, 3, 3)
    q = get_quantizer("binarynet", kind="weight", scale=True)
    alpha = np.abs(w.numpy()).reshape(5, -1).mean(1)
    expect = np.where(w.numpy() >= 0, 1.0, -1.0) * alpha[:, None, None, None]
    np.testing.assert_allclose(q(w).numpy(), expect, rtol=1e-6)
    info = q.export_info(w)
    assert info.axis == 0 and set(np.unique(info.codes)) <= {-1, 1}
    np.testing.assert_allclose(info.dequantize(), expect, rtol=1e-6)


def test_clip_callback_clamps_shadow_weights_after_step():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.Conv2d(4, 1, 1))
    qm = quantize_model(model, {"weight": "binarynet", "first_last": "float"})
    cbs = scheme_callbacks(qm, {})
    assert sum(isinstance(c, BinaryNetClip) for c in cbs) == 1  # one per model, not per layer
    with torch.no_grad():
        for m in qm.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.mul_(10)
    cbs[0].after_step(qm, 0, 1)
    assert qm[2].weight.abs().max().item() <= 1.0
    # the float first/last layers are not BinaryNet layers and are left alone
    assert qm[0].weight.abs().max().item() > 1.0


def test_bad_arguments():
    with pytest.raises(ValueError, match="binarynet"):
        get_quantizer("binarynet", kind="weight", bits=2)
    with pytest.raises(ValueError, match="binarynet"):
        get_quantizer("binarynet", kind="weight", scale=True)(torch.randn(5))
