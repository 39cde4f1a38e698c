"""Uncertainty maps and reductions vs per-pixel loop oracles (scipy.stats.entropy, statistics)."""

import math
import statistics

import numpy as np
import pytest
from scipy.stats import entropy as sp_entropy

from seglearn.active import (
    REDUCTIONS,
    SCORES,
    reduce_map,
    score_batch,
    score_image,
    score_map,
)


def _members_at(p, i, j):
    """Per-member class-probability vectors at pixel (i, j): binary -> [1 - p, p]."""
    if p.ndim == 3:
        return [np.array([1 - p[n, i, j], p[n, i, j]]) for n in range(p.shape[0])]
    return [p[n, :, i, j] for n in range(p.shape[0])]


def _oracle_map(p, score):
    h, w = p.shape[-2:]
    out = np.zeros((h, w))
    for i in range(h):
        for j in range(w):
            vecs = _members_at(p, i, j)
            if score in ("std", "variance"):
                # Binary: the foreground only; categorical: average over classes.
                cls = [1] if p.ndim == 3 else range(len(vecs[0]))
                per = [statistics.pstdev([v[c] for v in vecs]) for c in cls]
                vals = per if score == "std" else [s * s for s in per]
                out[i, j] = sum(vals) / len(vals)
            else:
                mean = sum(vecs) / len(vecs)
                h_mean = sp_entropy(mean)
                if score == "entropy":
                    out[i, j] = h_mean
                else:
                    out[i, j] = h_mean - sum(sp_entropy(v) for v in vecs) / len(vecs)
    return out


def _binary(seed, n=3, h=3, w=4):
    p = np.random.default_rng(seed).random((n, h, w))
    p[0, 0, 0] = 0.0  # exact 0 and 1 exercise the eps-safe log
    p[1, 0, 1] = 1.0
    return p


def _categorical(seed, n=4, c=3, h=3, w=2):
    x = np.random.default_rng(seed).standard_normal((n, c, h, w))
    e = np.exp(x)
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("score", ["std", "variance", "entropy", "bald"])
@pytest.mark.parametrize("seed", [0, 1])
def test_scores_match_loop_oracle(score, seed):
    pb, pc = _binary(seed), _categorical(seed)
    np.testing.assert_allclose(score_map(pb, score), _oracle_map(pb, score), atol=1e-10)
    np.testing.assert_allclose(score_map(pc, score), _oracle_map(pc, score), atol=1e-10)


@pytest.mark.parametrize("score", ["std", "variance", "entropy", "bald"])
def test_binary_layouts_agree(score):
    p = _binary(3)
    # (N, 1, H, W) sigmoid head == (N, H, W); a 2-class softmax [1-p, p] == binary.
    np.testing.assert_allclose(score_map(p[:, None], score), score_map(p, score), atol=1e-12)
    two = np.stack([1 - p, p], axis=1)
    np.testing.assert_allclose(score_map(two, score), score_map(p, score), atol=1e-12)


@pytest.mark.parametrize("score", SCORES.names())
def test_every_score_is_zero_when_members_agree_confidently(score):
    p = np.zeros((4, 5, 6))
    p[:, 1:3, 2:5] = 1.0
    m = score_map(p, score)
    assert m.shape == (5, 6)
    assert np.all(np.isfinite(m)) and np.all(m == 0.0)


@pytest.mark.parametrize("score", SCORES.names())
def test_every_score_is_nonnegative_and_larger_under_disagreement(score):
    agree = np.full((4, 2, 2), 0.9)
    split = np.array([0.9, 0.1, 0.9, 0.1])[:, None, None] * np.ones((4, 2, 2))
    assert np.all(score_map(agree, score) >= 0)
    assert score_image(split, score) > score_image(agree, score)


def test_known_values():
    p = np.array([1.0, 0.0])[:, None, None] * np.ones((2, 1, 1))  # two members: fg 1 and fg 0
    assert score_image(p, "std") == pytest.approx(0.5)
    assert score_image(p, "variance") == pytest.approx(0.25)
    assert score_image(p, "entropy") == pytest.approx(math.log(2))
    assert score_image(p, "bald") == pytest.approx(math.log(2))


