"""Greedy generalised max-cover over cosine similarity (suggestive annotation, Yang et al. 2017).

Objective (METHODS.md section 2, Yang et al., MICCAI 2017, arXiv 1706.04737):

    F(S) = sum_{x in pool} max(0, max_{s in S} cos(d(s), d(x))),     F({}) = 0

Each greedy step adds the candidate ``I`` maximising ``F(S ∪ {I})``, i.e. the largest marginal gain

    gain(I | S) = sum_x max(0, cos(d(I), d(x)) - cover(x)),
    cover(x)    = max(0, max_{s in S} cos(d(s), d(x)))

Negative cosines: the running "best cover so far" vector starts at 0, so a negative similarity never
raises the cover and never counts. That is the ``max(0, .)`` above; it keeps F monotone submodular
(a facility-location function with non-negative weights), which is what makes the greedy a
(1 - 1/e) approximation (Nemhauser, Wolsey & Fisher 1978). Yang et al.'s raw descriptors (ReLU
features, non-negative) have cosines >= 0, so there the clip changes nothing; the default
``active.descriptor = centered`` (descriptors.py) centres them on the pool mean, about half the
pairs then have negative cosines, and the clip reads those as "does not cover" (weight 0).

Cost: one (C, U) similarity matrix, then k vectorised passes over it -- O(C U D + k C U) time and
O(C U) memory -- never re-summing F from scratch.

When the candidates are the whole pool (C = U = 10^4 would be an 800 MB matrix),
:func:`lazy_max_cover_select` gives the same greedy in O(U * block) memory: Minoux's lazy greedy
(1978), valid because F is submodular, so a candidate's gain computed at an earlier step is an upper
bound on its gain now; only the candidate on top of a max-heap of bounds is re-evaluated.
"""

from __future__ import annotations

import heapq

import numpy as np

__all__ = [
    "cosine_similarity",
    "max_cover_select",
    "lazy_max_cover_select",
    "greedy_cover",
    "cover_gains",
]


def _as_matrix(x: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (rows, features), got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.number) or np.iscomplexobj(a):
        raise ValueError(f"{name} must hold real numbers, got dtype {a.dtype}")
    a = a.astype(np.float64, copy=False)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return a


