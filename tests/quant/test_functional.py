"""STE primitives: values against numpy, gradients against the closed-form surrogates."""

import numpy as np
import pytest
import torch

from seglearn.quant.functional import (check_bits, check_fraction, clamp_masked, clamp_ste,
                                       floor_ste, per_channel_mean_abs, quantize_unit, round_ste,
                                       sign_pm1, sign_ste, sign_ste_identity, ste)


def _grad(fn, x):
    x = x.clone().requires_grad_(True)
    y = fn(x)
    g = torch.randn_like(y)
    (y * g).sum().backward()
    return y.detach(), x.grad, g


def test_ste_value_and_identity_gradient():
    x = torch.randn(50, dtype=torch.float64)
    y, gx, g = _grad(lambda t: ste(t, t**3), x)
    np.testing.assert_allclose(y.numpy(), x.numpy() ** 3)
    np.testing.assert_array_equal(gx.numpy(), g.numpy())
    q = torch.round(x * 3) / 3
    assert torch.equal(ste(x, q), q)  # bit-exact value, so k bits really give <= 2^k values


@pytest.mark.parametrize("fn,oracle", [(round_ste, np.round), (floor_ste, np.floor)])
def test_round_floor_ste(fn, oracle):
    x = torch.randn(200, dtype=torch.float64) * 5
    y, gx, g = _grad(fn, x)
    np.testing.assert_array_equal(y.numpy(), oracle(x.numpy()))
    np.testing.assert_array_equal(gx.numpy(), g.numpy())


def test_sign_ste_zero_is_plus_one_and_gradient_is_hardtanh_clipped():
    x = torch.tensor([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 1.0001, 3.0], dtype=torch.float64)
    y, gx, g = _grad(sign_ste, x)
    np.testing.assert_array_equal(y.numpy(), [-1, -1, -1, 1, 1, 1, 1, 1])
    mask = (np.abs(x.numpy()) <= 1).astype(np.float64)  # ends included
    np.testing.assert_array_equal(gx.numpy(), g.numpy() * mask)
    assert sign_pm1(torch.zeros(3)).tolist() == [1.0, 1.0, 1.0]


def test_sign_identity_gradient():
    x = torch.tensor([-3.0, 0.0, 2.0], dtype=torch.float64)
    y, gx, g = _grad(sign_ste_identity, x)
    assert y.tolist() == [-1.0, 1.0, 1.0]
    np.testing.assert_array_equal(gx.numpy(), g.numpy())


def test_clamp_helpers():
    x = torch.tensor([-1.0, 0.0, 0.3, 1.0, 2.0], dtype=torch.float64)
    y, gx, g = _grad(lambda t: clamp_masked(t, 0.0, 1.0), x)
    np.testing.assert_array_equal(y.numpy(), np.clip(x.numpy(), 0, 1))
    np.testing.assert_array_equal(gx.numpy(), g.numpy() * np.array([0, 1, 1, 1, 0]))
    y, gx, g = _grad(lambda t: clamp_ste(t, 0.0, 1.0), x)
    np.testing.assert_array_equal(y.numpy(), np.clip(x.numpy(), 0, 1))
    np.testing.assert_array_equal(gx.numpy(), g.numpy())


@pytest.mark.parametrize("k", [1, 2, 3, 8])
def test_quantize_unit_matches_formula(k):
    r = torch.rand(300, dtype=torch.float64)
    n = 2**k - 1
    y, gx, g = _grad(lambda t: quantize_unit(t, k), r)
    np.testing.assert_allclose(y.numpy(), np.round(n * r.numpy()) / n)
    assert len(np.unique(y.numpy())) <= 2**k
    np.testing.assert_allclose(gx.numpy(), g.numpy(), rtol=1e-12)  # n * (1/n) up to rounding


def test_per_channel_mean_abs():
    w = torch.randn(4, 3, 2, 2)
    np.testing.assert_allclose(per_channel_mean_abs(w, False).numpy(), np.abs(w.numpy()).mean(),
                               rtol=1e-6)
    pc = per_channel_mean_abs(w, True)
    assert pc.shape == (4, 1, 1, 1)
    np.testing.assert_allclose(pc.reshape(-1).numpy(), np.abs(w.numpy()).reshape(4, -1).mean(1),
                               rtol=1e-6)


def test_argument_checks():
    assert check_bits("m", 4) == 4 and check_bits("m", 4.0) == 4 and check_bits("m", np.int64(3)) == 3
    for bad in (0, -1, 2.5, "x", None, True, 17):
        with pytest.raises(ValueError, match="m: bits"):
            check_bits("m", bad)
    with pytest.raises(ValueError, match="one of"):
        check_bits("m", 3, allowed=(2,))
    assert check_fraction("m", "p", 0.25) == 0.25
    for bad in (-0.1, 1.5, "a", float("nan")):
        with pytest.raises(ValueError, match="m: p"):
            check_fraction("m", "p", bad)
