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


def test_schedule_freezes_exactly_the_scheduled_fraction():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 5, 3, padding=1))
    qm = quantize_model(model, {"weight": "inq", "w_bits": 5, "first_last": "same"})
    (sched,) = [c for c in scheme_callbacks(qm, {}) if isinstance(c, INQSchedule)]
    opt = torch.optim.SGD(qm.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
    total, x = 8, torch.randn(2, 2, 6, 6)
    sched.on_train_start(qm, total)
    layer = qm[2]
    q = layer.weight_quant
    frozen_before = None
    for step in range(total):
        sched.before_step(qm, step, total)
        portion = sched.portions[min(step * 4 // total, 3)]
        n = layer.weight.numel()
        assert int(q.mask.sum()) == round(portion * n)
        if frozen_before is not None:
            # earlier frozen weights stay frozen, with the same values
            assert bool(q.mask[frozen_before[0]].all())
            np.testing.assert_array_equal(q.frozen[frozen_before[0]].numpy(), frozen_before[1])
        mask = q.mask.clone()
        w_eff = layer.quantized_weight().detach()
        # frozen values lie on the level set fixed at the first freeze (n1 from max|W| then)
        n1, n2 = q.n.tolist()
        assert n2 == n1 + 1 - 8
        mags = 2.0 ** np.arange(n2, n1 + 1)
        assert np.isin(np.abs(w_eff[mask].numpy()), np.r_[0.0, mags]).all()
        opt.zero_grad()
        qm(x).square().mean().backward()
        assert bool((layer.weight.grad[mask] == 0).all())
        if (~mask).any():
            assert layer.weight.grad[~mask].abs().sum() > 0
        opt.step()
        assert torch.equal(layer.quantized_weight().detach()[mask], w_eff[mask])
        frozen_before = (mask, q.frozen[mask].numpy().copy())
    assert bool(q.mask.all())  # 100% at the end
    info = layer.export_weight_info()
    assert info.method == "inq" and len(np.unique(info.codes)) <= 2**5


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
