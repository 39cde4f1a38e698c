"""Pool transforms of the descriptors (active.descriptor): numpy oracle, max-cover on two clusters
that raw (Yang) descriptors cannot tell apart, every strategy reading the transformed space, config."""

import numpy as np
import pytest

from seglearn.active import STRATEGIES, max_cover_select, select
from seglearn.active.descriptors import DESCRIPTORS, pool_descriptors
from seglearn.active.maxcover import cosine_similarity
from seglearn.config import Config, ConfigError, load_config


def _zscore_oracle(pool, other):
    """Independent z-score: per-channel mean / population std of the pool, constant channels -> 0."""
    pool = np.asarray(pool, dtype=np.float64)
    mu, sd = pool.mean(axis=0), pool.std(axis=0)
    out = []
    for a in (pool, np.asarray(other, dtype=np.float64)):
        z = np.zeros_like(a)
        for f in range(a.shape[1]):
            if sd[f] > 1e-6 * sd.max():
                z[:, f] = (a[:, f] - mu[f]) / sd[f]
        out.append(z)
    return out


def test_centered_is_the_pool_zscore_and_labeled_use_the_pool_statistics():
    rng = np.random.default_rng(0)
    pool = rng.gamma(2.0, size=(9, 5)).astype(np.float32) * [1, 10, 0.1, 1, 3]
    pool[:, 3] = 2.5  # a constant (dead) channel: no information, must not be blown up
    lab = rng.gamma(2.0, size=(4, 5))
    z_pool, z_lab = pool_descriptors("centered", pool, lab)
    want_pool, want_lab = _zscore_oracle(pool, lab)
    np.testing.assert_allclose(z_pool, want_pool, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(z_lab, want_lab, rtol=1e-12, atol=1e-12)
    # The pool's own statistics: mean 0 and std 1 on every varying channel, exactly 0 on the dead one.
    np.testing.assert_allclose(z_pool.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(z_pool.std(axis=0), [1, 1, 1, 0, 1], atol=1e-12)
    # The labeled rows are NOT standardised on their own statistics.
    assert not np.allclose(z_lab.mean(axis=0), 0)


def test_yang_leaves_the_descriptors_as_stored_and_none_stays_none():
    pool = np.arange(12.0).reshape(4, 3)
    got_pool, got_none = pool_descriptors("yang", pool, None)
    np.testing.assert_array_equal(got_pool, pool)
    assert got_none is None


def test_pool_transform_rejects_bad_names_and_shapes():
    with pytest.raises(ValueError, match="unknown descriptor 'whiten'; known: centered, yang"):
        pool_descriptors("whiten", np.ones((3, 2)))
    with pytest.raises(ValueError, match="do not match the pool's 2 features"):
        pool_descriptors("centered", np.ones((3, 2)), np.ones((1, 3)))
    with pytest.raises(ValueError, match="unknown descriptor 'bogus'"):
        select("uncertainty", 1, ["a", "b"], np.array([0.1, 0.2]), None, descriptor="bogus")


def _two_brightness_clusters(seed, n_a=12, n_b=8, width=16):
    """Cluster A = s * c, cluster B = 2 s * c (+ small noise): one shared direction c, so raw
    descriptors are collinear (cos ~ 1), but the pool mean lies between the clusters and the
    centred ones point in opposite directions."""
    rng = np.random.default_rng(seed)
    c = rng.uniform(0.5, 1.5, width)
    scale = np.r_[np.full(n_a, 1.0), np.full(n_b, 2.0)] * rng.uniform(0.95, 1.05, n_a + n_b)
    d = scale[:, None] * c + rng.normal(0, 0.01, (n_a + n_b, width))
    return d, np.r_[np.zeros(n_a, int), np.ones(n_b, int)]


@pytest.mark.parametrize("seed", range(5))
def test_max_cover_on_centered_descriptors_picks_one_from_each_cluster(seed):
    d, cluster = _two_brightness_clusters(seed)
    off = ~np.eye(len(d), dtype=bool)
    # Yang's descriptors: every pair has cos > 0.999, so after the first pick nothing is left to
    # cover (the collapse of the 2nd gain) and the clusters are invisible to max-cover.
    assert cosine_similarity(d, d)[off].min() > 0.999
    _, raw_gains = max_cover_select(d, d, 2, return_gains=True)
    assert raw_gains[1] < 1e-3 * raw_gains[0]
    (z,) = pool_descriptors("centered", d)
    picks, gains = max_cover_select(z, z, 2, return_gains=True)
    assert sorted(cluster[picks]) == [0, 1]
    # The second pick covers the other cluster: a gain of the order of that cluster's size.
    assert gains[1] > 0.3 * gains[0]


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_every_strategy_sees_the_transformed_descriptors(name):
    """select(descriptor="centered") == select on descriptors z-scored by the oracle (pool stats
    for the labeled set too), picks and reported coverage gains alike."""
    rng = np.random.default_rng(3)
    d = rng.gamma(2.0, size=(20, 6))
    lab = rng.gamma(2.0, size=(5, 6))
    u = rng.random(20)
    ids = list(range(20))
    z, zl = _zscore_oracle(d, lab)
    got = select(name, 5, ids, u, d, lab, rng=7, candidates=10, descriptor="centered")
    want = select(name, 5, ids, u, z, zl, rng=7, candidates=10, descriptor="yang")
    assert [s.item_id for s in got] == [s.item_id for s in want]
    np.testing.assert_allclose([s.coverage_gain for s in got], [s.coverage_gain for s in want],
                               rtol=1e-9, atol=1e-12)


def test_suggestive_with_centered_descriptors_covers_both_clusters():
    d, cluster = _two_brightness_clusters(11)
    u = np.linspace(1, 0, len(d))  # candidates come from both clusters (K = whole pool)
    ids = list(range(len(d)))
    picks = select("suggestive", 2, ids, u, d, candidates=len(d), descriptor="centered")
    assert sorted(cluster[[s.item_id for s in picks]]) == [0, 1]


def test_config_key_active_descriptor():
    assert Config().active.descriptor == "centered"
    assert load_config(None, ["active.descriptor=yang"]).active.descriptor == "yang"
    assert set(DESCRIPTORS.names()) == {"yang", "centered"}
    with pytest.raises(ConfigError) as e:
        load_config(None, ["active.descriptor=whiten"])
    assert "active.descriptor must be one of centered, yang, not 'whiten'" in str(e.value)


TINY = ["synthetic.size=32", "data.crop=32", "model.width=4", "model.depth=3", "train.steps=2",
        "ensemble.members=2", "data.batch_size=2", "train.bf16=false", "active.budget=3",
        "active.candidates=6", "ensemble.quant.weight=null"]


def test_select_workspace_transforms_at_selection_time_and_never_rescores(tmp_path, monkeypatch):
    """`seglearn select` with active.descriptor = centered, then yang: the picks and the coverage
    gains are those of the stored descriptors under each transform, and switching the descriptor
    reads the stored scores back (same score version, no inference)."""
    import seglearn.app.select as app_select
    from seglearn.app.init import init_workspace
    from seglearn.app.train import train_workspace
    from seglearn.models.ensemble import load_ensemble

    cfg = load_config(None, TINY)
    ws = init_workspace(tmp_path / "ws", cfg, synthetic=12, seed=0, progress=False)
    train_workspace(ws, cfg, progress=False)
    scored = []
    real = app_select.image_scores_many
    monkeypatch.setattr(app_select, "image_scores_many",
                        lambda ens, images, *a: scored.extend(images) or real(ens, images, *a))
    pool = ws.unlabeled("pool")
    ids = [it.id for it in pool]
    version = app_select.score_version(load_ensemble(ws, "suggestive"))
    gains = {}
    for name in ("centered", "yang"):
        res = app_select.select_workspace(
            ws, load_config(None, TINY + [f"active.descriptor={name}"]), progress=False)
        assert len(scored) == len(pool)  # scored once, by the first select only
        assert ws.score_versions() == [version]
        stored = ws.scores(version)
        u = np.array([stored[j][0]["std"] for j in ids])
        d = np.stack([stored[j][1] for j in ids]).astype(np.float64)
        z = _zscore_oracle(d, d[:0])[0] if name == "centered" else d
        want = select("suggestive", 3, ids, u, z, candidates=6)
        assert [r["item_id"] for r in res.rows] == [s.item_id for s in want]
        np.testing.assert_allclose([r["coverage_gain"] for r in res.rows],
                                   [s.coverage_gain for s in want], rtol=1e-6, atol=1e-9)
        gains[name] = [r["coverage_gain"] for r in res.rows]
    assert not np.allclose(gains["centered"], gains["yang"])  # the key did change the selection
