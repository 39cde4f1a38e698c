"""INQ: the power-of-two level set, nearest-level projection, and the partition-and-freeze schedule."""

import io
import numpy as np
import pytest
import torch
from torch import nn

from seglearn.quant import get_quantizer
from seglearn.quant.convert import quantize_model, scheme_callbacks
from seglearn.quant.inq import INQWeight, inq_exponents
from seglearn.quant.schedules import INQSchedule


def np_levels(w, bits):
    s = np.abs(w).max()
    n1 = int(np.floor(np.log2(4 * s / 3)))
    n2 = n1 + 1 - 2 ** (bits - 1) // 2
    mags = 2.0 ** np.arange(n2, n1 + 1)
    return np.sort(np.concatenate([-mags, [0.0], mags])), n1, n2


def np_nearest(w, levels):
    return levels[np.abs(w[..., None] - levels).argmin(-1)]


@pytest.mark.parametrize("bits", [2, 3, 5, 7])
def test_level_set_and_projection_vs_brute_force(bits):
    torch.manual_seed(bits)
    w = torch.randn(8, 4, 3, 3, dtype=torch.float64) * 0.3
    levels, n1, n2 = np_levels(w.numpy(), bits)
    assert len(levels) == 2 ** (bits - 1) + 1 <= 2**bits
    q = get_quantizer("inq", kind="weight", bits=bits)
    y = q(w).numpy()
    # the paper's rule (alpha+beta)/2 <= |w| < 3 beta / 2 is the nearest level of P
    np.testing.assert_array_equal(y, np_nearest(w.numpy(), levels))
    info = q.export_info(w)
    assert (info.extra["n1"], info.extra["n2"]) == (n1, n2)
    np.testing.assert_array_equal(info.levels, levels)
    np.testing.assert_array_equal(info.dequantize(), y)


def test_exponents_by_hand():
    # s = 0.9: 4s/3 = 1.2 -> n1 = 0; 5 bits -> n2 = 0 + 1 - 8 = -7
    assert inq_exponents(0.9, 5) == (0, -7)
    assert inq_exponents(0.74, 3) == (-1, -2)  # 4*0.74/3 = 0.987 -> n1 = -1
    w = torch.tensor([0.9, 0.74, -0.3, 0.0041, 0.0038])
    # 3 bits, s = 0.9: n1 = 0, n2 = -1, levels {0, +-0.5, +-1}; 0.74 < 0.75 -> 0.5; 0.3 >= 0.25 -> 0.5
    assert get_quantizer("inq", kind="weight", bits=3)(w).tolist() == [1.0, 0.5, -0.5, 0.0, 0.0]


def test_default_portion_is_one_with_straight_through_gradient():
    q = get_quantizer("inq", kind="weight", bits=5)
    assert q.portion == 1.0 and not q.incremental
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    y = q(w)
    g = torch.randn_like(y)
    (y * g).sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), g.numpy())


