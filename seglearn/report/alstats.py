"""Statistics of active-learning curves over seeds (issue 15 item 3): what a reader needs to tell a
strategy effect from training noise.

A curve is one strategy and one seed: points ``(fraction labeled, metric)``.

- per fraction: mean and sample standard deviation (ddof 1; None for one seed) over the seeds;
- ALC, the normalised area under the learning curve: ``ALC = (1 / (hi - lo)) * integral_lo^hi
  m(f) df`` with the trapezoid rule on the curve's points, linearly interpolated at ``lo``/``hi``;
  ``[lo, hi]`` is the range every curve covers (the largest first fraction, the smallest last one),
  so every strategy is integrated over the same fractions and a flat curve at m has ALC m
  (the normalisation of the active-learning challenge, Guyon et al. 2011, without its log scale);
- paired differences ``ALC(a, seed) - ALC(b, seed)`` over the seeds both ran (the seed fixes the
  start set and the training, so pairing removes their share of the noise): mean and std;
- the fraction a strategy needs to reach ``share`` (0.95) of the full-data reference: the first
  crossing of its mean curve, linearly interpolated between the points around it; None if never.
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np


def mean_std(values: Iterable[float]) -> tuple[float, float | None, int]:
    """Mean, sample standard deviation (ddof 1; None with fewer than two values) and count."""
    v = np.asarray(list(values), dtype=float)
    if v.size == 0:
        raise ValueError("mean_std of no values")
    return float(v.mean()), (float(v.std(ddof=1)) if v.size > 1 else None), int(v.size)


def interp(fractions: list[float], values: list[float], x: float) -> float:
    """The piecewise-linear curve through the points at ``x`` (within their range)."""
    f, v = _sorted(fractions, values)
    if not f[0] - 1e-12 <= x <= f[-1] + 1e-12:
        raise ValueError(f"fraction {x} outside the curve's range [{f[0]}, {f[-1]}]")
    return float(np.interp(x, f, v))


def alc(fractions: list[float], values: list[float], lo: float, hi: float) -> float:
    """Normalised area under the curve over ``[lo, hi]`` (trapezoids; the curve is interpolated at
    the ends). ``lo == hi``: the value there."""
    f, v = _sorted(fractions, values)
    if hi < lo:
        raise ValueError(f"empty fraction range [{lo}, {hi}]")
    if hi - lo < 1e-12:
        return interp(f, v, lo)
    inside = (f > lo + 1e-12) & (f < hi - 1e-12)
    xs = np.concatenate([[lo], f[inside], [hi]])
    ys = np.concatenate([[interp(f, v, lo)], v[inside], [interp(f, v, hi)]])
    return float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2) / (hi - lo))


def common_range(curves: Iterable[tuple[list[float], list[float]]]) -> tuple[float, float]:
    """``(lo, hi)``: the fractions every curve covers."""
    spans = [(min(f), max(f)) for f, _ in curves if len(f)]
    if not spans:
        raise ValueError("no curves")
    lo, hi = max(s[0] for s in spans), min(s[1] for s in spans)
    if hi < lo:
        raise ValueError(f"the curves share no fraction range (from {lo} to {hi})")
    return lo, hi


def reach_fraction(fractions: list[float], values: list[float], target: float) -> float | None:
    """The first fraction at which the curve reaches ``target`` (linear interpolation between the
    last point below and the first at or above it); the first fraction when it starts above;
    None when it never does."""
    f, v = _sorted(fractions, values)
    for i in range(len(f)):
        if v[i] >= target:
            if i == 0:
                return float(f[0])
            t = (target - v[i - 1]) / (v[i] - v[i - 1])
            return float(f[i - 1] + t * (f[i] - f[i - 1]))
    return None


def _sorted(fractions, values) -> tuple[np.ndarray, np.ndarray]:
    f, v = np.asarray(fractions, dtype=float), np.asarray(values, dtype=float)
    if f.shape != v.shape or f.ndim != 1 or f.size == 0:
        raise ValueError(f"a curve needs as many fractions as values, at least one: {f.shape} "
                         f"vs {v.shape}")
    order = np.argsort(f, kind="stable")
    return f[order], v[order]


def _key(x: float) -> float:
    return round(float(x), 9)


def curves_of(points: list[dict], metric: str) -> dict[str, dict[int, tuple[list, list]]]:
    """strategy -> seed -> (fractions, values), points sorted by fraction."""
    out: dict[str, dict[int, tuple[list, list]]] = {}
    for p in sorted(points, key=lambda p: (p["strategy"], p["seed"], p["fraction"])):
        if p.get(metric) is None or (isinstance(p[metric], float) and math.isnan(p[metric])):
            continue
        f, v = out.setdefault(p["strategy"], {}).setdefault(int(p["seed"]), ([], []))
        f.append(float(p["fraction"]))
        v.append(float(p[metric]))
    return out


def per_fraction(points: list[dict], metric: str) -> dict[str, list[dict]]:
    """strategy -> [{fraction, mean, std, n}] over the seeds at each fraction."""
    groups: dict[str, dict[float, list[float]]] = {}
    for p in points:
        if p.get(metric) is None:
            continue
        groups.setdefault(p["strategy"], {}).setdefault(_key(p["fraction"]), []).append(
            float(p[metric]))
    out = {}
    for s, by_f in groups.items():
        out[s] = []
        for f in sorted(by_f):
            m, sd, n = mean_std(by_f[f])
            out[s].append({"fraction": f, "mean": m, "std": sd, "n": n})
    return out


def summarize(points: list[dict], reference: list[dict] | None = None, metric: str = "f1",
              baseline: str = "random", share: float = 0.95,
              pairs: list[tuple[str, str]] | None = None) -> dict:
    """Everything of issue 15 item 3 for ``metric``.

    Returns ``{"range": [lo, hi], "summary": {strategy: {alc_mean, alc_std, seeds, alc_per_seed,
    curve, reach_<share>, end_mean, end_std}}, "paired": {"a-b": {alc_diff_mean, alc_diff_std,
    seeds, alc_diff_per_seed}}, "reference": {mean, std, n}}``. ``pairs`` default: every strategy
    against ``baseline``, and suggestive against suggestive-float where both ran."""
    curves = curves_of(points, metric)
    lo, hi = common_range(c for by_seed in curves.values() for c in by_seed.values())
    ref = None
    if reference:
        vals = [float(r[metric]) for r in reference if r.get(metric) is not None]
        if vals:
            m, sd, n = mean_std(vals)
            ref = {"mean": m, "std": sd, "n": n}
    means = per_fraction(points, metric)
    summary: dict[str, dict] = {}
    alcs: dict[str, dict[int, float]] = {}
    for s, by_seed in curves.items():
        alcs[s] = {seed: alc(f, v, lo, hi) for seed, (f, v) in by_seed.items()}
        m, sd, n = mean_std(alcs[s].values())
        ends = [v[-1] for f, v in by_seed.values()]
        em, esd, _ = mean_std(ends)
        row = {"alc_mean": m, "alc_std": sd, "seeds": n,
               "alc_per_seed": {str(k): a for k, a in sorted(alcs[s].items())},
               "end_mean": em, "end_std": esd, "curve": means[s]}
        if ref is not None:
            row[f"reach_{share:g}"] = reach_fraction([c["fraction"] for c in means[s]],
                                                     [c["mean"] for c in means[s]],
                                                     share * ref["mean"])
        summary[s] = row
    if pairs is None:
        pairs = [(s, baseline) for s in sorted(curves) if s != baseline and baseline in curves]
        if "suggestive" in curves and "suggestive-float" in curves:
            pairs.append(("suggestive", "suggestive-float"))
    paired = {}
    for a, b in pairs:
        if a not in alcs or b not in alcs:
            continue
        seeds = sorted(set(alcs[a]) & set(alcs[b]))
        if not seeds:
            continue
        diffs = {seed: alcs[a][seed] - alcs[b][seed] for seed in seeds}
        m, sd, n = mean_std(diffs.values())
        paired[f"{a}-{b}"] = {"alc_diff_mean": m, "alc_diff_std": sd, "seeds": n,
                              "alc_diff_per_seed": {str(k): d for k, d in diffs.items()}}
    return {"metric": metric, "range": [lo, hi], "summary": summary, "paired": paired,
            "reference": ref}
