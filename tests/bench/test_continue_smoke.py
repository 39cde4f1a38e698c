"""bench/continue.py (issue 14 item 5) end to end on a tiny synthetic pool, and its ranking
agreement measures against hand-computed cases."""

import json

import numpy as np
import pytest
from scipy import stats

from bench_scripts import load_bench

TINY = ["synthetic.size=64", "data.crop=32", "model.width=4", "model.depth=3", "train.steps=5",
        "ensemble.steps=5", "ensemble.members=2", "data.batch_size=2", "train.bf16=false",
        "active.budget=3", "active.initial_labeled=0.3"]


def _bench():
    return load_bench("continue")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("continue") / "continue"
    argv = ["--synthetic", "16", "--out", str(out), "--seeds", "0", "--fraction", "0.4",
            "--no-progress"]
    for s in TINY:
        argv += ["--set", s]
    bench = _bench()
    bench.main(argv)
    return json.loads(out.with_suffix(".json").read_text())


def test_every_arm_trains_round_r_plus_1_on_the_same_labels(run):
    arms = {r["arm"]: r for r in run["arms"]}
    assert set(arms) == {"scratch", "continued", "reseeded"}
    assert len({r["n_labeled"] for r in arms.values()}) == 1
    # the continued members carry 40% of the steps: ceil(0.4 * 5) = 2
    assert arms["scratch"]["steps"] == {"suggestive": [5, 5], "final": [5]}
    assert arms["reseeded"]["steps"] == arms["scratch"]["steps"]
    assert arms["continued"]["steps"] == {"suggestive": [2, 2], "final": [2]}
    assert arms["scratch"]["spearman_vs_scratch"] == pytest.approx(1.0)
    assert arms["scratch"]["top_k_overlap_vs_scratch"] == 1.0


def test_summary_and_target_follow_from_the_rows(run):
    arms = {r["arm"]: r for r in run["arms"]}
    c, s = arms["continued"], arms["scratch"]
    got = run["summary"]["continued"]
    assert got["f1_minus_scratch"]["mean"] == pytest.approx(c["f1"] - s["f1"])
    want = (c["ensemble_cpu_seconds"] + c["final_cpu_seconds"]) / \
        (s["ensemble_cpu_seconds"] + s["final_cpu_seconds"])
    assert got["time_ratio_vs_scratch"]["mean"] == pytest.approx(want)
    t = run["target"]
    assert t["met"] == (t["f1_minus_scratch"] >= -0.01 and t["time_ratio"] <= 0.4)
    assert run["command"].startswith("python bench/continue.py --synthetic 16")


def test_top_k_overlap_hand_computed():
    bench = _bench()
    a = {1: 0.9, 2: 0.8, 3: 0.1, 4: 0.0}
    b = {1: 0.0, 2: 0.7, 3: 0.9, 4: 0.1}
    assert bench.top_k_overlap(a, b, 2) == 0.5       # {1, 2} & {3, 2}
    assert bench.top_k_overlap(a, a, 3) == 1.0
    assert bench.top_k_overlap(a, {5: 1.0}, 2) != bench.top_k_overlap(a, {5: 1.0}, 2)  # nan


def test_spearman_matches_scipy_on_the_shared_items():
    bench = _bench()
    rng = np.random.default_rng(0)
    a = {i: float(v) for i, v in enumerate(rng.random(20))}
    b = {i: float(v) for i, v in enumerate(rng.random(25))}  # items 20..24 only in b
    want = stats.spearmanr([a[i] for i in range(20)], [b[i] for i in range(20)]).statistic
    assert bench.spearman(a, b) == pytest.approx(want)
    assert bench.spearman(a, {i: -v for i, v in a.items()}) == pytest.approx(-1.0)


def test_resume_keeps_finished_seeds_and_refuses_another_config(run, tmp_path, monkeypatch):
    """--resume runs only the seeds the file lacks (here none: seed 0 is there, so nothing trains
    and the rows are kept as they were) and refuses a file made with another config."""
    bench = _bench()
    out = tmp_path / "continue"
    out.with_suffix(".json").write_text(json.dumps(run))
    trained = []
    monkeypatch.setattr(bench, "run_seed", lambda *a, **k: trained.append(a[2]) or [])
    argv = ["--synthetic", "16", "--out", str(out), "--seeds", "0", "--fraction", "0.4",
            "--no-progress", "--resume"]
    for s in TINY:
        argv += ["--set", s]
    got = bench.main(argv)
    assert trained == [] and got["arms"] == run["arms"] and got["seeds"] == [0]
    assert got["commands"] == [run["command"], got["command"]]
    got = bench.main(argv[:5] + ["1"] + argv[6:])  # --seeds 1: seed 0 kept, seed 1 run
    assert trained == [1] and got["seeds"] == [0, 1] and got["arms"] == run["arms"]
    with pytest.raises(SystemExit, match="another config"):
        bench.main(argv + ["--set", "train.steps=6"])
    with pytest.raises(SystemExit, match="another fraction"):
        bench.main([a if a != "0.4" else "0.5" for a in argv])
