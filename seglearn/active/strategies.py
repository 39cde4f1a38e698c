"""Selection strategies: which k unlabeled images to annotate next (registry ``STRATEGIES``).

Every strategy sees the same inputs, through :func:`select`:

    select(strategy, k, unlabeled_ids, uncertainty (U,), descriptors (U, D) or None,
           labeled_descriptors (L, D) or None, rng, candidates=16, descriptor="yang")
      -> [Selection(item_id, uncertainty, coverage_gain), ...]   # k items, in pick order

``descriptor`` names the pool transform (descriptors.DESCRIPTORS, config ``active.descriptor``)
applied here, once, before any strategy reads the descriptors: its statistics come from the
unlabeled pool's descriptors and are applied to the labeled ones too, so max-cover, coreset and
the reported coverage gains all work in the same transformed space. ``"yang"`` (the function's
default) leaves them as stored; the app's default is ``"centered"``.

Strategies (positions refer to the unlabeled arrays; ties always go to the lowest position):
  suggestive      Yang et al. 2017 (MICCAI, arXiv 1706.04737): the K = ``candidates`` most uncertain
                  images, then greedy max-cover (maxcover.py) of k of them over the whole unlabeled
                  pool S_u. If K < k, K is raised to k (a :class:`SelectionNote` warning says so):
                  with fewer candidates than picks the paper's procedure is undefined, and raising K
                  is the smallest change that keeps it meaningful. K > U is clipped to U silently.
  uncertainty     the k most uncertain.
  representative  greedy max-cover with every unlabeled image as a candidate. Dense (one (U, U)
                  similarity matrix) while U^2 <= DENSE_COVER_LIMIT, else the lazy greedy
                  (maxcover.lazy_max_cover_select): the same picks in O(block * U) memory; measured
                  4-15 s at U = 10^4, D = 256 on a shared 2-core box (the suggestive strategy, with
                  K = 16 candidates, takes ~0.1 s there).
  coreset         k-centre greedy (Sener & Savarese, ICLR 2018, arXiv 1708.00489): repeatedly pick
                  the unlabeled point farthest (Euclidean on descriptors) from labeled ∪ selected.
                  With no labeled descriptors the first pick is drawn at random with ``rng``.
  random          k distinct images uniformly at random with ``rng``.

``coverage_gain`` is reported for every strategy, so they can be compared: the marginal max-cover
gain of each pick (in pick order) over the unlabeled pool (NaN when no descriptors were given).
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np

from seglearn.active.descriptors import DESCRIPTORS, pool_descriptors
from seglearn.active.maxcover import (
    _as_matrix,
    cover_gains,
    lazy_max_cover_select,
    max_cover_select,
)
from seglearn.registry import Registry

__all__ = [
    "Selection",
    "SelectionContext",
    "SelectionNote",
    "STRATEGIES",
    "DENSE_COVER_LIMIT",
    "register_strategy",
    "get_strategy",
    "list_strategies",
    "select",
]

#: Largest (C x U) similarity matrix built densely (2^24 float64 = 128 MiB); beyond it, lazy greedy.
DENSE_COVER_LIMIT = 1 << 24
#: Block sizes (centres per block, float64 elements per difference block) for distances to the
#: labeled set, so memory stays bounded however large the pool and labeled set are.
_DIST_BLOCK = 256
_DIST_ELEMS = 1 << 21


class SelectionNote(UserWarning):
    """A selection parameter was adjusted (e.g. K raised to k); the selection still ran."""


class Selection(NamedTuple):
    item_id: Any
    uncertainty: float
    coverage_gain: float


@dataclass(frozen=True)
class SelectionContext:
    """Validated inputs a strategy works on; positions index the unlabeled arrays."""

    k: int
    uncertainty: np.ndarray  # (U,) float64
    descriptors: np.ndarray | None  # (U, D) float64
    labeled_descriptors: np.ndarray  # (L, D) float64, L may be 0
    rng: np.random.Generator
    candidates: int

    @property
    def n(self) -> int:
        return self.uncertainty.shape[0]

    def need_descriptors(self, who: str) -> np.ndarray:
        if self.descriptors is None:
            raise ValueError(f"strategy {who!r} needs descriptors, got None")
        return self.descriptors


StrategyFn = Callable[[SelectionContext], Sequence[int]]
STRATEGIES: Registry[StrategyFn] = Registry("selection strategy")
register_strategy = STRATEGIES.register


def get_strategy(name: str) -> StrategyFn:
    return STRATEGIES.get(name)


def list_strategies() -> list[str]:
    return STRATEGIES.names()


def _top_uncertain(u: np.ndarray, n: int) -> np.ndarray:
    # Stable sort on -u: equal uncertainties keep ascending positions, so ties go to the lowest.
    return np.argsort(-u, kind="stable")[:n]


@register_strategy("uncertainty")
def _uncertainty(ctx: SelectionContext) -> list[int]:
    return _top_uncertain(ctx.uncertainty, ctx.k).tolist()


@register_strategy("random")
def _random(ctx: SelectionContext) -> list[int]:
    return ctx.rng.choice(ctx.n, size=ctx.k, replace=False).tolist()


@register_strategy("suggestive")
def _suggestive(ctx: SelectionContext) -> list[int]:
    d = ctx.need_descriptors("suggestive")
    big_k = ctx.candidates
    if big_k < ctx.k:
        warnings.warn(
            f"suggestive: candidates K={big_k} < k={ctx.k}; raising K to {ctx.k}",
            SelectionNote,
            stacklevel=3,
        )
        big_k = ctx.k
    cand = _top_uncertain(ctx.uncertainty, min(big_k, ctx.n))
    picks = max_cover_select(d[cand], d, ctx.k)
    return cand[picks].tolist()


@register_strategy("representative")
def _representative(ctx: SelectionContext) -> list[int]:
    d = ctx.need_descriptors("representative")
    if ctx.n * ctx.n <= DENSE_COVER_LIMIT:
        return max_cover_select(d, d, ctx.k)
    return lazy_max_cover_select(d, d, ctx.k)


def _sq_dist_to_set(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """min over centres of the squared Euclidean distance, per row of x; +inf when no centres."""
    out = np.full(x.shape[0], np.inf)
    if centres.shape[0] == 0:
        return out
    cb = min(centres.shape[0], _DIST_BLOCK)
    rb = max(1, _DIST_ELEMS // (cb * max(1, x.shape[1])))  # keeps each diff block ~16 MB
    for c0 in range(0, centres.shape[0], cb):
        c = centres[c0 : c0 + cb]
        for r0 in range(0, x.shape[0], rb):
            # Explicit differences, not |a|^2 + |b|^2 - 2ab: exact zeros for duplicates and no
            # cancellation, so ties and "everything covered" are decided exactly.
            diff = x[r0 : r0 + rb, None, :] - c[None]
            d2 = np.einsum("ijk,ijk->ij", diff, diff).min(axis=1)
            np.minimum(out[r0 : r0 + rb], d2, out=out[r0 : r0 + rb])
    return out


@register_strategy("coreset")
def _coreset(ctx: SelectionContext) -> list[int]:
    d = ctx.need_descriptors("coreset")
    min_d2 = _sq_dist_to_set(d, ctx.labeled_descriptors)
    picked = np.zeros(ctx.n, dtype=bool)
    out: list[int] = []
    for _ in range(ctx.k):
        if np.isinf(min_d2).all():  # no centres yet (nothing labeled): a random first centre
            best = int(ctx.rng.integers(ctx.n))
        else:
            score = np.where(picked, -np.inf, min_d2)  # a picked point is never picked again
            best = int(np.argmax(score))  # squared distance has the same argmax; lowest on ties
        out.append(best)
        picked[best] = True
        diff = d - d[best]
        np.minimum(min_d2, np.einsum("ij,ij->i", diff, diff), out=min_d2)
    return out


def _as_rng(rng: Any) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, (int, np.integer)):
        return np.random.default_rng(rng)
    raise ValueError(
        f"rng must be a numpy Generator, an int seed or None, got {type(rng).__name__}"
    )


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _context(k, unlabeled_ids, uncertainty, descriptors, labeled_descriptors, rng, candidates):
    ids = list(unlabeled_ids)
    n = len(ids)
    if len(set(ids)) != n:
        raise ValueError("unlabeled_ids contains duplicates")
    u = np.asarray(uncertainty, dtype=np.float64)
    if u.shape != (n,):
        raise ValueError(
            f"uncertainty must have shape ({n},) to match unlabeled_ids, got {u.shape}"
        )
    if not np.all(np.isfinite(u)):
        raise ValueError("uncertainty contains NaN or infinite values")
    if not _is_int(k) or k < 0:
        raise ValueError(f"k must be a non-negative integer, got {k!r}")
    if k > n:
        raise ValueError(f"cannot select k={k} items from an unlabeled pool of {n}")
    if not _is_int(candidates) or candidates < 1:
        raise ValueError(f"candidates must be a positive integer, got {candidates!r}")
    d = None
    width = 0
    if descriptors is not None:
        d = _as_matrix(descriptors, "descriptors")
        if d.shape[0] != n:
            raise ValueError(f"descriptors have {d.shape[0]} rows but there are {n} unlabeled ids")
        width = d.shape[1]
    if labeled_descriptors is None or np.size(labeled_descriptors) == 0:
        lab = np.zeros((0, width))
    else:
        lab = _as_matrix(labeled_descriptors, "labeled_descriptors")
        if d is not None and lab.shape[1] != width:
            raise ValueError(
                f"labeled_descriptors have {lab.shape[1]} features, descriptors have {width}"
            )
    return ids, SelectionContext(int(k), u, d, lab, _as_rng(rng), int(candidates))


def select(
    strategy: str,
    k: int,
    unlabeled_ids: Sequence[Any],
    uncertainty: np.ndarray,
    descriptors: np.ndarray | None,
    labeled_descriptors: np.ndarray | None = None,
    rng: np.random.Generator | int | None = None,
    candidates: int = 16,
    descriptor: str = "yang",
) -> list[Selection]:
    """Run the named strategy; returns k :class:`Selection` rows in pick order (see module doc)."""
    fn = STRATEGIES.get(strategy)
    DESCRIPTORS.get(descriptor)  # an unknown name fails even when no descriptors are given
    ids, ctx = _context(
        k, unlabeled_ids, uncertainty, descriptors, labeled_descriptors, rng, candidates
    )
    if ctx.descriptors is not None and ctx.n:
        d, lab = pool_descriptors(descriptor, ctx.descriptors, ctx.labeled_descriptors)
        ctx = dataclasses.replace(ctx, descriptors=d, labeled_descriptors=lab)
    pos = [int(p) for p in fn(ctx)]
    # A broken strategy must fail loudly here, not hand the annotator duplicates.
    if len(pos) != ctx.k or len(set(pos)) != ctx.k or any(not 0 <= p < ctx.n for p in pos):
        raise RuntimeError(f"strategy {strategy!r} returned invalid positions {pos} for k={ctx.k}")
    if ctx.descriptors is not None and pos:
        gains = cover_gains(ctx.descriptors[pos], ctx.descriptors)
    else:
        gains = np.full(len(pos), np.nan)
    return [Selection(ids[p], float(ctx.uncertainty[p]), float(g)) for p, g in zip(pos, gains)]
