"""bench/al.py end to end on a tiny synthetic pool (2 strategies x 2 seeds, a few steps): the
results file has issue 15's names, its statistics follow from its points, and --resume continues
a killed run with only what is missing."""

import json

import numpy as np
import pytest

from bench_scripts import load_bench

TINY = ["synthetic.size=64", "data.crop=32", "model.width=4", "model.depth=3", "train.steps=2",
        "ensemble.steps=2", "ensemble.members=2", "data.batch_size=2", "train.bf16=false",
        "active.budget=4", "active.candidates=6", "ensemble.continue_fraction=0.5"]


def _bench():
    return load_bench("al")


def _argv(out, *extra):
    argv = ["--synthetic", "24", "--out", str(out), "--strategies", "random,suggestive",
            "--seeds", "0,1", "--no-progress"]
    for s in TINY:
        argv += ["--set", s]
    return argv + list(extra)


def _alc(f, v):
    f, v = np.asarray(f, float), np.asarray(v, float)
    return float(np.sum(np.diff(f) * (v[1:] + v[:-1]) / 2) / (f[-1] - f[0]))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("al") / "al"
    al = _bench()
    al.main(_argv(out))
    return al, out, json.loads(out.with_suffix(".json").read_text())


def test_results_file_has_the_issue_names(run):
    _, out, d = run
    for key in ("points", "summary", "paired", "descriptor", "command"):
        assert key in d
    assert d["command"].startswith("python bench/al.py --synthetic 24")
    for p in d["points"]:
        assert p["strategy"] in ("random", "suggestive")
        assert {"strategy", "seed", "fraction", "n_labeled", "f1", "obj_dice"} <= set(p)
        assert isinstance(p["seed"], int) and 0 < p["fraction"] <= 1
        assert {"command", "config_hash", "run"} <= set(p)
    for s in ("random", "suggestive"):
        assert {"alc_mean", "alc_std", "seeds"} <= set(d["summary"][s])
    assert {"alc_diff_mean", "alc_diff_std"} <= set(d["paired"]["suggestive-random"])
    assert {"dataset", "median_cosine", "gain_ratio_2_8"} <= set(d["descriptor"])
    assert d["descriptor"]["dataset"] == "synthetic"
    assert out.with_suffix(".png").stat().st_size > 5000


def test_protocol_points(run):
    _, _, d = run
    # pool 18 (24 minus 25% test): start 2 (10%), +4 per round, to 9 (50%)
    for s in ("random", "suggestive"):
        for seed in (0, 1):
            pts = sorted((p for p in d["points"] if p["strategy"] == s and p["seed"] == seed),
                         key=lambda p: p["round"])
            assert [p["n_labeled"] for p in pts] == [2, 6, 9]
            assert pts[-1]["fraction"] == pytest.approx(0.5)
    # round 0 (the start set) trained once per seed, by the first strategy
    shared = [p for p in d["points"] if p.get("shared_from")]
    assert {(p["strategy"], p["seed"], p["round"]) for p in shared} == {("suggestive", 0, 0),
                                                                        ("suggestive", 1, 0)}
    assert [r["n_labeled"] for r in d["reference"]] == [18, 18]


def test_statistics_follow_from_the_points(run):
    _, _, d = run
    alcs = {}
    for s in ("random", "suggestive"):
        for seed in (0, 1):
            pts = sorted((p for p in d["points"] if p["strategy"] == s and p["seed"] == seed),
                         key=lambda p: p["fraction"])
            alcs[s, seed] = _alc([p["fraction"] for p in pts], [p["f1"] for p in pts])
        vals = [alcs[s, 0], alcs[s, 1]]
        assert d["summary"][s]["alc_mean"] == pytest.approx(np.mean(vals))
        assert d["summary"][s]["alc_std"] == pytest.approx(np.std(vals, ddof=1))
        assert d["summary"][s]["seeds"] == 2
    diffs = [alcs["suggestive", k] - alcs["random", k] for k in (0, 1)]
    assert d["paired"]["suggestive-random"]["alc_diff_mean"] == pytest.approx(np.mean(diffs))
    assert d["paired"]["suggestive-random"]["alc_diff_std"] == pytest.approx(np.std(diffs, ddof=1))
    ref = np.mean([r["f1"] for r in d["reference"]])
    assert d["answers"]["suggestive_reaches_full_f1"]["answer"] == bool(
        d["summary"]["suggestive"]["end_mean"] >= ref)
    # cost: a curve's CPU time is its rounds' plus its own points'
    for s in ("random", "suggestive"):
        for seed in (0, 1):
            want = sum(r["cpu_seconds"] for r in d["cost"]["rounds"]
                       if r["strategy"] == s and r["seed"] == seed) + sum(
                p["cpu_seconds"] for p in d["points"]
                if p["strategy"] == s and p["seed"] == seed and not p.get("shared_from"))
            assert d["cost"]["curves"][s][str(seed)]["cpu_seconds"] == pytest.approx(want)
            assert want > 0
    assert len([r for r in d["cost"]["rounds"] if r["strategy"] == "suggestive"]) == 4


def test_resume_runs_only_what_is_missing(run):
    al, out, d = run
    path = out.with_suffix(".json")
    with pytest.raises(SystemExit, match="--resume"):
        al.main(_argv(out))
    # a run killed after the last round of (suggestive, 1) was trained, before its point was
    # written: the point and the curve's finished mark are missing from the JSON
    cut = dict(d)
    last = max((p for p in d["points"] if p["strategy"] == "suggestive" and p["seed"] == 1),
               key=lambda p: p["round"])
    cut["points"] = [p for p in d["points"] if p is not last and p != last]
    cut["finished"] = [f for f in d["finished"] if f != ["suggestive", 1]]
    path.write_text(json.dumps(cut))
    al.main(_argv(out, "--resume"))
    new = json.loads(path.read_text())
    assert len(new["points"]) == len(d["points"])
    added = [p for p in new["points"] if p["run"] == 1]
    assert [(p["strategy"], p["seed"], p["round"]) for p in added] == [
        ("suggestive", 1, last["round"])]
    # the final segmenter of that round was trained before the kill: kept, not trained again
    assert added[0]["f1"] == pytest.approx(last["f1"])
    assert len(new["runs"]) == 2 and "--resume" in new["runs"][1]["command"]
    with pytest.raises(SystemExit, match="another protocol"):
        al.main(_argv(out, "--resume", "--seeds", "0"))
