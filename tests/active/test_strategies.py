"""Selection strategies: contract over the whole registry, plus per-strategy oracles."""

import subprocess
import sys
import warnings

import numpy as np
import pytest

import seglearn.active.strategies as strat

from seglearn.active import STRATEGIES, SelectionNote, cover_gains, max_cover_select, select


def _pool(seed, n=20, d=4, n_lab=5):
    rng = np.random.default_rng(seed)
    ids = [f"img{i:03d}" for i in range(n)]
    lab_ids = [f"lab{i}" for i in range(n_lab)]
    return ids, lab_ids, rng.random(n), rng.random((n, d)), rng.random((n_lab, d))


@pytest.mark.parametrize("name", STRATEGIES.names())
@pytest.mark.parametrize("k", [0, 1, 7, 20])
def test_every_strategy_returns_k_distinct_unlabeled(name, k):
    ids, lab_ids, u, d, ld = _pool(0)
    with warnings.catch_warnings():  # suggestive notes K raised to k for k=20
        warnings.simplefilter("ignore", SelectionNote)
        out = select(name, k, ids, u, d, ld, rng=1, candidates=8)
    got = [s.item_id for s in out]
    assert len(got) == k and len(set(got)) == k
    assert set(got) <= set(ids) and not set(got) & set(lab_ids)
    pos = [ids.index(g) for g in got]
    for s, p in zip(out, pos):
        assert s.uncertainty == u[p]
    np.testing.assert_allclose([s.coverage_gain for s in out], cover_gains(d[pos], d) if k else [])


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_every_strategy_rejects_k_larger_than_pool(name):
    ids, _, u, d, ld = _pool(1, n=5)
    with pytest.raises(ValueError, match="k=6"):
        select(name, 6, ids, u, d, ld, rng=0)


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_every_strategy_is_reproducible_with_a_seed(name):
    ids, _, u, d, ld = _pool(2)
    assert select(name, 5, ids, u, d, ld, rng=3) == select(name, 5, ids, u, d, ld, rng=3)


def test_uncertainty_is_top_k_with_ties_to_lowest_position():
    u = np.array([0.1, 0.9, 0.5, 0.9, 0.2])
    out = select("uncertainty", 3, list("abcde"), u, None)
    assert [s.item_id for s in out] == ["b", "d", "c"]
    assert all(np.isnan(s.coverage_gain) for s in out)


@pytest.mark.parametrize("seed", range(3))
def test_suggestive_is_max_cover_of_top_k_over_whole_pool(seed):
    ids, _, u, d, ld = _pool(seed, n=30)
    top = sorted(range(30), key=lambda i: -u[i])[:10]
    picks = max_cover_select(d[top], d, 4)
    got = [s.item_id for s in select("suggestive", 4, ids, u, d, ld, candidates=10)]
    assert got == [ids[top[p]] for p in picks]


def test_suggestive_raises_small_k_candidates_with_a_note():
    ids, _, u, d, ld = _pool(4)
    with pytest.warns(SelectionNote, match="raising K to 6"):
        out = select("suggestive", 6, ids, u, d, ld, candidates=2)
    # K = k: the 6 most uncertain are exactly the selection (in max-cover order).
    assert {s.item_id for s in out} == {ids[i] for i in np.argsort(-u)[:6]}


@pytest.mark.parametrize("limit", [strat.DENSE_COVER_LIMIT, 0])  # dense, then the lazy path
def test_representative_is_max_cover_with_every_unlabeled_candidate(limit, monkeypatch):
    monkeypatch.setattr(strat, "DENSE_COVER_LIMIT", limit)
    ids, _, u, d, ld = _pool(5)
    got = [s.item_id for s in select("representative", 5, ids, u, d, ld)]
    assert got == [ids[p] for p in max_cover_select(d, d, 5)]


def _brute_kcentre(d, lab, k, first=None):
    """k-centre greedy with explicit loops: farthest from the centres first, lowest on ties."""
    centres = [row for row in lab]
    chosen = []
    for step in range(k):
        if not centres:
            best = first
        else:
            best, best_d = None, -1.0
            for i in range(len(d)):
                if i in chosen:
                    continue
                di = min(float(np.linalg.norm(d[i] - c)) for c in centres)
                if di > best_d:
                    best, best_d = i, di
        chosen.append(best)
        centres.append(d[best])
    return chosen


@pytest.mark.parametrize("seed", range(4))
def test_coreset_matches_brute_force_k_centre(seed):
    ids, _, u, d, ld = _pool(seed, n=25, d=3, n_lab=int(seed) + 1)
    got = [ids.index(s.item_id) for s in select("coreset", 6, ids, u, d, ld)]
    assert got == _brute_kcentre(d, ld, 6)
    # Nothing labeled: the first centre is random; every later pick follows the farthest rule.
    got = [ids.index(s.item_id) for s in select("coreset", 6, ids, u, d, None, rng=seed)]
    assert got == _brute_kcentre(d, [], 6, first=got[0])


def test_coreset_never_repicks_when_everything_is_covered():
    d = np.ones((4, 2))  # all points coincide with the labeled one: every distance is 0
    out = select("coreset", 4, list("abcd"), np.zeros(4), d, np.ones((1, 2)))
    assert [s.item_id for s in out] == list("abcd")


def test_bad_input_raises_clear_errors():
    ids, _, u, d, ld = _pool(6, n=6)
    with pytest.raises(ValueError, match="known: .*suggestive"):
        select("nope", 1, ids, u, d, ld)
    with pytest.raises(ValueError, match="duplicates"):
        select("random", 1, ids[:-1] + [ids[0]], u, d, ld)
    with pytest.raises(ValueError, match="uncertainty must have shape"):
        select("random", 1, ids, u[:-1], d, ld)
    with pytest.raises(ValueError, match="descriptors have 5 rows"):
        select("random", 1, ids, u, d[:-1], ld)
    with pytest.raises(ValueError, match="labeled_descriptors have 3 features"):
        select("coreset", 1, ids, u, d, ld[:, :3])
    with pytest.raises(ValueError, match="needs descriptors"):
        select("suggestive", 1, ids, u, None)
    with pytest.raises(ValueError, match="rng"):
        select("random", 1, ids, u, d, ld, rng="seed")
    with pytest.raises(ValueError, match="candidates"):
        select("suggestive", 1, ids, u, d, ld, candidates=0)


def test_active_package_is_numpy_only():
    # Scoring and selection must run where torch is absent (DESIGN: active/ never trains).
    code = "import sys, seglearn.active; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
