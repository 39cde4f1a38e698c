"""The streamed suggestive selection (seglearn.compute.pool) against the in-memory strategy, and
the stored scores streamed to a memory-mapped descriptor file. No Ray needed."""

from __future__ import annotations

import numpy as np
import pytest

from seglearn.active.strategies import select
from seglearn.compute.pool import descriptor_file, pool_moments, suggestive_streamed, transform_of


def _pool(n=97, dim=6, seed=0):
    rng = np.random.default_rng(seed)
    d = np.abs(rng.normal(1.0, 0.5, (n, dim))).astype(np.float32)
    d[:, 2] = 0.7  # a constant channel: centered must zero it, as the in-memory transform does
    u = rng.random(n)
    return list(range(10, 10 + n)), u, d


@pytest.mark.parametrize("descriptor", ["yang", "centered"])
@pytest.mark.parametrize("block", [7, 1000])
def test_streamed_suggestive_equals_in_memory(tmp_path, descriptor, block):
    ids, u, d = _pool()
    mm = np.memmap(tmp_path / "d.f32", dtype=np.float32, mode="w+", shape=d.shape)
    mm[:] = d
    want = select("suggestive", 5, ids, u, d, None, np.random.default_rng(0), candidates=12,
                  descriptor=descriptor)
    got = suggestive_streamed(ids, u, mm, 5, 12, descriptor, block=block)
    assert [g.item_id for g in got] == [w.item_id for w in want]
    assert np.allclose([g.uncertainty for g in got], [w.uncertainty for w in want])
    assert np.allclose([g.coverage_gain for g in got], [w.coverage_gain for w in want],
                       rtol=1e-9, atol=1e-12)


def test_blocked_moments_equal_numpy():
    _, _, d = _pool(n=1001, seed=3)
    mu, sigma = pool_moments(d, block=64)
    assert np.allclose(mu, d.astype(np.float64).mean(axis=0), rtol=1e-12)
    assert np.allclose(sigma, d.astype(np.float64).std(axis=0), rtol=1e-9, atol=1e-12)
    shift, scale = transform_of("centered", d, block=64)
    assert scale[2] == 0.0 and np.all(scale[[0, 1, 3, 4, 5]] > 0)


def test_transform_that_needs_the_whole_pool_is_refused():
    _, _, d = _pool()
    with pytest.raises(ValueError, match="cannot be computed in blocks"):
        transform_of("pca", d)


def test_descriptor_file_streams_the_stored_rows(tmp_path):
    from seglearn.app.init import init_workspace
    from seglearn.config import load_config

    cfg = load_config(None, ["synthetic.size=32", "data.crop=32", "model.depth=3"])
    ws = init_workspace(tmp_path / "ws", cfg, synthetic=10, seed=0, progress=False)
    pool = [it.id for it in ws.unlabeled("pool")]
    rng = np.random.default_rng(1)
    rows = {iid: ({"std": float(rng.random()), "bald": 0.5}, rng.random(4).astype(np.float32))
            for iid in pool}
    with ws.writer():
        ws.set_scores("v1", [(iid, *rows[iid]) for iid in pool])
    assert ws.scored_ids("v1") == set(pool) and ws.scored_ids("v2") == set()
    assert [r[0] for r in ws.iter_scores("v1", block=3)] == sorted(pool)
    order = pool[::-1]  # rows follow the order asked for, not the datastore's
    u, d = descriptor_file(ws, "v1", order, "std")
    assert isinstance(d, np.memmap) and d.shape == (len(pool), 4)
    assert np.array_equal(u, [rows[i][0]["std"] for i in order])
    assert np.array_equal(np.asarray(d), np.stack([rows[i][1] for i in order]))
    with pytest.raises(ValueError, match="1 of .* pool images have no stored scores"):
        descriptor_file(ws, "v1", order + [max(pool) + 999], "std")
