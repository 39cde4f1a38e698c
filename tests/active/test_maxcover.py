"""Greedy max-cover against a brute-force re-summing greedy and the exhaustive optimum."""

import itertools
import math

import numpy as np
import pytest

from functools import partial

from seglearn.active import cosine_similarity, cover_gains, max_cover_select
from seglearn.active.maxcover import lazy_max_cover_select

# The dense greedy, and the lazy one with tiny blocks so the blocked first pass is exercised.
IMPLS = {"dense": max_cover_select, "lazy": partial(lazy_max_cover_select, block=2)}


def _cos(a, b):
    na, nb = math.sqrt(float(np.dot(a, a))), math.sqrt(float(np.dot(b, b)))
    return 0.0 if na == 0 or nb == 0 else float(np.dot(a, b)) / (na * nb)


def _objective(cands, pool, chosen):
    """F(S) = sum_x max(0, max_{s in S} cos(s, x)), re-summed from scratch with explicit loops."""
    total = 0.0
    for x in pool:
        best = 0.0
        for s in chosen:
            best = max(best, _cos(cands[s], x))
        total += best
    return total


def _brute_greedy(cands, pool, k):
    chosen, gains = [], []
    for _ in range(k):
        base = _objective(cands, pool, chosen)
        vals = [
            (-np.inf if i in chosen else _objective(cands, pool, chosen + [i]))
            for i in range(len(cands))
        ]
        best = int(np.argmax(vals))
        chosen.append(best)
        gains.append(vals[best] - base)
    return chosen, gains


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("signed", [False, True])
def test_equals_brute_force_greedy(seed, signed, impl):
    max_cover_select = IMPLS[impl]
    rng = np.random.default_rng(seed)
    c, u, d = rng.integers(3, 10), rng.integers(5, 25), rng.integers(2, 6)
    cands = rng.standard_normal((c, d)) if signed else rng.random((c, d))
    pool = rng.standard_normal((u, d)) if signed else rng.random((u, d))
    k = int(rng.integers(1, c + 1))
    idx, gains = max_cover_select(cands, pool, k, return_gains=True)
    want_idx, want_gains = _brute_greedy(cands, pool, k)
    assert idx == want_idx
    np.testing.assert_allclose(gains, want_gains, rtol=1e-10, atol=1e-10)
    assert max_cover_select(cands, pool, k) == idx  # plain call returns just the indices
    np.testing.assert_allclose(gains.sum(), _objective(cands, pool, idx), rtol=1e-10)


@pytest.mark.parametrize("seed", range(8))
def test_greedy_within_one_minus_inv_e_of_optimum(seed):
    rng = np.random.default_rng(100 + seed)
    c = int(rng.integers(3, 9))
    cands = rng.standard_normal((c, 3))
    pool = rng.standard_normal((12, 3))
    for k in range(1, min(3, c) + 1):
        greedy = _objective(cands, pool, max_cover_select(cands, pool, k))
        opt = max(_objective(cands, pool, list(s)) for s in itertools.combinations(range(c), k))
        assert greedy <= opt + 1e-12
        assert greedy >= (1 - 1 / math.e) * opt - 1e-12


@pytest.mark.parametrize("impl", IMPLS)
def test_ties_go_to_lowest_index_and_negative_cosines_never_help(impl):
    max_cover_select = IMPLS[impl]
    pool = np.array([[1.0, 0.0], [2.0, 0.0]])
    # 0 and 2 are duplicates with the best gain; 1 only has negative cosines; 3 is orthogonal.
    cands = np.array([[1.0, 0.0], [-1.0, 0.0], [3.0, 0.0], [0.0, 1.0]])
    idx, gains = max_cover_select(cands, pool, 4, return_gains=True)
    assert idx == [0, 1, 2, 3]
    np.testing.assert_allclose(gains, [2.0, 0.0, 0.0, 0.0])


@pytest.mark.parametrize("impl", IMPLS)
def test_zero_norm_vectors_have_zero_cosine(impl):
    max_cover_select = IMPLS[impl]
    a = np.array([[0.0, 0.0], [1.0, 1.0]])
    b = np.array([[3.0, 3.0], [0.0, 0.0]])
    if impl == "dense":
        np.testing.assert_allclose(cosine_similarity(a, b), [[0.0, 0.0], [1.0, 0.0]])
    idx, gains = max_cover_select(a, b, 2, return_gains=True)
    assert idx == [1, 0]
    np.testing.assert_allclose(gains, [1.0, 0.0])


def test_cover_gains_match_objective_increments():
    rng = np.random.default_rng(7)
    sel, pool = rng.standard_normal((4, 3)), rng.standard_normal((9, 3))
    want = [_objective(sel, pool, list(range(j + 1))) - _objective(sel, pool, list(range(j)))
            for j in range(4)]
    np.testing.assert_allclose(cover_gains(sel, pool), want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("impl", IMPLS)
def test_bad_input_raises_clear_errors(impl):
    max_cover_select = IMPLS[impl]
    c, p = np.ones((3, 2)), np.ones((5, 2))
    with pytest.raises(ValueError, match="k=4"):
        max_cover_select(c, p, 4)
    with pytest.raises(ValueError, match="k must be >= 0"):
        max_cover_select(c, p, -1)
    with pytest.raises(ValueError, match="features"):
        max_cover_select(c, np.ones((5, 3)), 1)
    with pytest.raises(ValueError, match="2-D"):
        max_cover_select(np.ones(3), p, 1)
    with pytest.raises(ValueError, match="NaN"):
        max_cover_select(np.array([[np.nan, 1.0]]), p, 1)
    assert max_cover_select(c, p, 0) == []


@pytest.mark.parametrize("seed", range(4))
def test_lazy_equals_dense_on_larger_pools(seed):
    rng = np.random.default_rng(200 + seed)
    cands, pool = rng.random((60, 8)), rng.random((80, 8))
    dense = max_cover_select(cands, pool, 10, return_gains=True)
    lazy = lazy_max_cover_select(cands, pool, 10, return_gains=True, block=7)
    assert lazy[0] == dense[0]
    np.testing.assert_allclose(lazy[1], dense[1], rtol=1e-10)
    with pytest.raises(ValueError, match="block"):
        lazy_max_cover_select(cands, pool, 1, block=0)
