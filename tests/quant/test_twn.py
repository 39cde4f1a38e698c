"""TWN: Delta = 0.7 mean|W| and alpha = mean of |W| above Delta, against numpy; STE gradient."""

import numpy as np
import pytest
import torch

from seglearn.quant import get_quantizer


def np_twn(w, per_channel=False):
    groups = w.reshape(w.shape[0], -1) if per_channel else w.reshape(1, -1)
    out = np.zeros_like(groups)
    alphas = []
    for i, g in enumerate(groups):
        delta = 0.7 * np.abs(g).mean()
        big = np.abs(g) > delta
        alpha = np.abs(g[big]).mean()
        out[i] = alpha * np.sign(g) * big
        alphas.append(alpha)
    return out.reshape(w.shape), np.array(alphas)


@pytest.mark.parametrize("per_channel", [False, True])
def test_twn_matches_numpy(per_channel):
    torch.manual_seed(0)
    w = torch.randn(8, 4, 3, 3, dtype=torch.float64)
    q = get_quantizer("twn", kind="weight", per_channel=per_channel)
    expect, alphas = np_twn(w.numpy(), per_channel)
    np.testing.assert_allclose(q(w).numpy(), expect, rtol=1e-12)
    info = q.export_info(w)
    assert set(np.unique(info.codes)) <= {-1, 0, 1}
    np.testing.assert_allclose(np.atleast_1d(info.scale), alphas, rtol=1e-12)
    np.testing.assert_allclose(info.dequantize(), expect, rtol=1e-12)
    # by hand: |w| = [3, 3, 6, 0] -> Delta = 0.7 * 3 = 2.1, kept {3, 3, 6}, alpha = 4
    small = torch.tensor([[3.0, -3.0, 6.0, 0.0]])
    assert get_quantizer("twn", kind="weight")(small).tolist() == [[4.0, -4.0, 4.0, 0.0]]


def test_twn_gradient_is_straight_through():
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    y = get_quantizer("twn", kind="weight")(w)
    g = torch.randn_like(y)
    (y * g).sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), g.numpy())


def test_twn_all_zero_layer_and_bad_args():
    assert get_quantizer("twn", kind="weight")(torch.zeros(2, 2, 3, 3)).abs().sum() == 0
    with pytest.raises(ValueError, match="twn"):
        get_quantizer("twn", kind="weight", bits=3)
    with pytest.raises(ValueError, match="twn"):
        get_quantizer("twn", kind="act")
