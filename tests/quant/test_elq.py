"""ELQ (Zhou et al. 2018): least-squares scale, incremental portion, loss-error term, callback."""

import numpy as np
import pytest
import torch

from seglearn.quant.elq import ELQWeight, fit_scale, ternary_fit
from seglearn.quant.schedules import ELQCallback


def scan_best_alpha(a, m):
    """Brute-force scan of the squared error over alpha with the assignment m fixed."""
    grid = np.linspace(0, 2 * a.max(), 20001)
    err = ((a[None, :] - grid[:, None] * m[None, :]) ** 2).sum(1)
    return grid[np.argmin(err)], grid[1] - grid[0]


@pytest.mark.parametrize("bits", [2, 3])
def test_alpha_is_least_squares_optimum_for_the_assignment(bits):
    rng = np.random.default_rng(0)
    a = np.abs(rng.normal(size=200))
    alpha, m = fit_scale(torch.from_numpy(a), bits)
    m = m.numpy()
    assert set(np.unique(m)) <= ({0.0, 1.0} if bits == 2 else {0.0, 1.0, 2.0, 4.0})
    best, step = scan_best_alpha(a, m)
    assert float(alpha) == pytest.approx(best, abs=step)
    assert float(alpha) == pytest.approx((a * m).sum() / (m * m).sum())


def test_ternary_fit_is_the_exhaustive_optimum():
    rng = np.random.default_rng(1)
    a = np.abs(rng.normal(size=50))
    alpha, m = ternary_fit(torch.from_numpy(a))
    err = ((a - float(alpha) * m.numpy()) ** 2).sum()
    s = np.sort(a)[::-1]
    # every "keep the k largest" assignment at its own best alpha; the optimum is among them
    brute = min(((s - (s[:k].mean() * (np.arange(50) < k))) ** 2).sum() for k in range(1, 51))
    assert err == pytest.approx(brute)


def test_forward_values_and_portion():
    torch.manual_seed(0)
    w = torch.randn(6, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    q = ELQWeight(bits=2, portion=0.5)
    y = q(w).detach()
    wn = w.detach().numpy().ravel()
    changed = y.numpy().ravel() != wn
    kept = np.argsort(-np.abs(wn))[: len(wn) // 2]
    mask = np.zeros(len(wn), bool)
    mask[kept] = True
    assert not changed[~mask].any()  # the small half stays full precision
    alpha, m = ternary_fit(torch.from_numpy(np.abs(wn[mask])))
    np.testing.assert_allclose(y.numpy().ravel()[mask], float(alpha) * np.sign(wn[mask]) * m.numpy())
    q.portion = 1.0
    assert torch.unique(q(w).detach()).numel() <= 3
    info = q.export_info(w.detach())
    np.testing.assert_allclose(info.dequantize(), q(w).detach().numpy())
    q3 = ELQWeight(bits=3)
    info3 = q3.export_info(w.detach())
    assert set(np.unique(info3.codes)) <= {-4, -2, -1, 0, 1, 2, 4}
    np.testing.assert_allclose(info3.dequantize(), q3(w).detach().numpy())


def test_loss_error_term_value_and_gradient():
    torch.manual_seed(2)
    w = torch.randn(3, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    q = ELQWeight(beta=0.05).train()
    assert q.loss_error() is None
    up = torch.randn_like(w)
    (q(w) * up).sum().backward()  # the hook stores g = dL/dW_q = up
    torch.testing.assert_close(q.last_grad, up)
    w.grad = None
    wq = q(w)  # a new step's forward: the term uses this step's W, W_q and the last g
    term = q.loss_error()
    wn, qn, gn = w.detach().numpy(), wq.detach().numpy(), up.numpy()
    oracle = 0.05 * (abs((gn * (qn - wn)).sum()) + ((wn - qn) ** 2).sum())
    assert term.item() == pytest.approx(oracle)
    term.backward()
    s = np.sign((gn * (qn - wn)).sum())
    np.testing.assert_allclose(w.grad.numpy(), 0.05 * (-s * gn + 2 * (wn - qn)))


def test_callback_grows_portion_and_adds_the_term():
    q = ELQWeight()
    cb = q.make_callback()
    assert isinstance(cb, ELQCallback)
    model = torch.nn.Linear(4, 4)
    cb.on_train_start(model, 8)
    seen = []
    w = torch.randn(4, 4, requires_grad=True)
    for step in range(8):
        cb.before_step(model, step, 8)
        seen.append(q.portion)
        q(w).sum().backward()
        assert cb.extra_loss(model, step, 8) is not None
    assert seen == [0.5, 0.5, 0.75, 0.75, 0.875, 0.875, 1.0, 1.0]
    cb.on_train_end(model)
    assert q.portion == 1.0 and q.loss_error() is None


def test_bad_arguments():
    with pytest.raises(ValueError, match="bits"):
        ELQWeight(bits=4)
    with pytest.raises(ValueError, match="portion"):
        ELQWeight(portion=1.5)
    with pytest.raises(ValueError, match="schedule"):
        ELQWeight(schedule=(0.5, 0.9))
