"""Suggestive selection over a pool too large to hold in memory (``select`` on the Ray backend).

The in-memory path (``active.strategies.select``) stacks every pool descriptor into one float64
(U, D) array: 10^6 images x 128 features is 1 GiB, plus the dict of stored scores. Here the
descriptors stay on disk and are read in blocks of ``BLOCK`` rows:

1. the stored scores are streamed from the datastore (``Workspace.iter_scores``) once: the
   uncertainty u (U floats) is kept, the descriptors go to a memory-mapped float32 (U, D) file
   ``<workspace>/cache/descriptors-<model version>.f32`` in pool order;
2. the pool transform (``active.descriptor``, descriptors.DESCRIPTORS) needs the pool's per-channel
   mean mu and population standard deviation sigma: two passes over the blocks, in float64
   (sigma^2 = mean((d - mu)^2), the two-pass formula, not E[d^2] - mu^2, which cancels);
3. Yang et al.'s suggestive annotation (2017; METHODS.md section 2): the K most uncertain images
   are the candidates (``active.candidates``; ties to the lowest position, as the strategy), the
   (K, U) cosine matrix between their transformed descriptors and the transformed pool is built
   block by block (O(K U) memory, the greedy's own), and ``maxcover.greedy_cover`` picks k with
   its marginal gains, which are the ``coverage_gain`` of each pick.

The picks and gains are those of ``select("suggestive", ...)`` on the same numbers up to float
rounding of the blocked sums (tests/compute/test_pool.py checks both against it).
"""

from __future__ import annotations

import warnings
import numpy as np

from seglearn.active.descriptors import DESCRIPTORS
from seglearn.active.maxcover import cosine_similarity, greedy_cover
from seglearn.active.strategies import Selection, SelectionNote, _top_uncertain

BLOCK = 65536
#: Transforms that depend on the pool's per-channel mean and standard deviation only, so that the
#: blocked statistics give them exactly what the whole array would.
MOMENT_TRANSFORMS = ("yang", "centered")


def descriptor_file(ws, version: str, ids: list[int], score: str) -> tuple[np.ndarray, np.memmap]:
    """(u (U,) float64 of score ``score``, (U, D) float32 memmap of descriptors), rows in the
    order of ``ids``, streamed from the datastore. Every id must have stored scores."""
    pos = {iid: i for i, iid in enumerate(ids)}
    u = np.full(len(ids), np.nan)
    folder = ws.root / "cache"
    folder.mkdir(exist_ok=True)
    path = folder / f"descriptors-{version}.f32"
    mm: np.memmap | None = None
    seen = 0
    for iid, scores, desc in ws.iter_scores(version):
        i = pos.get(iid)
        if i is None:  # scores of a labeled image (coreset) or an item no longer in the pool
            continue
        if mm is None:
            mm = np.memmap(path, dtype=np.float32, mode="w+", shape=(len(ids), desc.size))
        mm[i] = desc
        u[i] = scores[_score_key(scores, score, iid)]
        seen += 1
    if mm is None or seen != len(ids):
        raise ValueError(f"{len(ids) - seen} of {len(ids)} pool images have no stored scores "
                         f"under {version!r}; run `seglearn select` again to score them")
    mm.flush()
    return u, mm


def _score_key(scores: dict, score: str, iid: int) -> str:
    if score not in scores:
        raise ValueError(f"stored scores of item {iid} have no {score!r} (they have "
                         f"{', '.join(sorted(scores))}); rerun select to rescore")
    return score


def pool_moments(d: np.ndarray, block: int = BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and population standard deviation of the (U, D) rows, two blocked
    passes in float64 (what ``d.mean(0)`` and ``d.std(0)`` give, without loading ``d``)."""
    n = d.shape[0]
    total = np.zeros(d.shape[1])
    for s in range(0, n, block):
        total += d[s:s + block].sum(axis=0, dtype=np.float64)
    mu = total / n
    sq = np.zeros(d.shape[1])
    for s in range(0, n, block):
        sq += np.square(np.asarray(d[s:s + block], dtype=np.float64) - mu).sum(axis=0)
    return mu, np.sqrt(sq / n)


def transform_of(name: str, d: np.ndarray, block: int = BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """(shift, scale) of pool transform ``name`` from blocked moments. The registered transform
    itself computes them (no second copy of its rule): it is fed two rows mu - sigma and
    mu + sigma, whose mean is mu and population standard deviation sigma."""
    if name not in MOMENT_TRANSFORMS:
        raise ValueError(f"active.descriptor={name} cannot be computed in blocks over a large "
                         f"pool (streamed select supports {', '.join(MOMENT_TRANSFORMS)})")
    mu, sigma = pool_moments(d, block)
    shift, scale = DESCRIPTORS.get(name)(np.stack([mu - sigma, mu + sigma]))
    return np.asarray(shift, dtype=np.float64), np.asarray(scale, dtype=np.float64)


def suggestive_streamed(ids: list, u: np.ndarray, d: np.ndarray, k: int, candidates: int,
                        descriptor: str, block: int = BLOCK) -> list[Selection]:
    """Suggestive annotation's picks (module doc) over (U, D) descriptors ``d`` read in blocks."""
    n = len(ids)
    if not 0 <= k <= n:
        raise ValueError(f"cannot select k={k} items from only {n} pool images")
    big_k = candidates
    if big_k < k:
        warnings.warn(f"suggestive: candidates K={big_k} < k={k}; raising K to {k}",
                      SelectionNote, stacklevel=2)
        big_k = k
    cand = _top_uncertain(u, min(big_k, n))
    shift, scale = transform_of(descriptor, d, block)
    cz = (np.asarray(d[cand], dtype=np.float64) - shift) * scale
    sim = np.empty((len(cand), n))
    for s in range(0, n, block):
        z = (np.asarray(d[s:s + block], dtype=np.float64) - shift) * scale
        sim[:, s:s + block] = cosine_similarity(cz, z)
    idx, gains = greedy_cover(sim, k)
    return [Selection(ids[int(cand[i])], float(u[cand[i]]), float(g)) for i, g in zip(idx, gains)]

