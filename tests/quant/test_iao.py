"""IAO (Jacob et al. 2018): affine fake quant vs numpy oracles, exact zero, EMA, BN folding."""

import numpy as np
import pytest
import torch
from torch import nn

from seglearn.models.fcn import FCN
from seglearn.quant.convert import quantize_model, scheme_callbacks
from seglearn.quant.iao import (IAOAct, IAOWeight, affine_params, bias_scale, fold_bn, quantize_bias,
                                requant_multiplier)
from seglearn.quant.schedules import IAOSchedule


def np_affine(lo, hi, bits=8):
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    s = (hi - lo) / (2**bits - 1)
    z = int(np.clip(np.round(-lo / s), 0, 2**bits - 1))
    return s, z


def test_affine_params_contain_zero_exactly():
    for lo, hi in [(-0.37, 2.9), (0.5, 3.0), (-4.0, -1.0), (-1.3, 1.3)]:
        s, z = affine_params(lo, hi)
        s_np, z_np = np_affine(lo, hi)
        assert s == pytest.approx(s_np) and z == z_np
        assert isinstance(z, int) and 0 <= z <= 255
        q = IAOAct()
        q.observe(torch.tensor([lo, hi]))
        assert q(torch.zeros(5)).abs().max().item() == 0.0  # 0 is representable exactly


def test_act_round_trip_within_half_step_matches_oracle():
    torch.manual_seed(0)
    x = torch.randn(4, 3, 6, 6, dtype=torch.float64) * 2 + 0.5
    q = IAOAct().double()
    y = q(x).detach().numpy()
    s, z = np_affine(float(x.min()), float(x.max()))
    oracle = s * (np.clip(np.round(x.numpy() / s) + z, 0, 255) - z)
    np.testing.assert_allclose(y, oracle, atol=1e-12)
    assert np.abs(y - x.numpy()).max() <= s / 2 + 1e-12
    info = q.export_info()
    assert info.zero_point == z and info.scale == pytest.approx(s) and not info.signed
    codes = (x.numpy()[..., None] > info.thresholds).sum(-1)
    np.testing.assert_allclose(info.levels[codes], y, atol=1e-12)


def test_ema_first_batch_initialises_then_decays():
    q = IAOAct(decay=0.9)
    q(torch.tensor([-1.0, 2.0]))
    assert (float(q.lo), float(q.hi)) == (-1.0, 2.0)
    q(torch.tensor([-3.0, 4.0]))
    assert float(q.lo) == pytest.approx(0.9 * -1 + 0.1 * -3)
    assert float(q.hi) == pytest.approx(0.9 * 2 + 0.1 * 4)
    q.eval()
    q(torch.tensor([-100.0, 100.0]))  # eval does not move the range
    assert float(q.hi) == pytest.approx(2.2)


def test_act_gradient_is_zero_outside_the_clamp_range():
    q = IAOAct()
    q(torch.tensor([-1.0, 1.0]))
    q.eval()
    x = torch.tensor([-5.0, -0.5, 0.0, 0.7, 5.0], requires_grad=True)
    q(x).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


def run_schedule(q, batches, total):
    """Drive one IAOAct through the training callback protocol; return the outputs."""
    model = nn.Sequential(q).train()
    (cb,) = scheme_callbacks(model)
    assert isinstance(cb, IAOSchedule)
    cb.on_train_start(model, total)
    outs = []
    for step, x in enumerate(batches):
        cb.before_step(model, step, total)
        outs.append(model(x))
        cb.after_step(model, step, total)
    cb.on_train_end(model)
    return outs


@pytest.mark.parametrize("n", [300, 60])
def test_range_tracks_a_shift_of_scale_within_the_budget(n):
    """Issue 21.7: decay 0.999, one batch with max 1 then n with max 10: the range ended at 3.33
    (n = 300). With the EMA's time constant 2% of the budget it ends at the new range; numpy
    oracle: hi_n = d^n 1 + (1 - d^n) 10 with d = 1 - 1 / max(1, 0.02 (n + 1))."""
    total = n + 1
    q = IAOAct()
    batches = [torch.linspace(0, 1, 11)] + [torch.linspace(0, 10, 11)] * n
    run_schedule(q, batches, total)
    d = 1 - 1 / max(1.0, 0.02 * total)
    assert q.decay == pytest.approx(d)
    assert float(q.hi) == pytest.approx(d**n * 1 + (1 - d**n) * 10, rel=1e-5)
    assert float(q.hi) > 9.99  # inputs up to the new max keep their gradient
    x = torch.tensor([9.9], requires_grad=True)
    q.eval()(x).sum().backward()
    assert x.grad.item() == 1.0


def test_activation_quantization_is_delayed_while_ranges_are_observed():
    """Jacob et al. 3.1: the first floor(0.1 T) steps train with float activations (identity,
    gradient 1 everywhere) while the EMA observes; quantization starts at step floor(0.1 T)."""
    torch.manual_seed(0)
    total = 50
    batches = [(torch.randn(64) * 3).requires_grad_() for _ in range(total)]
    q = IAOAct()
    outs = run_schedule(q, batches, total)
    for step, (x, y) in enumerate(zip(batches, outs)):
        assert torch.equal(y, x) == (step < 5), step
    s, z = affine_params(float(q.lo), float(q.hi))  # the last step used the range it observed
    codes = outs[-1].detach().numpy() / s + z
    np.testing.assert_allclose(codes, np.round(codes), atol=1e-3)
    outs[2].sum().backward()
    assert torch.all(batches[2].grad == 1)  # float: no clamp to the (still settling) range
    assert q.enabled and bool(q.initialized)


