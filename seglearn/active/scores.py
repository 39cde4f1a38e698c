"""Per-pixel uncertainty maps from an ensemble's member probabilities, and reductions to one number.

Inputs (one image): member probabilities
  * (N, H, W)     binary segmentation: sigmoid foreground probability of each of the N members;
  * (N, 1, H, W)  the same with a channel axis (a 1-channel sigmoid head);
  * (N, C, H, W)  C >= 2: categorical softmax probabilities (must sum to 1 over C).
Batched inputs for ``score_batch``: (B, N, H, W) binary or (B, N, C, H, W) categorical.

Scores (registry ``SCORES``; natural logs, entropies in nats). With p_n the member probabilities
and p̄ = mean_n p_n:
  std       Yang et al. 2017 (MICCAI, arXiv 1706.04737): standard deviation across the N members,
            the *population* std (ddof=0): sqrt(mean_n (p_n - p̄)^2). Categorical: averaged over
            classes.
  variance  std^2 (population); categorical: averaged over classes.
  entropy   predictive entropy of the mean, H(p̄); binary H(p) = -p log p - (1-p) log(1-p),
            categorical H(p) = -sum_c p_c log p_c.
  bald      mutual information (Houlsby et al. 2011, arXiv 1112.5745): H(p̄) - mean_n H(p_n).

Logs: ``x log x`` is computed as ``x * log(max(x, EPS))`` with EPS = 1e-12, so x = 0 gives exactly 0
(its limit) and nothing is ever log(0); for 0 < x < EPS the error is below 3e-11.

Reductions (registry ``REDUCTIONS``; MONAI Label / baal habit: mean, not sum, so image size does
not bias the score): "mean", "max", "topk_mean" (mean of the ceil(q * pixels) largest values,
q in (0, 1], at least one pixel).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from seglearn.registry import Registry

__all__ = [
    "EPS",
    "SCORES",
    "REDUCTIONS",
    "score_map",
    "score_maps",
    "score_image",
    "score_batch",
    "score_image_all",
    "reduce_map",
    "reduce_maps",
]

EPS = 1e-12
#: Tolerance on categorical probabilities summing to 1 (loose enough for float16 softmax).
SUM_TOL = 1e-3

# A score kernel maps p of shape (B, N, C, H, W) and a ``binary`` flag to (B, H, W).
ScoreFn = Callable[[np.ndarray, bool], np.ndarray]
# A reduction maps maps of shape (B, P) (P pixels) and q to (B,).
ReduceFn = Callable[[np.ndarray, float], np.ndarray]

SCORES: Registry[ScoreFn] = Registry("uncertainty score")
REDUCTIONS: Registry[ReduceFn] = Registry("score reduction")


def _xlogx(x: np.ndarray) -> np.ndarray:
    out = np.maximum(x, EPS)
    np.log(out, out=out)  # in place: these maps are large, a temporary less is measurably faster
    out *= x
    return out


def _entropy(p: np.ndarray, binary: bool, class_axis: int) -> np.ndarray:
    """Entropy along ``class_axis``: categorical, or Bernoulli when binary (that axis is size 1)."""
    if binary:
        h = -(_xlogx(p) + _xlogx(1.0 - p))
    else:
        h = -_xlogx(p)
    return h.sum(axis=class_axis)


@SCORES.register("std")
def _score_std(p: np.ndarray, binary: bool) -> np.ndarray:
    return p.std(axis=1).mean(axis=1)  # population std over members, then mean over classes


@SCORES.register("variance")
def _score_variance(p: np.ndarray, binary: bool) -> np.ndarray:
    return p.var(axis=1).mean(axis=1)


@SCORES.register("entropy")
def _score_entropy(p: np.ndarray, binary: bool) -> np.ndarray:
    return _entropy(p.mean(axis=1), binary, class_axis=1)


@SCORES.register("bald")
def _score_bald(p: np.ndarray, binary: bool) -> np.ndarray:
    total = _entropy(p.mean(axis=1), binary, class_axis=1)
    expected = _entropy(p, binary, class_axis=2).mean(axis=1)
    # Jensen makes this >= 0; clip the rounding noise so callers never see -1e-17.
    return np.maximum(total - expected, 0.0)


@REDUCTIONS.register("mean")
def _reduce_mean(m: np.ndarray, q: float) -> np.ndarray:
    return m.mean(axis=1)


@REDUCTIONS.register("max")
def _reduce_max(m: np.ndarray, q: float) -> np.ndarray:
    return m.max(axis=1)


@REDUCTIONS.register("topk_mean")
def _reduce_topk_mean(m: np.ndarray, q: float) -> np.ndarray:
    n = m.shape[1]
    kk = max(1, math.ceil(q * n))
    top = np.partition(m, n - kk, axis=1)[:, n - kk :]  # the kk largest, unordered
    return top.mean(axis=1)


# ---------------------------------------------------------------------------------------------
# validation and shape normalisation


def _as_probs(probs: np.ndarray, batched: bool) -> tuple[np.ndarray, bool]:
    """Validate and reshape to (B, N, C, H, W); returns (array, binary)."""
    p = np.asarray(probs)
    if not np.issubdtype(p.dtype, np.floating):
        if (np.issubdtype(p.dtype, np.number) or p.dtype == bool) and not np.iscomplexobj(p):
            p = p.astype(np.float64)
        else:
            raise ValueError(f"probabilities must be real numbers, got dtype {p.dtype}")
    base = 4 if batched else 3
    what = "(B, N, H, W) or (B, N, C, H, W)" if batched else "(N, H, W) or (N, C, H, W)"
    if p.ndim not in (base, base + 1):
        raise ValueError(f"probabilities must have shape {what}, got {p.shape}")
    if not batched:
        p = p[None]
    if p.ndim == 4:  # binary without a class axis
        p = p[:, :, None]
    if p.shape[1] < 1 or p.shape[3] < 1 or p.shape[4] < 1:
        raise ValueError(f"need at least one member and one pixel, got shape {np.shape(probs)}")
    binary = p.shape[2] == 1
    if not np.all(np.isfinite(p)):
        raise ValueError("probabilities contain NaN or infinite values")
    if p.min() < 0.0 or p.max() > 1.0:
        raise ValueError(
            f"probabilities must lie in [0, 1], got range [{p.min():.4g}, {p.max():.4g}] "
            "(pass sigmoid/softmax outputs, not logits)"
        )
    if not binary:
        err = np.abs(p.sum(axis=2, dtype=np.float64) - 1.0).max()
        if err > SUM_TOL:
            raise ValueError(
                "categorical probabilities must sum to 1 over the class axis "
                f"(max error {err:.3g}); "
                "for binary maps pass (N, H, W) foreground probabilities"
            )
    return p, binary


def _check_q(q: float) -> float:
    q = float(q)
    if not (0.0 < q <= 1.0):
        raise ValueError(f"topk fraction q must lie in (0, 1], got {q}")
    return q


# ---------------------------------------------------------------------------------------------
# public API


def score_maps(probs: np.ndarray, score: str = "std") -> np.ndarray:
    """Batched per-pixel maps: (B, N, H, W) binary or (B, N, C, H, W) categorical -> (B, H, W)."""
    fn = SCORES.get(score)
    p, binary = _as_probs(probs, batched=True)
    return fn(p, binary)


def score_map(probs: np.ndarray, score: str = "std") -> np.ndarray:
    """Per-pixel uncertainty map of one image: (N, H, W) or (N, C, H, W) -> (H, W)."""
    fn = SCORES.get(score)
    p, binary = _as_probs(probs, batched=False)
    return fn(p, binary)[0]


def reduce_maps(maps: np.ndarray, reduction: str = "mean", q: float = 0.1) -> np.ndarray:
    """Reduce (B, H, W) (or (B, ...)) maps to (B,) by a named reduction."""
    fn = REDUCTIONS.get(reduction)
    m = np.asarray(maps)
    if m.ndim < 2 or m.size == 0:
        raise ValueError(f"maps must have shape (B, H, W) with pixels, got {m.shape}")
    return fn(m.reshape(m.shape[0], -1), _check_q(q))


def reduce_map(m: np.ndarray, reduction: str = "mean", q: float = 0.1) -> float:
    """Reduce one (H, W) map to a float by a named reduction."""
    m = np.asarray(m)
    if m.size == 0:
        raise ValueError("cannot reduce an empty map")
    return float(reduce_maps(m[None], reduction, q)[0])


def score_image(
    probs: np.ndarray, score: str = "std", reduction: str = "mean", q: float = 0.1
) -> float:
    """One uncertainty number for one image: ``reduction(score_map(probs, score))``.

    ``q`` is the top fraction used by the "topk_mean" reduction (ignored by the others).
    """
    REDUCTIONS.get(reduction)  # fail on a bad name before doing the work
    return reduce_map(score_map(probs, score), reduction, q)


def score_batch(
    probs: np.ndarray, score: str = "std", reduction: str = "mean", q: float = 0.1
) -> np.ndarray:
    """Vectorised ``score_image`` over a batch: (B, N, H, W) or (B, N, C, H, W) -> (B,)."""
    REDUCTIONS.get(reduction)
    return reduce_maps(score_maps(probs, score), reduction, q)


def score_image_all(
    probs: np.ndarray, scores: tuple[str, ...] | list[str] | None = None,
    reduction: str = "mean", q: float = 0.1,
) -> dict[str, float]:
    """``{score: score_image(probs, score, reduction, q)}`` for several scores of one image (None:
    every registered score, the registry being the list), with
    the input validated once and, for the built-in scores, the shared pieces computed once:
    the member mean p̄, the per-class variance (std is its square root) and the entropy H(p̄) (entropy, and
    bald = H(p̄) - mean_n H(p_n)). ``select`` stores all four per pool image, so changing
    ``active.score`` re-selects without inference; computing them together costs about half of
    four separate ``score_image`` calls. Registered custom scores are computed as usual.
    """
    REDUCTIONS.get(reduction)
    scores = SCORES.names() if scores is None else scores
    for name in scores:
        SCORES.get(name)
    q = _check_q(q)
    p, binary = _as_probs(probs, batched=False)
    shared: dict[str, np.ndarray] = {}

    def mean() -> np.ndarray:
        if "mean" not in shared:
            shared["mean"] = p.mean(axis=1)
        return shared["mean"]

    def class_variance() -> np.ndarray:  # population variance over members, per class
        if "variance" not in shared:
            d = p - mean()[:, None]
            np.square(d, out=d)
            shared["variance"] = d.mean(axis=1)
        return shared["variance"]

    def entropy() -> np.ndarray:
        if "entropy" not in shared:
            shared["entropy"] = _entropy(mean(), binary, class_axis=1)
        return shared["entropy"]

    builtin = {
        "std": lambda: np.sqrt(class_variance()).mean(axis=1),  # classes averaged after the sqrt
        "variance": lambda: class_variance().mean(axis=1),
        "entropy": entropy,
        "bald": lambda: np.maximum(entropy() - _entropy(p, binary, class_axis=2).mean(axis=1), 0.0),
    }
    out = {}
    for name in scores:
        fn = SCORES.get(name)
        is_builtin = name in builtin and fn is globals()[f"_score_{name}"]
        m = builtin[name]() if is_builtin else fn(p, binary)
        out[name] = float(REDUCTIONS.get(reduction)(m.reshape(1, -1), q)[0])
    return out
