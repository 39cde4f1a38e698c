"""DoReFa: tanh weight mapping, 1-bit weights, [0,1] activations, gradient quantization."""

import numpy as np
import pytest
import torch

from seglearn.quant import get_quantizer
from seglearn.quant.dorefa import DoReFaGrad, dorefa_quantize_grad


@pytest.mark.parametrize("k", [2, 3, 4])
def test_weight_tanh_mapping_and_level_count(k):
    w = torch.randn(6, 4, 3, 3, dtype=torch.float64)
    n = 2**k - 1
    t = np.tanh(w.numpy())
    wp = t / (2 * np.abs(t).max()) + 0.5
    expect = 2 * np.round(n * wp) / n - 1
    q = get_quantizer("dorefa", kind="weight", bits=k)
    y = q(w).numpy()
    np.testing.assert_allclose(y, expect, atol=1e-12)
    assert len(np.unique(y)) <= 2**k and y.min() >= -1 and y.max() <= 1
    # the extreme weight maps to +-1 exactly
    assert np.isclose(np.abs(y).max(), 1.0)
    info = q.export_info(w)
    assert info.codes.min() >= 0 and info.codes.max() <= n
    np.testing.assert_allclose(info.dequantize(), expect, atol=1e-12)
    # the signed odd-code form used by the kernels: (2u - n) * (1/n)
    np.testing.assert_allclose((2 * info.codes - n) / n, expect, atol=1e-12)


def test_weight_one_bit_is_sign_times_mean_abs():
    w = torch.randn(5, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    y = get_quantizer("dorefa", kind="weight", bits=1)(w)
    e = np.abs(w.detach().numpy()).mean()
    np.testing.assert_allclose(y.detach().numpy(), np.where(w.detach().numpy() >= 0, e, -e))
    g = torch.randn_like(y)
    (y * g).sum().backward()
    # E is a constant (stop_gradient) and the sign is identity-STE: dW = E * g
    np.testing.assert_allclose(w.grad.numpy(), e * g.numpy())


@pytest.mark.parametrize("k", [1, 2, 4])
def test_act_quantizes_clipped_input(k):
    x = (torch.randn(2, 3, 5, 5, dtype=torch.float64) * 0.8 + 0.5).requires_grad_(True)
    y = get_quantizer("dorefa", kind="act", bits=k)(x)
    n = 2**k - 1
    xn = x.detach().numpy()
    np.testing.assert_allclose(y.detach().numpy(), np.round(n * np.clip(xn, 0, 1)) / n)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), ((xn >= 0) & (xn <= 1)).astype(float))


def test_gradient_quantization_grid_and_unbiasedness():
    g = torch.randn(3, 2, 8, 8, dtype=torch.float64)
    k = 4
    n = 2**k - 1
    gen = torch.Generator().manual_seed(1)
    gq = dorefa_quantize_grad(g, k, gen).numpy()
    m = np.abs(g.numpy()).reshape(3, -1).max(1)[:, None, None, None]
    u = (gq / (2 * m) + 0.5) * n  # must be integer codes 0..n
    np.testing.assert_allclose(u, np.round(u), atol=1e-9)
    assert u.min() > -1e-9 and u.max() < n + 1e-9
    # stochastic rounding: the average over many draws approaches the gradient
    mean = np.mean([dorefa_quantize_grad(g, k, gen).numpy() for _ in range(300)], axis=0)
    assert np.abs(mean - g.numpy()).max() < 0.15 * m.max()
    # as a module: identity forward, quantized backward
    x = torch.randn(2, 4, requires_grad=True)
    mod = DoReFaGrad(bits=2, seed=0)
    y = mod(x)
    assert torch.equal(y, x)
    y.backward(torch.tensor([[0.5, -1.0, 0.2, 0.0], [1.0, 1.0, 1.0, 1.0]]))
    assert x.grad[1].tolist() == [1.0, 1.0, 1.0, 1.0]  # a constant row is already on the grid
    assert set(np.round(x.grad[0].numpy() * 3 / 2, 6)) <= {-1.5, -0.5, 0.5, 1.5}


def test_bad_bits():
    with pytest.raises(ValueError, match="dorefa"):
        get_quantizer("dorefa", kind="act", bits=0)
