"""Folding float activation functions into integer thresholds (numpy only; runs at export time).

After a binary or integer layer, ``acc`` is an integer in a known range ``[acc_min, acc_max]``.
Any monotone map from acc to an output code -- BN + sign (BinaryNet, Courbariaux et al. 2016,
arXiv 1602.02830), BN + ReLU + k-bit quantizer, HWGQ, TSQ, featq -- is then a step function of acc
and is reproduced *exactly* by integer thresholds (METHODS.md section 5):

- ``fold_bn_sign_threshold``: ``sign(BN(acc))`` -> one ``tau`` per channel and a direction.
- ``thresholds_from_monotone``: any monotone ``code = q(acc)`` -> ``(C, L-1)`` thresholds for
  ``multi_threshold`` (``code = #{j : acc > t_j}``, or ``#{j : acc < t_j}`` when decreasing).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from seglearn.runtime.checks import KernelError

_I32 = 2**31 - 2  # keep tau +- 1 inside int32


def bn_float(acc, gamma, beta, mean, var, eps):
    """The float layer being folded, in float64 and in this order: ``gamma (acc - mean) / sqrt(var + eps) + beta``."""
    acc = np.asarray(acc, dtype=np.float64)
    return np.float64(gamma) * (acc - np.float64(mean)) / np.sqrt(np.float64(var) + np.float64(eps)) + np.float64(beta)


def _search(pred: Callable[[int], bool], lo: int, hi: int) -> int:
    """Smallest a in [lo, hi] with pred(a) true for a nondecreasing predicate; hi + 1 if none."""
    while lo <= hi:
        mid = (lo + hi) // 2
        if pred(mid):
            hi = mid - 1
        else:
            lo = mid + 1
    return lo


def fold_bn_sign_threshold(gamma, beta, mean, var, eps: float, acc_min: int, acc_max: int):
    """BN + sign on an integer accumulator -> per-channel ``(tau int32, direction int8)``.

    ``sign(y) = +1 iff y >= 0`` (BinaryNet's sign(0) = +1), ``y = gamma (acc - mean) / sigma + beta``,
    ``sigma = sqrt(var + eps) > 0``. Solving ``y >= 0`` for acc:

    - ``gamma > 0``: ``acc >= mean - beta sigma / gamma``  -> ``out = acc >= tau``, direction +1,
      ``tau = ceil(mean - beta sigma / gamma)``.
    - ``gamma < 0``: the inequality flips -> ``out = acc <= tau``, direction -1, ``tau = floor(...)``.
    - ``gamma == 0``: constant ``sign(beta)``: direction +1 with ``tau = acc_min`` (always +1) or
      ``acc_max + 1`` (never).

    The closed form is only the starting point: float rounding of ``y`` near the boundary could move
    the true step by one, so ``tau`` is then pinned by bisection on the float predicate itself
    (``bn_float`` is weakly monotone in acc since every correctly rounded operation is). The result
    equals ``bn_float(acc) >= 0`` for every integer acc in ``[acc_min, acc_max]`` exactly.
    ``tau`` is clipped to ``[acc_min, acc_max + 1]`` (direction +1) or ``[acc_min - 1, acc_max]`` (-1).
    """
    params = [np.atleast_1d(np.asarray(v, dtype=np.float64)) for v in (gamma, beta, mean, var)]
    try:
        gamma, beta, mean, var = np.broadcast_arrays(*params)
    except ValueError:
        raise KernelError(f"gamma, beta, mean, var must have one shape, got {[p.shape for p in params]}") from None
    if gamma.ndim != 1:
        raise KernelError(f"BN parameters must be per-channel vectors, got shape {gamma.shape}")
    acc_min, acc_max = int(acc_min), int(acc_max)
    if not -_I32 <= acc_min <= acc_max <= _I32:
        raise KernelError(f"need -(2^31-2) <= acc_min <= acc_max <= 2^31-2, got [{acc_min}, {acc_max}]")
    if not all(np.all(np.isfinite(p)) for p in (gamma, beta, mean, var)) or not np.isfinite(eps):
        raise KernelError("BN parameters must be finite")
    if np.any(var + eps <= 0):
        raise KernelError("var + eps must be > 0")
    tau = np.empty(gamma.shape, dtype=np.int64)
    direction = np.empty(gamma.shape, dtype=np.int8)
    for c in range(gamma.size):
        def y_nonneg(a: int, c=c) -> bool:
            return bool(bn_float(a, gamma[c], beta[c], mean[c], var[c], eps) >= 0)

        if gamma[c] > 0:  # predicate nondecreasing in acc
            direction[c] = 1
            tau[c] = _search(y_nonneg, acc_min, acc_max)
        elif gamma[c] < 0:  # predicate nonincreasing: largest a with y >= 0
            direction[c] = -1
            tau[c] = _search(lambda a: not y_nonneg(a), acc_min, acc_max) - 1
        else:
            direction[c] = 1
            tau[c] = acc_min if beta[c] >= 0 else acc_max + 1
    return tau.astype(np.int32), direction


def thresholds_from_monotone(q: Callable[[np.ndarray], np.ndarray], acc_min: int, acc_max: int,
                             n_levels: int, increasing: bool = True) -> np.ndarray:
    """Integer thresholds reproducing a monotone per-channel code map ``q`` on ``[acc_min, acc_max]``.

    ``q`` takes an int64 array of accumulators ``(N,)`` and returns codes ``(N, C)`` in
    ``[0, n_levels)``, each column monotone in acc. Returns ascending ``t`` of shape ``(C, L-1)`` with
    ``q(acc)[c] == #{j : acc > t[c, j]}`` (increasing) or ``#{j : acc < t[c, j]}`` (decreasing) for
    every integer acc in range: ``t_j = max{a : q(a) <= j}`` resp. ``min{a : q(a) <= j}``.
    Found by bisection (about 32 evaluations of ``q`` per level).
    """
    acc_min, acc_max = int(acc_min), int(acc_max)
    if not -_I32 <= acc_min <= acc_max <= _I32:
        raise KernelError(f"need a valid int32 accumulator range, got [{acc_min}, {acc_max}]")
    if n_levels < 2:
        raise KernelError(f"n_levels must be >= 2, got {n_levels}")

    def codes(a: int) -> np.ndarray:
        out = np.asarray(q(np.array([a], dtype=np.int64)))
        return out.reshape(1, -1)[0]

    n_ch = codes(acc_min).size
    t = np.empty((n_ch, n_levels - 1), dtype=np.int64)
    for c in range(n_ch):
        for j in range(n_levels - 1):
            if increasing:  # q(a) > j is nondecreasing; t_j = (first a with q > j) - 1
                t[c, j] = _search(lambda a: codes(a)[c] > j, acc_min, acc_max) - 1
            else:  # q(a) <= j is nondecreasing; t_j = first a with q <= j
                t[c, j] = _search(lambda a: codes(a)[c] <= j, acc_min, acc_max)
    return np.sort(t, axis=1).astype(np.int32)
