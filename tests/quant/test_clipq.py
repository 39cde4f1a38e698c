"""CLIP-Q: pruned fraction per sign, 2^b - 1 uniform bins over the kept range, bin means; STE."""

import math

import numpy as np
import pytest
import torch

from seglearn.quant import get_quantizer
from seglearn.quant.clipq import clipq_thresholds


def np_clipq(w, p, b):
    """Independent oracle: each sign's non-clipped side gets its own equal-width bins, the count
    split by the sides' lengths (half up, at least one each)."""
    flat = w.reshape(-1)
    pos, neg = np.sort(flat[flat > 0]), np.sort(-flat[flat < 0])
    c_pos = pos[math.ceil(p * len(pos)) - 1] if p > 0 else 0.0
    c_neg = -neg[math.ceil(p * len(neg)) - 1] if p > 0 else 0.0
    kneg, kpos = flat < min(c_neg, 0), flat > max(c_pos, 0)
    out = np.zeros_like(flat)
    nb = 2**b - 1
    lo, hi = flat[kneg].min(), flat[kpos].max()
    n_neg = int(np.clip(np.floor(nb * (c_neg - lo) / ((c_neg - lo) + (hi - c_pos)) + 0.5), 1, nb - 1))
    for keep, a, z, n in ((kneg, lo, c_neg, n_neg), (kpos, c_pos, hi, nb - n_neg)):
        kept = flat[keep]
        edges = np.linspace(a, z, n + 1)
        idx = np.clip(np.digitize(kept, edges[1:-1]), 0, n - 1)
        out[keep] = np.array([kept[idx == i].mean() if (idx == i).any() else np.nan
                              for i in range(n)])[idx]
    return out.reshape(w.shape), (kneg | kpos).reshape(w.shape)


@pytest.mark.parametrize("p,b", [(0.0, 2), (0.2, 3), (0.5, 2), (0.35, 4)])
def test_clipq_matches_numpy_oracle(p, b):
    torch.manual_seed(int(p * 100) + b)
    w = torch.randn(8, 4, 3, 3, dtype=torch.float64)
    q = get_quantizer("clipq", kind="weight", bits=b, prune=p)
    expect, keep = np_clipq(w.numpy(), p, b)
    y = q(w).numpy()
    np.testing.assert_allclose(y, expect, rtol=1e-12, atol=1e-15)
    wn = w.numpy()
    npos, nneg = (wn > 0).sum(), (wn < 0).sum()
    assert (y == 0).sum() == math.ceil(p * npos) + math.ceil(p * nneg)  # pruned fraction
    assert len(np.unique(y)) <= 2**b
    info = q.export_info(w)
    assert info.codes.min() >= 0 and info.codes.max() <= 2**b - 1 and info.levels[0] == 0
    np.testing.assert_allclose(info.dequantize(), expect, rtol=1e-12, atol=1e-15)


def test_clipq_by_hand_and_thresholds():
    # positives 1..4, negatives -1..-4; p = 0.5 prunes {1, 2, -1, -2}
    w = torch.tensor([1.0, 2.0, 3.0, 4.0, -1.0, -2.0, -3.0, -4.0])
    assert clipq_thresholds(w, 0.5) == (-2.0, 2.0)
    # kept {-4, -3, 3, 4}, b = 2: 3 bins over the sides [-4, -2] and [2, 4] (equal lengths: the tie
    # gives the negative side 2 bins of width 1, the positive side 1 of width 2)
    y = get_quantizer("clipq", kind="weight", bits=2, prune=0.5)(w)
    assert y.tolist() == [0, 0, 3.5, 3.5, 0, 0, -3.0, -4.0]


def test_pruning_is_reversible_and_gradient_is_straight_through():
    w = torch.tensor([0.1, 0.2, 3.0, -0.1, -2.0], requires_grad=True)
    q = get_quantizer("clipq", kind="weight", bits=2, prune=0.4)
    y = q(w)
    assert y[0].item() == 0.0
    y.sum().backward()
    assert w.grad.tolist() == [1.0] * 5  # pruned weights still learn
    with torch.no_grad():
        w[0] = 5.0  # grows back: no longer pruned
    assert q(w)[0].item() != 0.0


def test_bins_never_span_the_pruned_gap():
    """Issue 21.4: over [min, max] with 3 bins the centre bin averaged -0.2 .. 0.5 weights to +0.39,
    flipping 16.9% of the weights' signs. Seeded property loop over shapes, bits 2-8, prune 0-0.9."""
    rng = np.random.default_rng(21)
    torch.manual_seed(0)
    w0 = torch.randn(16, 16, 3, 3)
    cases = [(w0, 2, 0.2)] + [
        (torch.from_numpy(rng.standard_normal(rng.integers(2, 400)) * rng.uniform(0.01, 5)
                          + rng.uniform(-1, 1) * rng.uniform(0, 2)),
         int(rng.integers(2, 9)), float(rng.choice([0.0, rng.uniform(0, 0.9), 0.9])))
        for _ in range(300)]
    for w, b, p in cases:
        q = get_quantizer("clipq", kind="weight", bits=b, prune=p)
        y = q(w)
        sw, sy = torch.sign(w), torch.sign(y)
        assert bool(((sy == 0) | (sy == sw)).all()), (b, p, w.numel())  # 0 (pruned) or own sign
        info = q.export_info(w)
        levels = info.levels[info.codes]
        assert np.all((np.sign(levels) == 0) | (np.sign(levels) == np.sign(w.numpy())))
        assert len(np.unique(y.numpy())) <= 2**b


def test_one_bit_is_rejected_with_a_reason():
    with pytest.raises(ValueError, match=r"clipq: bits must be >= 2 .*both negative and positive"):
        get_quantizer("clipq", kind="weight", bits=1)


def test_one_sided_weights_get_every_bin():
    w = torch.tensor([0.5, 1.0, 2.0, 3.0, 4.0])  # no negative weight: all 3 bins on [c+, 4]
    q = get_quantizer("clipq", kind="weight", bits=2, prune=0.2)
    # c+ = 0.5 (ceil(0.2 * 5) = 1st smallest); bins of width 3.5/3 over [0.5, 4]
    assert q(w).tolist() == [0.0, 1.0, 2.0, 3.5, 3.5]


def test_bad_arguments():
    for kwargs in ({"prune": 1.5}, {"prune": -0.1}, {"bits": 0}, {"prune": "a"}):
        with pytest.raises(ValueError, match="clipq"):
            get_quantizer("clipq", kind="weight", **kwargs)
