"""bench/recipe.py (issue 14 item 4) end to end on a tiny synthetic pool: the held-out split of the
training images, one row per variant and seed scored on it, the paired summary and --resume."""

import json

import numpy as np
import pytest

from bench_scripts import load_bench

# final.* and tta pinned to their defaults: the test's variants change them, whatever the recipe
# configs/glas-cpu.yaml (the script's default config) carries
TINY = ["synthetic.size=64", "data.crop=32", "model.width=4", "model.depth=3", "train.steps=4",
        "data.batch_size=2", "train.bf16=false", "final.lr=null", "final.warmup=null",
        "postprocess.tta=false"]


def _bench():
    return load_bench("recipe")


def _argv(out):
    argv = ["--synthetic", "10", "--out", str(out), "--seeds", "0,1", "--val", "3",
            "--variants", "tta,baseline,lr4e-3", "--variant", "wide:model.width=6",
            "--variant", "lr4e-3_tta:final.lr=4e-3,postprocess.tta=true", "--no-progress"]
    for s in TINY:
        argv += ["--set", s]
    return argv


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("recipe") / "recipe"
    res = _bench().main(_argv(out))
    return out, res


def test_split_holds_out_training_images_and_fits_on_the_rest(run, tmp_path):
    from seglearn.data.synthetic import make_synthetic

    out, res = run
    pool = {s.name for s in make_synthetic(10, tmp_path, seed=0) if s.split == "pool"}
    val = sorted(p.stem for p in (out / "split" / "val" / "images").iterdir())
    fit = sorted(p.stem for p in (out / "split" / "fit" / "images").iterdir())
    assert val == sorted(res["split"]["val"]) and len(val) == 3
    assert not set(val) & set(fit) and len(fit) == res["split"]["fit"]
    assert set(val) | set(fit) == pool  # the training images, all of them; never the test split
    assert all((out / "split" / "val" / "images" / f"{n}.png").is_symlink() for n in val)


def test_one_scored_row_per_variant_and_seed_with_the_overrides_applied(run):
    _, res = run
    rows = {(r["variant"], r["seed"]): r for r in res["rows"]}
    assert set(rows) == {(v, s) for v in ("baseline", "lr4e-3", "wide", "tta", "lr4e-3_tta")
                         for s in (0, 1)}
    assert rows[("wide", 0)]["overrides"] == {"model.width": 6}
    assert all(r["n_val"] == 3 and 0 <= r["f1"] <= 1 and r["steps"] == [4] for r in rows.values())
    assert rows[("baseline", 0)]["config_hash"] != rows[("wide", 0)]["config_hash"]


def test_summary_is_the_paired_difference_to_baseline(run):
    _, res = run
    rows = {(r["variant"], r["seed"]): r for r in res["rows"]}
    d = [rows[("lr4e-3", s)]["f1"] - rows[("baseline", s)]["f1"] for s in (0, 1)]
    got = res["summary"]["lr4e-3"]
    assert got["f1_minus_baseline"]["mean"] == pytest.approx(np.mean(d))
    assert got["f1_minus_baseline"]["std"] == pytest.approx(np.std(d))
    assert got["kept"] == bool(np.mean(d) > 0 and np.mean(d) > np.std(d))
    assert "kept" not in res["summary"]["baseline"]


def test_a_postprocessing_only_variant_retunes_its_twins_weights(run):
    """tta trains nothing: it re-tunes and scores a copy of the same seed's baseline model."""
    from seglearn.store.digest import file_sha256

    out, res = run
    rows = {(r["variant"], r["seed"]): r for r in res["rows"]}
    order = [(r["variant"], r["seed"]) for r in res["rows"]]
    for i, r in enumerate(res["rows"]):  # a twin trains before the rows that re-tune its model
        if r.get("trained_by"):
            assert order.index((r["trained_by"], r["seed"])) < i
    for s in (0, 1):
        tta, base = rows[("tta", s)], rows[("baseline", s)]
        assert tta["trained_by"] == "baseline" and "trained_by" not in base
        assert tta["steps"] == base["steps"] and tta["train_seconds"] == base["train_seconds"]
        assert tta["postprocess"]["config_hash"] != base["postprocess"]["config_hash"]  # re-tuned
        ckpts = [sorted((out / "workspaces" / f"{v}-seed{s}").rglob("*.pt")) for v in ("baseline", "tta")]
        assert ckpts[0] and [p.name for p in ckpts[0]] == [p.name for p in ckpts[1]]
        assert [file_sha256(p) for p in ckpts[0]] == [file_sha256(p) for p in ckpts[1]]
    assert rows[("lr4e-3", 0)].get("trained_by") is None  # a training change trains
    # --variant's "4e-3" (a YAML string) is the same learning rate as VARIANTS' 4e-3
    assert rows[("lr4e-3_tta", 1)]["trained_by"] == "lr4e-3"


def test_resume_keeps_finished_rows(run, monkeypatch):
    out, res = run
    bench = _bench()
    monkeypatch.setattr(bench, "run_row", lambda *a, **k: pytest.fail("--resume retrained a finished row"))
    again = bench.main(_argv(out) + ["--resume"])
    assert again["rows"] == json.loads(json.dumps(res["rows"], default=str))


class _Reached(Exception):
    pass


def test_a_train_lr_variant_is_refused_where_final_lr_is_set(tmp_path, monkeypatch):
    """With final.lr in the config, train.lr no longer reaches the final segmenter: the variant
    would train the baseline twice and report noise as its effect."""
    argv = ["--synthetic", "10", "--out", str(tmp_path / "r"), "--variant", "trainlr:train.lr=4e-3",
            "--set", "final.warmup=null", "--set", "final.lr=0.003"]
    with pytest.raises(SystemExit, match="variant trainlr sets train.lr.*final.lr=0.003.*set final.lr"):
        _bench().main(argv)
    argv[-1] = "final.lr=null"  # final.lr unset: train.lr reaches the final segmenter, training starts
    bench = _bench()

    def run_row(*a, **k):
        raise _Reached(a[1])

    monkeypatch.setattr(bench, "run_row", run_row)
    with pytest.raises(_Reached, match="baseline"):
        bench.main(argv)


def test_thin_structures_are_judged_by_pixel_dice(tmp_path):
    """Vessels have no object F1 (evaluate scores them by pixels): the synthetic pool is the
    config's kind, and the summary's objective, differences and kept rule are pixel Dice's."""
    argv = ["--synthetic", "8", "--out", str(tmp_path / "v"), "--seeds", "0,1", "--val", "2",
            "--variants", "baseline,tta", "--no-progress", "--set", "synthetic.kind=vessels"]
    for s in TINY:
        argv += ["--set", s]
    res = _bench().main(argv)
    masks = sorted((tmp_path / "v" / "data" / "masks").iterdir())
    from seglearn.data import read_mask

    assert masks and read_mask(masks[0]).shape == (64, 64)  # synthetic.size reached the generator
    rows = {(r["variant"], r["seed"]): r for r in res["rows"]}
    assert all(r["f1"] is None and 0 <= r["pixel_dice"] <= 1 for r in rows.values())
    d = [rows[("tta", s)]["pixel_dice"] - rows[("baseline", s)]["pixel_dice"] for s in (0, 1)]
    got = res["summary"]["tta"]
    assert got["objective"] == "pixel_dice" and "f1_minus_baseline" not in got
    assert got["pixel_dice_minus_baseline"]["mean"] == pytest.approx(np.mean(d))
    assert got["kept"] == bool(np.mean(d) > 0 and np.mean(d) > np.std(d))
    assert "pixel Dice − baseline" in _bench().table(res["summary"])
