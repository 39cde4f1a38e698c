"""SYQ (Faraone et al. 2018): codes, per-position / per-row scales, alpha gradient, lazy alpha."""

import numpy as np
import pytest
import torch

from seglearn.quant.syq import SYQAct, SYQWeight


def np_codes(w, eta):
    if eta == 0:
        return np.where(w >= 0, 1.0, -1.0)
    return np.sign(w) * (np.abs(w) > eta * np.abs(w).max())


@pytest.mark.parametrize("granularity,bits", [("pixel", 2), ("row", 2), ("pixel", 1)])
def test_forward_scales_and_alpha_gradient(granularity, bits):
    torch.manual_seed(0)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    q = SYQWeight(bits=bits, granularity=granularity).double()
    y = q(w)
    wn = w.detach().numpy()
    c = np_codes(wn, 0.05 if bits == 2 else 0.0)
    dims = (0, 1) if granularity == "pixel" else (1, 2, 3)
    alpha = np.abs(wn).mean(axis=dims)  # initialised to the group's mean |W|
    np.testing.assert_allclose(q.alpha.detach().numpy(), alpha)
    a_b = alpha[None, None] if granularity == "pixel" else alpha[:, None, None, None]
    np.testing.assert_allclose(y.detach().numpy(), a_b * c)
    g = torch.randn_like(w)
    (y * g).sum().backward()
    # alpha's gradient: the group's gradients weighted by the codes; W: straight through
    np.testing.assert_allclose(q.alpha.grad.numpy(), (g.numpy() * c).sum(axis=dims))
    np.testing.assert_allclose(w.grad.numpy(), g.numpy())
    info = q.export_info(w.detach())
    np.testing.assert_allclose(info.dequantize(), y.detach().numpy())
    assert set(np.unique(info.codes)) <= ({-1, 1} if bits == 1 else {-1, 0, 1})


def test_ternary_threshold_zeroes_small_weights():
    w = torch.tensor([[[[1.0, 0.04]], [[-0.06, -0.01]]]])  # max|W| = 1, eta max = 0.05
    c = SYQWeight(eta=0.05).codes(w)
    assert c.flatten().tolist() == [1.0, 0.0, -1.0, 0.0]


def test_alpha_learns_and_state_dict_round_trips_to_a_fresh_quantizer():
    torch.manual_seed(1)
    w = torch.randn(4, 2, 3, 3)
    q = SYQWeight()
    opt = torch.optim.SGD(q.parameters(), lr=0.1)  # built before alpha has its shape
    target = torch.randn(4, 2, 3, 3)
    before = ((q(w) - target) ** 2).sum().item()
    for _ in range(5):
        opt.zero_grad()
        ((q(w) - target) ** 2).sum().backward()
        opt.step()
    assert ((q(w) - target) ** 2).sum().item() < before
    fresh = SYQWeight()
    fresh.load_state_dict(q.state_dict())
    assert fresh.alpha.shape == (3, 3)
    torch.testing.assert_close(fresh(w), q(w))
    assert SYQWeight(shape=(4, 2, 3, 3), granularity="row").alpha.shape == (4,)


def test_act_uniform_levels_and_clipped_gradient():
    q = SYQAct(bits=2)
    x = torch.tensor([-0.5, 0.1, 0.2, 0.6, 0.9, 1.5], requires_grad=True)
    y = q(x)
    np.testing.assert_allclose(y.detach().numpy(),
                               np.round(np.clip(x.detach().numpy(), 0, 1) * 3) / 3, rtol=1e-6)
    y.sum().backward()
    assert x.grad.tolist() == [0, 1, 1, 1, 1, 0]
    info = q.export_info()
    codes = (x.detach().numpy()[:, None] > info.thresholds).sum(1)
    np.testing.assert_allclose(info.levels[codes], y.detach().numpy(), rtol=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="granularity"):
        SYQWeight(granularity="column")
    with pytest.raises(ValueError, match="binary"):
        SYQWeight(bits=3)
    with pytest.raises(ValueError, match="eta"):
        SYQWeight(bits=1, eta=0.1)
    q = SYQWeight()
    q(torch.randn(2, 2, 3, 3))
    with pytest.raises(ValueError, match="alpha has shape"):
        q(torch.randn(2, 2, 5, 5))
