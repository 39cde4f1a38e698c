"""SYQ (Faraone et al. 2018): codes, per-position / per-row scales, alpha gradient, lazy alpha."""

import numpy as np
import pytest
import torch

from seglearn.quant.syq import SYQAct, SYQWeight


def np_codes(w, eta):
    if eta == 0:
        return np.where(w >= 0, 1.0, -1.0)
    return np.sign(w) * (np.abs(w) > eta * np.abs(w).max())


# alpha's groups: the weight dims one alpha spans, and its stored shape, for a (4, 3, 3, 3) weight
GROUPS = {"pixel": ((0, 1), (3, 3)), "row": ((0, 1, 3), (3, 1)), "channel": ((1, 2, 3), (4,))}


def np_alpha_view(alpha, granularity):
    return alpha[:, None, None, None] if granularity == "channel" else alpha[None, None]


@pytest.mark.parametrize("granularity,bits", [("pixel", 2), ("row", 2), ("channel", 2), ("pixel", 1),
                                              ("row", 1)])
def test_forward_scales_and_gradients_match_the_reference(granularity, bits):
    torch.manual_seed(0)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    q = SYQWeight(bits=bits, granularity=granularity).double()
    y = q(w)
    wn = w.detach().numpy()
    eta = 0.05 if bits == 2 else 0.0
    c = np_codes(wn, eta)
    dims, shape = GROUPS[granularity]
    alpha = np.abs(wn).mean(axis=dims, keepdims=True).reshape(shape)  # the group's mean |W|
    np.testing.assert_allclose(q.alpha.detach().numpy(), alpha)
    a_b = np_alpha_view(alpha, granularity)
    np.testing.assert_allclose(y.detach().numpy(), a_b * c)
    g = torch.randn_like(w)
    (y * g).sum().backward()
    gn = g.numpy()
    # alpha: the group's gradients weighted by the codes; W: alpha g where |W| > eta max|W|, else g
    # (julianfaraone/SYQ quantize.py: Sign -> Identity, Mul -> Add, then times the alpha mask)
    np.testing.assert_allclose(q.alpha.grad.numpy(),
                               (gn * c).sum(axis=dims, keepdims=True).reshape(shape))
    kept = np.abs(wn) > eta * np.abs(wn).max()
    np.testing.assert_allclose(w.grad.numpy(), np.where(kept, np.broadcast_to(a_b, wn.shape) * gn, gn))
    info = q.export_info(w.detach())
    np.testing.assert_allclose(info.dequantize(), y.detach().numpy())
    assert set(np.unique(info.codes)) <= ({-1, 1} if bits == 1 else {-1, 0, 1})


def test_weight_gradient_by_hand():
    """One 1x1x1x2 kernel row, ternary: W = [1.0, 0.01], eta 0.05 -> codes [1, 0], alpha = 0.505;
    upstream g = [2, 3] -> dW = [0.505 * 2, 3] (kept weight scaled by alpha, zeroed one passes g),
    dalpha = 2 * 1 + 3 * 0 = 2."""
    w = torch.tensor([[[[1.0, 0.01]]]], dtype=torch.float64, requires_grad=True)
    q = SYQWeight(bits=2, granularity="row").double()
    y = q(w)
    assert q.alpha.shape == (1, 1)
    y.backward(torch.tensor([[[[2.0, 3.0]]]], dtype=torch.float64))
    assert w.grad.flatten().tolist() == pytest.approx([1.01, 3.0])
    assert q.alpha.grad.flatten().tolist() == pytest.approx([2.0])


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
    assert SYQWeight(shape=(4, 2, 3, 3), granularity="channel").alpha.shape == (4,)
    assert SYQWeight(shape=(4, 2, 3, 3), granularity="row").alpha.shape == (3, 1)


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
