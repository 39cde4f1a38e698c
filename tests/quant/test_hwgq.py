"""HWGQ: the half-wave Gaussian levels (the paper's 2-bit values), quantization and clipped ReLU."""

import numpy as np
import pytest
import torch

from seglearn.quant import get_quantizer
from seglearn.quant.hwgq import fit_hwgq_step, hwgq_levels, hwgq_thresholds


def np_mse(delta, bits, x, dx):
    """Quantization MSE on the positive half of N(0,1), by trapezoid integration on a grid."""
    n = 2**bits - 1
    q = np.clip(np.ceil(x / delta - 0.5), 1, n) * delta
    pdf = np.exp(-x**2 / 2) / np.sqrt(2 * np.pi)
    return np.trapezoid((x - q) ** 2 * pdf, dx=dx)


def test_two_bit_levels_are_the_papers():
    np.testing.assert_allclose(hwgq_levels(2), [0.0, 0.538, 1.076, 1.614], rtol=1e-12)
    np.testing.assert_allclose(hwgq_thresholds(2), [0.0, 0.807, 1.345], rtol=1e-12)
    assert fit_hwgq_step(2) == pytest.approx(0.538, abs=1e-3)  # the fit agrees with the paper


@pytest.mark.parametrize("bits", [1, 2, 3])
def test_step_minimises_half_gaussian_mse(bits):
    x = np.linspace(0, 9, 180001)
    d = fit_hwgq_step(bits)
    grid = np.linspace(0.5 * d, 1.5 * d, 201)
    best = grid[np.argmin([np_mse(g, bits, x, x[1]) for g in grid])]
    assert abs(best - d) <= (grid[1] - grid[0])
    if bits == 1:  # closed form: E[x | x > 0] = sqrt(2/pi)
        assert d == pytest.approx(np.sqrt(2 / np.pi), abs=1e-6)


@pytest.mark.parametrize("bits", [1, 2, 3])
def test_act_forward_and_clipped_relu_gradient(bits):
    x = (torch.randn(2, 3, 8, 8, dtype=torch.float64) * 1.5).requires_grad_(True)
    q = get_quantizer("hwgq", kind="act", bits=bits)
    y = q(x)
    xn = x.detach().numpy()
    levels, th = hwgq_levels(bits), hwgq_thresholds(bits)
    codes = (xn[..., None] > th).sum(-1)  # the export contract: code = #(x > t)
    np.testing.assert_allclose(y.detach().numpy(), levels[codes], atol=1e-12)
    y.sum().backward()
    qmax = levels[-1]
    np.testing.assert_array_equal(x.grad.numpy(), ((xn > 0) & (xn <= qmax)).astype(float))


def test_weights_are_binary_with_per_channel_alpha():
    w = torch.randn(4, 3, 3, 3)
    y = get_quantizer("hwgq", kind="weight")(w).numpy()
    alpha = np.abs(w.numpy()).reshape(4, -1).mean(1)[:, None, None, None]
    np.testing.assert_allclose(y, np.where(w.numpy() >= 0, 1, -1) * alpha, rtol=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="hwgq"):
        get_quantizer("hwgq", kind="weight", bits=2)
    with pytest.raises(ValueError, match="hwgq"):
        get_quantizer("hwgq", kind="act", bits=0)