def test_reductions_against_sorted_oracle():
    m = np.random.default_rng(4).random((3, 4))
    flat = sorted(m.ravel().tolist(), reverse=True)
    assert reduce_map(m, "mean") == pytest.approx(sum(flat) / 12)
    assert reduce_map(m, "max") == pytest.approx(flat[0])
    assert reduce_map(m, "topk_mean", q=0.25) == pytest.approx(sum(flat[:3]) / 3)
    assert reduce_map(m, "topk_mean", q=0.2) == pytest.approx(sum(flat[:3]) / 3)  # ceil(2.4) = 3
    assert reduce_map(m, "topk_mean", q=1e-6) == pytest.approx(flat[0])  # at least one pixel
    assert reduce_map(m, "topk_mean", q=1.0) == pytest.approx(sum(flat) / 12)


def test_mean_reduction_does_not_depend_on_image_size():
    p = np.random.default_rng(5).random((3, 4, 4))
    tiled = np.tile(p, (1, 3, 2))  # same content, six times the pixels
    assert score_image(tiled) == pytest.approx(score_image(p))


@pytest.mark.parametrize("reduction", REDUCTIONS.names())
@pytest.mark.parametrize("score", SCORES.names())
def test_batch_equals_per_image(score, reduction):
    rng = np.random.default_rng(6)
    pb = rng.random((3, 4, 5, 6))
    want = [score_image(x, score, reduction, q=0.3) for x in pb]
    np.testing.assert_allclose(score_batch(pb, score, reduction, q=0.3), want, rtol=1e-12)
    pc = np.stack([_categorical(s) for s in range(2)])
    want = [score_image(x, score, reduction, q=0.3) for x in pc]
    np.testing.assert_allclose(score_batch(pc, score, reduction, q=0.3), want, rtol=1e-12)


def test_bad_input_raises_clear_errors():
    p = _binary(0)
    with pytest.raises(ValueError, match="known: .*std"):
        score_map(p, "nope")
    with pytest.raises(ValueError, match="known: .*topk_mean"):
        score_image(p, reduction="sum")
    with pytest.raises(ValueError, match="logits"):
        score_map(p * 3 - 1)
    with pytest.raises(ValueError, match="sum to 1"):
        score_map(np.full((2, 3, 2, 2), 0.5))
    with pytest.raises(ValueError, match="shape"):
        score_map(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="NaN"):
        score_map(np.full((2, 2, 2), np.nan))
    with pytest.raises(ValueError, match="q must"):
        score_image(p, reduction="topk_mean", q=0.0)


@pytest.mark.parametrize("reduction", ["mean", "max", "topk_mean"])
@pytest.mark.parametrize("categorical", [False, True])
def test_score_image_all_equals_each_score_image(reduction, categorical):
    from seglearn.active import score_image_all

    rng = np.random.default_rng(7)
    if categorical:
        p = rng.dirichlet(np.ones(3), size=(4, 9, 11)).transpose(0, 3, 1, 2)  # (N, C, H, W)
    else:
        p = rng.random((4, 9, 11)).astype(np.float32)
        p[0, :2, :2], p[1, :2, :2] = 0.0, 1.0  # the x log x limits
    names = ["std", "variance", "entropy", "bald"]
    got = score_image_all(p, names, reduction, q=0.2)
    assert list(got) == names
    for name in names:
        assert got[name] == pytest.approx(score_image(p, name, reduction, q=0.2), rel=1e-6, abs=1e-9)


def test_score_image_all_runs_a_custom_score_and_rejects_bad_names():
    from seglearn.active import score_image_all

    p = np.random.default_rng(8).random((3, 5, 5))
    SCORES.register("test_range")(lambda q, binary: q.max(axis=1).mean(axis=1) - q.min(axis=1).mean(axis=1))
    try:
        got = score_image_all(p, ["test_range", "std"])
        assert got["test_range"] == pytest.approx(float((p.max(0) - p.min(0)).mean()))
    finally:
        SCORES._items.pop("test_range", None)
    with pytest.raises(ValueError, match="nope"):
        score_image_all(p, ["nope"])
    with pytest.raises(ValueError):
        score_image_all(np.full((3, 5, 5), 2.0), ["std"])


def test_score_image_all_defaults_to_every_registered_score():
    """No list of names besides the registry: the default is SCORES, a new score included."""
    from seglearn.active import score_image_all

    p = np.random.default_rng(9).random((3, 5, 5))
    assert list(score_image_all(p)) == SCORES.names()
    assert set(SCORES.names()) == {"std", "variance", "entropy", "bald"}
    SCORES.register("test_spread")(lambda q, binary: q.max(axis=1) - q.min(axis=1))
    try:
        got = score_image_all(p)
        assert set(got) == {"std", "variance", "entropy", "bald", "test_spread"}
        assert got["test_spread"] == pytest.approx(float((p.max(0) - p.min(0)).mean()))
    finally:
        SCORES._items.pop("test_spread", None)