def test_schedule_is_collected_once_and_keeps_an_explicit_decay():
    model = quantize_model(FCN(3, width=4, depth=2), {"weight": "iao", "act": "iao",
                                                      "act_args": {"ema_span": None, "decay": 0.9}})
    cbs = [cb for cb in scheme_callbacks(model) if isinstance(cb, IAOSchedule)]
    assert len(cbs) == 1
    cbs[0].on_train_start(model, 1000)
    decays = {m.decay for m in model.modules() if isinstance(m, IAOAct)}
    # the explicit decay is kept where act_args applies; the first/last "iao8" layers use the schedule
    assert decays == {0.9, 1 - 1 / 20}


@pytest.mark.parametrize("per_channel", [True, False])
def test_weight_int8_narrow_range(per_channel):
    torch.manual_seed(1)
    w = torch.randn(5, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    q = IAOWeight(per_channel=per_channel)
    y = q(w)
    info = q.export_info(w)
    wn = w.detach().numpy()
    s = np.abs(wn).reshape(5, -1).max(1) / 127 if per_channel else np.abs(wn).max() / 127
    np.testing.assert_allclose(info.scale, s)
    assert info.codes.dtype == np.int8 and info.codes.min() >= -127
    sb = s.reshape(-1, 1, 1, 1) if per_channel else s
    np.testing.assert_array_equal(info.codes, np.round(wn / sb).astype(np.int8))
    np.testing.assert_allclose(info.dequantize(), y.detach().numpy(), atol=1e-12)
    assert np.abs(y.detach().numpy() - wn).max() <= np.max(s) / 2 + 1e-12
    y.sum().backward()
    assert torch.all(w.grad == 1)


def _conv_bn(transpose=False):
    torch.manual_seed(2)
    conv = (nn.ConvTranspose2d(3, 4, 2, stride=2, bias=True) if transpose
            else nn.Conv2d(3, 4, 3, padding=1, bias=True)).double()
    bn = nn.BatchNorm2d(4).double()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2)
        bn.bias.uniform_(-1, 1)
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 3)
    return conv, bn.eval()


@pytest.mark.parametrize("transpose", [False, True])
def test_fold_bn_matches_conv_then_bn(transpose):
    conv, bn = _conv_bn(transpose)
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    ref = bn(conv(x))
    axis = 1 if transpose else 0
    args = (bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.eps)
    w_f, b_f = fold_bn(conv.weight.detach(), conv.bias.detach(), *[a.detach() for a in args[:4]],
                       eps=bn.eps, axis=axis)
    f = torch.nn.functional
    out = (f.conv_transpose2d(x, w_f, b_f, stride=2) if transpose
           else f.conv2d(x, w_f, b_f, padding=1))
    torch.testing.assert_close(out, ref.detach())
    # numpy inputs give the same numbers
    w_np, b_np = fold_bn(conv.weight.detach().numpy(), conv.bias.detach().numpy(),
                         *[a.detach().numpy() for a in args[:4]], eps=bn.eps, axis=axis)
    np.testing.assert_allclose(w_np, w_f.numpy())
    np.testing.assert_allclose(b_np, b_f.numpy())


def test_fold_bn_without_bias_and_bad_shapes():
    w = np.ones((2, 1, 1, 1))
    w_f, b_f = fold_bn(w, None, [2.0, 1.0], [0.5, 0.0], [1.0, 0.0], [3.0, 0.0], eps=1.0)
    np.testing.assert_allclose(w_f.ravel(), [1.0, 1.0])
    np.testing.assert_allclose(b_f, [0.5 - 1.0, 0.0])
    with pytest.raises(ValueError, match="gamma"):
        fold_bn(w, None, [1.0], [0.0, 0.0], [0.0, 0.0], [1.0, 1.0])


def test_bias_scale_and_codes():
    s_w, s_x = np.array([0.01, 0.02]), 0.5
    np.testing.assert_allclose(bias_scale(s_w, s_x), [0.005, 0.01])
    b = np.array([0.1234, -0.3])
    codes = quantize_bias(b, s_w, s_x)
    assert codes.dtype == np.int32
    assert np.all(np.abs(codes * bias_scale(s_w, s_x) - b) <= bias_scale(s_w, s_x) / 2)
    with pytest.raises(ValueError, match="int32"):
        quantize_bias([1e9], 1e-3, 1e-3)


def test_requant_multiplier_q31():
    pytest.importorskip("seglearn.runtime.fixedpoint")
    s_w, s_x, s_y = np.array([0.003, 0.02]), 0.05, 0.07
    m0, shift = requant_multiplier(s_w, s_x, s_y)
    m = s_w * s_x / s_y
    assert np.all((m0 >= 2**30) & (m0 < 2**31))
    np.testing.assert_allclose(m0 * 2.0**-31 * 2.0**shift, m, rtol=1e-8)


def test_bad_arguments():
    with pytest.raises(ValueError, match="bits"):
        IAOAct(bits=1)
    with pytest.raises(ValueError, match="decay"):
        IAOAct(decay=1.5)
    with pytest.raises(ValueError, match="delay"):
        IAOAct(delay=1.0)
    with pytest.raises(ValueError, match="ema_span"):
        IAOAct(ema_span=0.0)
    with pytest.raises(ValueError, match="no data"):
        IAOAct().eval().export_info()