def np_inq_reference(w0, bits, portions, float_fraction, total, grads_fn, lr):
    """An independent INQ oracle: plain numpy SGD on one weight array, the paper's schedule laid
    over ``total`` steps (float phase, portions at equal intervals, the last after the last step).
    Returns (mask, frozen values) after every boundary and the final mask / values."""
    w = w0.copy()
    n = len(portions)
    t0 = int(float_fraction * total)
    bounds = [t0 + (i * (total - t0)) // (n - 1) for i in range(n - 1)] + [total]
    mask = np.zeros(w.shape, bool)
    frozen = np.zeros_like(w)
    n1 = n2 = None
    history = []
    applied = 0
    for step in range(total + 1):
        while applied < n and step >= bounds[applied]:
            if n1 is None:  # fixed once, from the trained weights
                n1 = int(np.floor(np.log2(4 * np.abs(w).max() / 3)))
                n2 = n1 + 1 - 2 ** (bits - 1) // 2
            target = int(round(portions[applied] * w.size))
            free = np.flatnonzero(~mask.reshape(-1))
            order = free[np.argsort(-np.abs(w.reshape(-1)[free]), kind="stable")]
            pick = order[:target - int(mask.sum())]
            mags = 2.0 ** np.arange(n2, n1 + 1)
            levels = np.concatenate([-mags[::-1], [0.0], mags])
            mask.reshape(-1)[pick] = True
            frozen.reshape(-1)[pick] = levels[np.abs(w.reshape(-1)[pick, None] - levels).argmin(-1)]
            history.append((step, mask.copy(), frozen.copy(), w.copy()))
            applied += 1
        if step == total:
            break
        eff = np.where(mask, frozen, w)
        g = grads_fn(eff)
        w = w - lr * np.where(mask, 0.0, g)
    return history, mask, frozen


def test_schedule_freezes_trained_weights_on_the_paper_schedule():
    """Float phase first; each boundary freezes the projection of the weights as trained so far
    (compared with a numpy oracle running the same SGD); no step runs with every weight frozen."""
    torch.manual_seed(0)
    lin = nn.Conv2d(6, 4, 1, bias=False)
    qm = quantize_model(nn.Sequential(lin), {"weight": "inq", "w_bits": 5, "first_last": "same"})
    layer = qm[0]
    q = layer.weight_quant
    (sched,) = [c for c in scheme_callbacks(qm, {}) if isinstance(c, INQSchedule)]
    x = torch.randn(16, 6, 1, 1, dtype=torch.float64)
    target = torch.randn(16, 4, 1, 1, dtype=torch.float64)
    qm.double()
    w0 = layer.weight.detach().numpy().copy()
    X, T = x.numpy()[:, :, 0, 0], target.numpy()[:, :, 0, 0]

    def np_grad(weff):  # d/dW of mean((X W^T - T)^2)
        r = X @ weff[:, :, 0, 0].T - T
        return (2.0 / r.size * r.T @ X)[:, :, None, None]

    total, lr = 24, 0.5
    opt = torch.optim.SGD(qm.parameters(), lr=lr)
    sched.on_train_start(qm, total)
    seen_portions = []
    for step in range(total):
        sched.before_step(qm, step, total)
        seen_portions.append(q.portion)
        if step < total // 2:  # the float phase: forward is the float weight itself
            assert not q.incremental and q.float_phase
            assert torch.equal(layer.quantized_weight(), layer.weight)
        assert q.portion < 1.0  # never a step with every weight frozen
        opt.zero_grad()
        (qm(x) - target).square().mean().backward()
        opt.step()
        sched.after_step(qm, step, total)
    assert bool(q.mask.all()) and not q.float_phase
    assert seen_portions == [0.0] * 12 + [0.5] * 4 + [0.75] * 4 + [0.875] * 4
    history, mask, frozen = np_inq_reference(w0, 5, (0.5, 0.75, 0.875, 1.0), 0.5, total, np_grad, lr)
    assert [h[0] for h in history] == [12, 16, 20, 24]
    # the first freeze happens from trained, not initial, weights: n1 and values differ from w0's
    first_w = history[0][3]
    assert np.abs(first_w - w0).max() > 1e-3
    np.testing.assert_array_equal(q.mask.numpy(), mask)
    np.testing.assert_allclose(q.frozen.numpy(), frozen, rtol=0, atol=0)
    n1 = int(np.floor(np.log2(4 * np.abs(first_w).max() / 3)))
    assert q.n.tolist() == [n1, n1 + 1 - 8]


def test_float_fraction_zero_freezes_at_step_zero_and_is_validated():
    q = get_quantizer("inq", kind="weight", bits=5, float_fraction=0.0)
    sched = q.make_callback()
    assert sched.boundaries(300) == [0, 100, 200, 300]
    assert INQSchedule(float_fraction=0.5).boundaries(300) == [150, 200, 250, 300]
    assert INQSchedule((1.0,), 0.5).boundaries(10) == [10]  # float training, projected at the end
    for bad in (1.0, -0.1, "x"):
        with pytest.raises(ValueError, match="float_fraction"):
            get_quantizer("inq", kind="weight", float_fraction=bad)


def _tiny_fit(steps, ck, resume=False, stop_at=None):
    from seglearn.config import TrainConfig
    from seglearn.models.fcn import FCN
    from seglearn.train.callbacks import Callback
    from seglearn.train.engine import fit

    class Stop(Callback):
        def after_step(self, model, step, total):
            if stop_at is not None and step + 1 == stop_at:
                raise KeyboardInterrupt

    torch.manual_seed(0)
    model = quantize_model(FCN(3, width=4, depth=2),
                           {"weight": "inq", "w_bits": 7, "first_last": "same"})
    g = torch.Generator().manual_seed(1)
    batch = {"image": torch.rand(2, 3, 16, 16, generator=g),
             "target": (torch.rand(2, 1, 16, 16, generator=g) > 0.5).float()}
    cfg = TrainConfig(steps=steps, lr=1e-2, bf16=False, channels_last=False, checkpoint_every=3,
                      device="cpu", threads=1)
    cbs = scheme_callbacks(model) + [Stop()]
    try:
        fit(model, [batch], cfg, steps=steps, callbacks=cbs, checkpoint=ck, resume=resume,
            progress=False)
    except KeyboardInterrupt:
        pass
    return model


def _inq_state(model):
    return {n: (q.mask.clone(), q.frozen.clone()) for n, m in model.named_modules()
            if isinstance(q := getattr(m, "weight_quant", None), INQWeight)}


def test_resume_keeps_the_frozen_set(tmp_path):
    """The issue's reproduction: fit 4 steps with a checkpoint, then fit(steps=8, resume=True):
    no frozen weight is freed and no frozen value changes."""
    ck = tmp_path / "ck.pt"
    before = _inq_state(_tiny_fit(4, ck))
    after = _inq_state(_tiny_fit(8, ck, resume=True))
    assert before and before.keys() == after.keys()
    for name, (mask, frozen) in before.items():
        assert bool(mask.all())
        assert bool(after[name][0][mask].all()), name
        assert torch.equal(after[name][1][mask], frozen[mask]), name


def test_killed_run_resumed_equals_an_uninterrupted_one(tmp_path):
    """Killed after step 10 of 12 (last checkpoint at step 9, inside the INQ phase), then resumed:
    the frozen set and values equal an uninterrupted run's (one fixed batch, CPU, one thread)."""
    whole = _inq_state(_tiny_fit(12, tmp_path / "a.pt"))
    _tiny_fit(12, tmp_path / "b.pt", stop_at=10)
    ck = torch.load(tmp_path / "b.pt", weights_only=True)
    assert ck["step"] == 9
    part = {k[:-len(".weight_quant.mask")]: v for k, v in ck["model"].items()
            if k.endswith("weight_quant.mask")}
    assert part and all(0 < float(m.float().mean()) < 1 for m in part.values())
    resumed = _inq_state(_tiny_fit(12, tmp_path / "b.pt", resume=True))
    for name, (mask, frozen) in whole.items():
        assert torch.equal(resumed[name][0], mask), name
        assert torch.equal(resumed[name][1], frozen), name


def test_first_freeze_picks_largest_magnitudes():
    w = torch.tensor([[0.1, -0.9, 0.5, 0.05, -0.3, 0.7, 0.2, -0.01]])
    q = INQWeight(bits=5)
    assert q.freeze(w, 0.5) == 4
    assert q.mask.tolist() == [[False, True, True, False, True, True, False, False]]
    assert q.freeze(w, 0.75) == 2  # then 0.2 and 0.1
    assert q.mask[0, [0, 6]].all()


def test_state_dict_round_trip_mid_schedule():
    w = torch.randn(3, 2, 3, 3)
    q = INQWeight(bits=4)
    q.freeze(w, 0.5)
    buf = io.BytesIO()
    torch.save(q.state_dict(), buf)
    buf.seek(0)
    q2 = INQWeight(bits=4)
    q2.load_state_dict(torch.load(buf, weights_only=True))
    assert torch.equal(q2(w), q(w)) and q2.portion == q.portion
    with pytest.raises(ValueError, match="only 0.5"):
        q2.export_info(w)


def test_bad_arguments():
    with pytest.raises(ValueError, match="inq: bits"):
        get_quantizer("inq", kind="weight", bits=1)
    for bad in ([0.5, 0.4], [0.0, 1.0], [1.2], "x"):
        with pytest.raises(ValueError, match="portions"):
            get_quantizer("inq", kind="weight", portions=bad)


def test_freeze_of_a_channels_last_weight_freezes_the_largest_magnitudes():
    """The engine converts the model (buffers too) to channels-last by default: freezing wrote into
    reshape copies of the channels-last mask and every 3x3 conv finished training unfrozen."""
    g = torch.Generator().manual_seed(3)
    w = torch.randn(4, 3, 3, 3, generator=g).contiguous(memory_format=torch.channels_last)
    q = INQWeight(bits=7)
    q.freeze(w, 0.5)
    q.mask = q.mask.contiguous(memory_format=torch.channels_last)   # as model.to(channels_last)
    q.frozen = q.frozen.contiguous(memory_format=torch.channels_last)
    q.freeze(w, 0.75)
    # numpy oracle: the 75% largest |w| (in logical order) are frozen, at their projected values
    a = np.abs(w.numpy()).reshape(-1)
    want = np.zeros(a.size, bool)
    want[np.argsort(-a, kind="stable")[:int(round(0.75 * a.size))]] = True
    assert np.array_equal(q.mask.numpy().reshape(-1), want)
    levels = np_levels(w.numpy(), 7)[0]
    got = q.frozen.numpy().reshape(-1)[want]
    assert np.allclose(got, np_nearest(w.numpy().reshape(-1)[want], levels))
    assert q.portion == pytest.approx(want.mean())


def test_fit_with_channels_last_finishes_every_layer_frozen():
    from seglearn.config import TrainConfig
    from seglearn.models.fcn import FCN
    from seglearn.train.engine import fit

    torch.manual_seed(0)
    model = quantize_model(FCN(3, width=4, depth=2), {"weight": "inq", "w_bits": 7,
                                                      "first_last": "same"})
    g = torch.Generator().manual_seed(1)
    batch = {"image": torch.rand(2, 3, 16, 16, generator=g),
             "target": (torch.rand(2, 1, 16, 16, generator=g) > 0.5).float()}
    cfg = TrainConfig(steps=8, lr=1e-2, bf16=False, channels_last=True, device="cpu", threads=1)
    fit(model, [batch], cfg, steps=8, callbacks=scheme_callbacks(model), progress=False)
    qs = [q for m in model.modules() if isinstance(q := getattr(m, "weight_quant", None), INQWeight)]
    assert qs and all(q.portion == 1.0 and bool(q.mask.all()) for q in qs)
