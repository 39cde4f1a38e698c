"""seglearn.report.alstats against hand-computed small cases."""

import math

import pytest

from seglearn.report.alstats import (alc, common_range, mean_std, per_fraction, reach_fraction,
                                     summarize)

F = [0.1, 0.3, 0.5]


def test_alc_trapezoids_normalised_by_the_range():
    # 0.2 * (0.2 + 0.6) / 2 + 0.2 * 0.6 = 0.20 over a range of 0.4
    assert alc(F, [0.2, 0.6, 0.6], 0.1, 0.5) == pytest.approx(0.5)
    # a flat curve has its value as ALC
    assert alc(F, [0.7, 0.7, 0.7], 0.1, 0.5) == pytest.approx(0.7)
    # the ends interpolated: m(0.2) = 0.4; (0.1 * (0.4 + 0.6) / 2 + 0.2 * 0.6) / 0.3
    assert alc(F, [0.2, 0.6, 0.6], 0.2, 0.5) == pytest.approx(0.17 / 0.3)
    # order of the points does not matter
    assert alc([0.5, 0.1, 0.3], [0.6, 0.2, 0.6], 0.1, 0.5) == pytest.approx(0.5)
    assert alc(F, [0.2, 0.6, 0.6], 0.3, 0.3) == pytest.approx(0.6)
    with pytest.raises(ValueError, match="outside"):
        alc(F, [0.2, 0.6, 0.6], 0.0, 0.5)


def test_common_range_is_what_every_curve_covers():
    assert common_range([([0.1, 0.3, 0.5], [0, 0, 0]), ([0.2, 0.3], [0, 0])]) == (0.2, 0.3)
    with pytest.raises(ValueError, match="share no"):
        common_range([([0.1, 0.2], [0, 0]), ([0.3, 0.4], [0, 0])])


def test_reach_fraction_interpolates_the_first_crossing():
    assert reach_fraction(F, [0.2, 0.6, 0.6], 0.5) == pytest.approx(0.1 + 0.75 * 0.2)
    assert reach_fraction(F, [0.2, 0.6, 0.6], 0.6) == pytest.approx(0.3)
    assert reach_fraction(F, [0.2, 0.6, 0.6], 0.1) == pytest.approx(0.1)   # starts above
    assert reach_fraction(F, [0.2, 0.6, 0.6], 0.7) is None                  # never
    # a curve that dips: the first crossing counts
    assert reach_fraction([0.1, 0.2, 0.3, 0.4], [0.0, 1.0, 0.0, 1.0], 0.5) == pytest.approx(0.15)


def test_mean_std_sample_std_and_one_seed():
    m, sd, n = mean_std([0.4, 0.2])
    assert (m, n) == (pytest.approx(0.3), 2) and sd == pytest.approx(math.sqrt(0.02))
    assert mean_std([0.5]) == (0.5, None, 1)


def _pts(strategy, seed, values):
    return [{"strategy": strategy, "seed": seed, "fraction": f, "f1": v}
            for f, v in zip(F, values)]


def test_summarize_by_hand():
    points = (_pts("random", 0, [0.2, 0.4, 0.6]) + _pts("random", 1, [0.2, 0.2, 0.2])
              + _pts("suggestive", 0, [0.2, 0.6, 0.6]) + _pts("suggestive", 1, [0.4, 0.4, 0.4]))
    ref = [{"seed": 0, "f1": 0.5}, {"seed": 1, "f1": 0.5}]
    s = summarize(points, ref, "f1")
    assert s["range"] == [0.1, 0.5]
    r, g = s["summary"]["random"], s["summary"]["suggestive"]
    # random: ALC 0.4 (seed 0: (0.06 + 0.10) / 0.4) and 0.2 (flat)
    assert r["alc_per_seed"] == {"0": pytest.approx(0.4), "1": pytest.approx(0.2)}
    assert r["alc_mean"] == pytest.approx(0.3) and r["alc_std"] == pytest.approx(math.sqrt(0.02))
    assert r["seeds"] == 2
    assert g["alc_mean"] == pytest.approx(0.45)
    # paired: 0.5 - 0.4 = 0.1 and 0.4 - 0.2 = 0.2
    p = s["paired"]["suggestive-random"]
    assert p["alc_diff_mean"] == pytest.approx(0.15)
    assert p["alc_diff_std"] == pytest.approx(math.sqrt(2 * 0.05 ** 2))
    # mean curves: suggestive 0.3, 0.5, 0.5 reaches 0.95 * 0.5 = 0.475 at 0.1 + 0.175/0.2 * 0.2
    assert g["curve"][1] == {"fraction": 0.3, "mean": pytest.approx(0.5),
                             "std": pytest.approx(math.sqrt(0.02)), "n": 2}
    assert g["reach_0.95"] == pytest.approx(0.1 + (0.475 - 0.3) / 0.2 * 0.2)
    assert r["reach_0.95"] is None                                    # 0.2, 0.3, 0.4: never
    assert g["end_mean"] == pytest.approx(0.5) and s["reference"]["mean"] == pytest.approx(0.5)


def test_per_fraction_groups_equal_fractions():
    pts = [{"strategy": "a", "seed": 0, "fraction": 0.1 + 0.2, "f1": 1.0},
           {"strategy": "a", "seed": 1, "fraction": 0.3, "f1": 0.0}]
    (row,) = per_fraction(pts, "f1")["a"]
    assert row["n"] == 2 and row["mean"] == pytest.approx(0.5)
