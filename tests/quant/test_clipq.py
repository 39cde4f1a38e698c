"""CLIP-Q: pruned fraction per sign, 2^b - 1 uniform bins over the kept range, bin means; STE."""

import math

import numpy as np
import pytest
import torch

from seglearn.quant import get_quantizer
from seglearn.quant.clipq import clipq_thresholds


def np_clipq(w, p, b):
    flat = w.reshape(-1)
    pos, neg = np.sort(flat[flat > 0]), np.sort(-flat[flat < 0])
    c_pos = pos[math.ceil(p * len(pos)) - 1] if p > 0 else 0.0
    c_neg = -neg[math.ceil(p * len(neg)) - 1] if p > 0 else 0.0
    keep = (flat > c_pos) | (flat < c_neg)
    out = np.zeros_like(flat)
    kept = flat[keep]
    nb = 2**b - 1
    edges = np.linspace(kept.min(), kept.max(), nb + 1)
    idx = np.clip(np.digitize(kept, edges[1:-1]), 0, nb - 1)
    means = np.array([kept[idx == i].mean() if (idx == i).any() else np.nan for i in range(nb)])
    out[keep] = means[idx]
    return out.reshape(w.shape), keep.reshape(w.shape)


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
    # kept {-4, -3, 3, 4}, b = 2: 3 bins of width 8/3 over [-4, 4] -> {-4,-3} mean -3.5, {3,4} 3.5
    y = get_quantizer("clipq", kind="weight", bits=2, prune=0.5)(w)
    assert y.tolist() == [0, 0, 3.5, 3.5, 0, 0, -3.5, -3.5]


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


def test_bad_arguments():
    for kwargs in ({"prune": 1.5}, {"prune": -0.1}, {"bits": 0}, {"prune": "a"}):
        with pytest.raises(ValueError, match="clipq"):
            get_quantizer("clipq", kind="weight", **kwargs)