def _unit_rows(a: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm; zero rows stay zero, so their cosine with anything is 0."""
    norms = np.linalg.norm(a, axis=1, keepdims=True)
    return np.divide(a, norms, out=np.zeros_like(a), where=norms > 0)


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(A, D) x (B, D) -> (A, B) cosine similarities in float64; a zero-norm row gives cos = 0."""
    a = _as_matrix(a, "a")
    b = _as_matrix(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sizes differ: {a.shape[1]} vs {b.shape[1]}")
    return _cosine(a, b)


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # Clip: rounding can push |cos| of parallel vectors a hair past 1.
    return np.clip(_unit_rows(a) @ _unit_rows(b).T, -1.0, 1.0)


def max_cover_select(
    candidates: np.ndarray,
    pool: np.ndarray,
    k: int,
    *,
    return_gains: bool = False,
):
    """Greedy max-cover: ``k`` indices into ``candidates`` in the order the greedy picks them.

    candidates: (C, D) descriptors that may be picked; pool: (U, D) descriptors to cover.
    Ties (equal marginal gain) go to the lowest candidate index. ``k > C`` raises ValueError.
    With ``return_gains=True`` returns ``(idx, gains)``: ``gains[j]`` is the marginal gain
    F(S_j ∪ {idx[j]}) - F(S_j) of pick j, so ``gains.sum()`` is F of the selection.
    """
    cand = _as_matrix(candidates, "candidates")
    pool_m = _as_matrix(pool, "pool")
    if cand.shape[1] != pool_m.shape[1]:
        raise ValueError(
            f"candidates have {cand.shape[1]} features but pool has {pool_m.shape[1]}"
        )
    k = _check_k(k, cand.shape[0])
    idx, gains = greedy_cover(_cosine(cand, pool_m), k)  # inputs already validated
    return (idx, gains) if return_gains else idx


def greedy_cover(sim: np.ndarray, k: int) -> tuple[list[int], np.ndarray]:
    """The greedy on a precomputed (C, U) similarity matrix: (indices, marginal gains).

    Incremental: a running best-cover vector, so each step is one vectorised O(C U) pass.
    """
    sim = np.asarray(sim, dtype=np.float64)
    if sim.ndim != 2:
        raise ValueError(f"similarity must be a 2-D (C, U) array, got shape {sim.shape}")
    k = _check_k(k, sim.shape[0])
    cover = np.zeros(sim.shape[1])  # best cover so far; starting at 0 drops negative cosines
    picked = np.zeros(sim.shape[0], dtype=bool)
    idx: list[int] = []
    gains = np.zeros(k)
    for step in range(k):
        # Marginal gain of every candidate at once: sum_x max(0, sim - cover).
        gain = np.maximum(sim - cover, 0.0).sum(axis=1)
        gain[picked] = -np.inf  # a picked candidate's gain is 0, but it must never be re-picked
        best = int(np.argmax(gain))  # argmax returns the first maximum: lowest index wins ties
        idx.append(best)
        gains[step] = gain[best]
        picked[best] = True
        np.maximum(cover, sim[best], out=cover)
    return idx, gains


def lazy_max_cover_select(
    candidates: np.ndarray,
    pool: np.ndarray,
    k: int,
    *,
    return_gains: bool = False,
    block: int = 256,
):
    """Same contract and picks as :func:`max_cover_select`, in O((block + k) U) memory.

    Lazy greedy: a heap of (-bound, index); if the top's bound was computed at this step it is the
    exact best gain (every other bound is >= its true gain), otherwise recompute the stale top
    entries and push them back. Heap order (-gain, index) keeps ties on the lowest
    index. The similarities are the
    same numbers as the dense version's up to float rounding of the row products, so the two can
    only differ on gains equal to within ~1e-12.
    """
    cand = _as_matrix(candidates, "candidates")
    pool_m = _as_matrix(pool, "pool")
    if cand.shape[1] != pool_m.shape[1]:
        raise ValueError(
            f"candidates have {cand.shape[1]} features but pool has {pool_m.shape[1]}"
        )
    k = _check_k(k, cand.shape[0])
    if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or block < 1:
        raise ValueError(f"block must be a positive integer, got {block!r}")
    cu, pu = _unit_rows(cand), _unit_rows(pool_m)
    cover = np.zeros(pool_m.shape[0])

    def gains_of(rows: np.ndarray) -> np.ndarray:
        # In place: sim -> sim - cover -> max(., 0) -> row sums, one (len(rows), U) buffer.
        sim = np.clip(cu[rows] @ pu.T, -1.0, 1.0)
        sim -= cover
        np.maximum(sim, 0.0, out=sim)
        return sim.sum(axis=1)

    heap: list[tuple[float, int]] = []
    for c0 in range(0, cand.shape[0], block):  # step 0: gains on the empty cover are exact
        rows = np.arange(c0, min(c0 + block, cand.shape[0]))
        heap.extend(zip((-gains_of(rows)).tolist(), rows.tolist()))
    heapq.heapify(heap)
    fresh_at = np.zeros(cand.shape[0], dtype=np.int64)  # the step each bound was computed at
    idx: list[int] = []
    gains = np.zeros(k)
    for step in range(k):
        batch = 1
        while fresh_at[heap[0][1]] != step:
            # Re-evaluate the stale top entries together (one matrix product); the batch doubles
            # within a step, so when bounds are loose (all gains collapse after a pick) the work
            # is done in big BLAS blocks, and when they are tight little is wasted.
            stale = []
            while heap and len(stale) < batch and fresh_at[heap[0][1]] != step:
                stale.append(heapq.heappop(heap)[1])
            rows = np.asarray(stale)
            fresh_at[rows] = step
            for g, i in zip((-gains_of(rows)).tolist(), stale):
                heapq.heappush(heap, (g, i))
            batch = min(2 * batch, block)
        neg, i = heapq.heappop(heap)
        idx.append(i)
        gains[step] = -neg
        np.maximum(cover, np.clip(cu[i] @ pu.T, -1.0, 1.0), out=cover)
    return (idx, gains) if return_gains else idx


def cover_gains(selected: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """Marginal max-cover gain of each row of ``selected`` (in order) over ``pool``: shape (S,).

    Lets strategies that do not optimise coverage still report how much each pick covers.
    """
    sel = _as_matrix(selected, "selected")
    pool_m = _as_matrix(pool, "pool")
    if sel.shape[1] != pool_m.shape[1]:
        raise ValueError(f"selected have {sel.shape[1]} features but pool has {pool_m.shape[1]}")
    sim = _cosine(sel, pool_m)
    cover = np.zeros(sim.shape[1])
    out = np.zeros(sel.shape[0])
    for j, row in enumerate(sim):
        out[j] = np.maximum(row - cover, 0.0).sum()
        np.maximum(cover, row, out=cover)
    return out


def _check_k(k: int, n: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"k must be an integer, got {k!r}")
    k = int(k)
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if k > n:
        raise ValueError(f"cannot select k={k} items from only {n} candidates")
    return k
