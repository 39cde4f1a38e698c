"""featq (Sun et al. 2018): floor quantization with statistics-set beta, power with learnable a."""

import numpy as np
import pytest
import torch
from torch.autograd import gradcheck

from seglearn.quant.convert import scheme_callbacks
from seglearn.quant.featq import FeatQFloor, FeatQPower, featq_act, power


def np_floor(x, m, bits, signed=False):
    top = 2 ** (bits - 1) - 1 if signed else 2**bits - 1
    lo = -(2 ** (bits - 1)) if signed else 0
    beta = (top / m)[None, :, None, None]
    return np.clip(np.floor(x * beta), lo, top) / beta


@pytest.mark.parametrize("signed", [False, True])
def test_floor_matches_oracle_and_ema(signed):
    torch.manual_seed(0)
    x1 = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    x1 = x1 if signed else x1.relu()
    q = FeatQFloor(bits=3, signed=signed, momentum=0.25).double()
    y1 = q(x1).detach().numpy()
    m1 = np.abs(x1.numpy()).max(axis=(0, 2, 3))
    np.testing.assert_allclose(y1, np_floor(x1.numpy(), m1, 3, signed))
    x2 = 3 * x1
    q(x2)
    m2 = 0.75 * m1 + 0.25 * np.abs(x2.numpy()).max(axis=(0, 2, 3))
    np.testing.assert_allclose(q.running_max.numpy(), m2)
    q.eval()
    np.testing.assert_allclose(q(x2).detach().numpy(), np_floor(x2.numpy(), m2, 3, signed))


def test_floor_gradient_is_straight_through_and_codes_count():
    x = torch.rand(2, 2, 3, 3, requires_grad=True)
    q = FeatQFloor(bits=2)
    y = q(x)
    y.sum().backward()
    assert torch.all(x.grad == 1)
    for c in range(2):
        assert torch.unique(y[:, c]).numel() <= 4


def test_power_gradcheck_double():
    torch.manual_seed(1)
    x = torch.randn(12, dtype=torch.float64)
    x = (x + 0.2 * torch.sign(x)).requires_grad_()  # keep away from the kink at 0
    a = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    assert gradcheck(power, (x, a))
    a2 = torch.tensor(1.6, dtype=torch.float64, requires_grad=True)
    assert gradcheck(power, (x, a2))


def test_power_closed_form_and_value_at_zero():
    x = torch.tensor([-2.0, -0.5, 0.0, 0.5, 3.0], dtype=torch.float64, requires_grad=True)
    a = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    y = power(x, a)
    xn = x.detach().numpy()
    np.testing.assert_allclose(y.detach().numpy(), np.sign(xn) * np.abs(xn) ** 0.5)
    y.sum().backward()
    with np.errstate(divide="ignore", invalid="ignore"):
        dx = 0.5 * np.abs(xn) ** -0.5
        da = np.sign(xn) * np.abs(xn) ** 0.5 * np.log(np.abs(xn))
    dx[2], da[2] = 0.0, 0.0  # the defined values at x = 0
    np.testing.assert_allclose(x.grad.numpy(), dx)
    assert a.grad.item() == pytest.approx(da.sum())


def test_power_quantizer_lookup_table_reproduces_forward():
    torch.manual_seed(2)
    x = torch.rand(2, 3, 4, 4, dtype=torch.float64) * 5
    q = featq_act(mode="power", bits=3, a_init=0.6).double()
    y = q(x)
    y.sum().backward()
    assert q.a.grad is not None and q.a.grad.item() != 0.0
    info = q.export_info()
    assert info.levels.shape == (3, 8) and info.thresholds.shape == (3, 7)
    xn = x.detach().numpy()
    # floor's code is #(x >= t) per channel; the table maps it to the power output
    codes = (xn[..., None] >= info.thresholds[None, :, None, None, :]).sum(-1)
    table = info.levels[np.arange(3)[None, :, None, None], codes]
    np.testing.assert_allclose(table, y.detach().numpy(), rtol=1e-12, atol=1e-12)


def test_state_dict_round_trip_sizes_lazy_buffer():
    q = FeatQPower(a_init=0.8)
    q(torch.rand(1, 5, 2, 2) * 2)
    fresh = featq_act(mode="power")
    fresh.load_state_dict(q.state_dict())
    assert fresh.running_max.shape == (5,) and float(fresh.a.detach()) == pytest.approx(0.8)
    x = torch.rand(1, 5, 2, 2)
    torch.testing.assert_close(fresh.eval()(x), q.eval()(x))


def test_exponent_stays_positive_and_levels_increase():
    """Issue 21.6: a = -0.2 gave NaN at 0 and decreasing levels. A stored a outside the range is
    clamped in the forward and export; training pushes a down but the callback projects it back."""
    x = torch.rand(2, 3, 4, 4) * 4
    x[0, :, 0, 0] = 0.0
    q = FeatQPower(bits=3)
    q(x)
    with torch.no_grad():
        q.a.fill_(-0.2)
    y = q(x)
    assert torch.isfinite(y).all() and torch.all(y[0, :, 0, 0] == 0)
    info = q.export_info()
    assert info.extra["a"] == pytest.approx(0.1)
    assert np.all(np.diff(info.levels, axis=1) > 0)

    q = FeatQPower(bits=3, a_init=0.5)
    (cb,) = scheme_callbacks(torch.nn.Sequential(q))
    opt = torch.optim.SGD(q.parameters(), lr=5.0)
    for step in range(20):  # -sum(y) on inputs < 1 rewards a smaller a without bound
        opt.zero_grad()
        (-q(x * 0.2).sum()).backward()
        opt.step()
        cb.after_step(torch.nn.Sequential(q), step, 20)
        assert q.a_min <= float(q.a.detach()) <= q.a_max
    assert float(q.a.detach()) == pytest.approx(q.a_min)  # it did hit the bound
    assert np.all(np.diff(q.export_info().levels, axis=1) > 0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="mode"):
        featq_act(mode="log")
    with pytest.raises(ValueError, match="a_init"):
        FeatQPower(a_init=0.0)
    with pytest.raises(ValueError, match="a_init"):
        FeatQPower(a_init=20.0)
    with pytest.raises(ValueError, match="a_min"):
        FeatQPower(a_min=0.0)
    with pytest.raises(ValueError, match="bits"):
        FeatQFloor(bits=1)
    with pytest.raises(ValueError, match="channels"):
        q = FeatQFloor()
        q(torch.rand(1, 3, 2, 2))
        q(torch.rand(1, 4, 2, 2))
