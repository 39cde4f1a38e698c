"""TSQ (Wang et al. 2018): Gaussian-tail Lloyd levels, sparse act quant, step-2 solver."""

import numpy as np
import pytest
import torch
from scipy import integrate
from scipy.stats import norm
from torch import nn

from seglearn.quant.tsq import (TSQAct, TSQWeight, gaussian_tail_lloyd, set_weight_quant_active,
                                tsq_alpha, tsq_objective, tsq_solve_layer, tsq_transform,
                                twn_rows)


@pytest.mark.parametrize("bits,theta", [(2, 0.5), (1, 0.5), (3, 0.7)])
def test_lloyd_levels_satisfy_centroid_and_midpoint_conditions(bits, theta):
    eps, levels, thr = gaussian_tail_lloyd(bits, theta)
    assert eps == pytest.approx(norm.ppf(theta)) and thr[0] == eps and levels[0] == 0
    assert len(levels) == 2**bits
    q = levels[1:]
    np.testing.assert_allclose(thr[1:], (q[1:] + q[:-1]) / 2)
    edges = np.concatenate([thr, [np.inf]])
    for i, lv in enumerate(q):  # each level is the mean of N(0,1) over its interval (quad oracle)
        mass = integrate.quad(norm.pdf, edges[i], edges[i + 1])[0]
        first = integrate.quad(lambda t: t * norm.pdf(t), edges[i], edges[i + 1])[0]
        assert lv == pytest.approx(first / mass, rel=1e-6)


def test_act_sparsity_values_and_gradient():
    torch.manual_seed(0)
    q = TSQAct(bits=2, theta=0.6)
    x = torch.randn(20000, dtype=torch.float64, requires_grad=True)
    y = q(x)
    eps, levels, thr = gaussian_tail_lloyd(2, 0.6)
    xn = x.detach().numpy()
    np.testing.assert_allclose(y.detach().numpy(), levels[np.searchsorted(thr, xn, side="left")],
                               rtol=1e-6)
    assert (y == 0).double().mean().item() == pytest.approx(0.6, abs=0.02)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), ((xn > eps) & (xn <= levels[-1])).astype(float))
    info = q.export_info()
    assert info.levels.shape == (4,) and info.thresholds.shape == (3,)


def test_weight_per_row_ternary_and_inactive_passthrough():
    torch.manual_seed(1)
    w = torch.randn(5, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    y = TSQWeight()(w).detach().numpy()
    wn = w.detach().numpy().reshape(5, -1)
    for r in range(5):
        keep = np.abs(wn[r]) > 0.7 * np.abs(wn[r]).mean()
        np.testing.assert_allclose(y.reshape(5, -1)[r], np.sign(wn[r]) * keep * np.abs(wn[r][keep]).mean())
    assert torch.equal(TSQWeight(active=False)(w), w)
    info = TSQWeight().export_info(w.detach())
    np.testing.assert_allclose(info.dequantize(), y)


def test_alpha_is_the_closed_form_optimum():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(8, 50))
    w_hat = rng.integers(-1, 2, size=(4, 8)).astype(float)
    z = rng.normal(size=(4, 50))
    alpha = tsq_alpha(z, w_hat, X)
    v = w_hat @ X
    for r in range(4):  # per row: 1-D least squares of z_r on v_r (numpy lstsq oracle)
        a_ls = np.linalg.lstsq(v[r][:, None], z[r], rcond=None)[0][0]
        assert alpha[r] == pytest.approx(a_ls)


def _problem(seed, n_in=16, n_out=6, n=400):
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(n_out, n_in))
    X = np.maximum(rng.normal(size=(n_in, n)), 0)  # ReLU-like inputs
    return W, X


@pytest.mark.parametrize("with_act", [True, False])
def test_solver_beats_naive_ternarization(with_act):
    W, X = _problem(3)
    _, levels, thr = gaussian_tail_lloyd(2, 0.5)
    lv, th = (levels, thr) if with_act else (None, None)
    pre = W @ X
    pre = (pre - pre.mean(1, keepdims=True)) / pre.std(1, keepdims=True)  # BN-like targets
    Y = pre if lv is None else lv[np.searchsorted(th, pre, side="left")]
    Xs = X / (W @ X).std(1).mean()  # so Y is reachable by alpha * W_hat X
    codes, _ = twn_rows(W)
    naive = tsq_objective(Xs, Y, codes, tsq_alpha(pre, codes, Xs), lv, th)  # TWN codes, best alpha
    w_hat, alpha, info = tsq_solve_layer(Xs, Y, lv, iters=8, act_thresholds=th, W_init=W,
                                         return_info=True)
    assert set(np.unique(w_hat)) <= {-1.0, 0.0, 1.0} and np.all(alpha >= 0)
    final = tsq_objective(Xs, Y, w_hat, alpha, lv, th)
    assert final == pytest.approx(info["final"])
    # the relaxed alternation converges slowly when Q_a is coarse; plain least squares much faster
    assert final < (1.0 if with_act else 0.9) * min(naive, info["initial"])
    assert info["history"][-1] < info["history"][0]
    if lv is None:  # z = Y: the returned alpha is the closed form for the returned W_hat
        np.testing.assert_allclose(alpha, tsq_alpha(Y, w_hat, Xs))


class TinyQConv(nn.Conv2d):
    """Stand-in for a quantized conv: any module with .weight and .weight_quant works."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.weight_quant = TSQWeight()

    def forward(self, x):
        return self._conv_forward(x, self.weight_quant(self.weight), self.bias)


def test_transform_solves_each_layer_and_switches_quantizers_on():
    torch.manual_seed(4)
    model = nn.Sequential(TinyQConv(2, 4, 3, padding=1, bias=False), nn.ReLU(),
                          TinyQConv(4, 3, 3, padding=1, bias=True))
    batches = [torch.randn(2, 2, 6, 6) for _ in range(2)]
    assert set_weight_quant_active(model, False) == 2
    report = tsq_transform(model, batches, iters=4)
    assert set(report) == {"0", "2"}
    for name in ("0", "2"):
        assert report[name]["final"] <= report[name]["initial"]
        layer = model[int(name)]
        assert layer.weight_quant.active
        w = layer.weight.detach().reshape(layer.weight.shape[0], -1)
        for row in w:  # each row is alpha_r * {-1, 0, 1}: the quantizer reproduces it exactly
            assert torch.unique(row.abs()).numel() <= 2
        torch.testing.assert_close(layer.weight_quant(layer.weight), layer.weight)
    with pytest.raises(ValueError, match="TSQWeight"):
        tsq_transform(nn.Sequential(nn.Conv2d(1, 1, 1)), batches)


def test_bad_arguments():
    with pytest.raises(ValueError, match="theta"):
        TSQAct(theta=1.0)
    with pytest.raises(ValueError, match="ternary"):
        TSQWeight(bits=3)
    with pytest.raises(ValueError, match="same N"):
        tsq_solve_layer(np.zeros((3, 5)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="increasing"):
        tsq_solve_layer(np.zeros((3, 5)), np.zeros((2, 5)), act_levels=[0, 2, 1])
