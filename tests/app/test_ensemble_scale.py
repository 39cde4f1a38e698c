"""ensemble.scale: the suggestive ensemble trains and scores at data.scale * ensemble.scale, the
final segmenter trains and is evaluated at data.scale, and scores never mix resolutions."""

import json

import pytest

import seglearn.app.samples
from seglearn.app.evaluate import evaluate_workspace
from seglearn.app.init import init_workspace
from seglearn.app.select import select_workspace
from seglearn.app.train import train_workspace
from seglearn.config import load_config
from seglearn.models.ensemble import Ensemble, load_ensemble
from seglearn.models.fcn import FCN
from seglearn.models.fused import FrozenFCN, FusedFCN

SIZE = 64  # synthetic image side: the suggestive ensemble sees 64 * 0.5 * 0.5 = 16 px
TINY = [f"synthetic.size={SIZE}", "data.crop=32", "model.width=4", "model.depth=3",
        "train.steps=2", "ensemble.members=2", "data.batch_size=2", "train.bf16=false",
        "active.budget=2", "active.candidates=3", "data.scale=0.5", "ensemble.scale=0.5",
        "ensemble.quant.weight=null", "final.quant.weight=null"]


@pytest.fixture
def spies(monkeypatch):
    """Record the scale every training pipeline is built with and the (h, w) of every image the
    FCN sees, one entry per image of a batch (the resolution a model really runs at; the
    all-zero warm-up forward of models.checkpoint.load_trained is not an image and is left out)."""
    seen = {"train": [], "inputs": []}
    real_transforms = seglearn.app.samples.train_transforms

    def transforms(*args, **kwargs):
        seen["train"].append(kwargs["scale"])
        return real_transforms(*args, **kwargs)

    def spy(real):
        def forward_features(self, x):
            if x.any():
                seen["inputs"].extend([tuple(x.shape[-2:])] * x.shape[0])
            return real(self, x)
        return forward_features

    monkeypatch.setattr(seglearn.app.samples, "train_transforms", transforms)  # make_batches calls it
    # the trained FCN, and the fused (frozen) copies the ensemble runs (seglearn.models.fused)
    for cls in (FCN, FusedFCN, FrozenFCN):
        monkeypatch.setattr(cls, "forward_features", spy(cls.forward_features))
    return seen


@pytest.fixture
def ws(tmp_path):
    cfg = load_config(None, TINY)
    return init_workspace(tmp_path / "ws", cfg, synthetic=8, seed=0, progress=False), cfg


def test_suggestive_at_ensemble_scale_final_at_data_scale(ws, spies):
    ws, cfg = ws
    train_workspace(ws, cfg, progress=False)
    assert spies["train"] == [0.25, 0.25]          # data.scale * ensemble.scale, both members
    ens = load_ensemble(ws, "suggestive")
    assert ens.scale == 0.25
    assert all(json.loads(p.with_suffix(".json").read_text())["scale"] == 0.25 for p in ens.paths)

    spies["inputs"].clear()
    n_unlabeled = len(ws.unlabeled("pool"))
    res = select_workspace(ws, cfg, progress=False)
    assert res.sheet_path.is_file() and len(res.rows) == 2
    # every forward of select, 2 members x (the pool's scores + the sheet's 2 pictures), ran at
    # 64 * 0.25 = 16 px
    assert len(spies["inputs"]) == 2 * (n_unlabeled + 2)
    assert set(spies["inputs"]) == {(16, 16)}
    assert ws.score_versions() == [ens.version] and ens.version.endswith("-x0.25")

    spies["train"].clear()
    train_workspace(ws, cfg, final=True, progress=False)
    assert spies["train"] == [0.5]                  # the final segmenter keeps data.scale
    assert load_ensemble(ws, "final").scale == 0.5
    spies["inputs"].clear()
    evaluate_workspace(ws, cfg, progress=False, overlays=False)
    assert set(spies["inputs"]) == {(32, 32)}      # evaluation too: 64 * 0.5


def test_select_runs_at_the_trained_scale_and_never_mixes_scores(ws, spies):
    ws, cfg = ws
    train_workspace(ws, cfg, progress=False)
    # The config changed after training: the members still run at the factor they learned at.
    later = load_config(None, TINY + ["ensemble.scale=1.0"])
    spies["inputs"].clear()
    select_workspace(ws, later, progress=False)
    assert set(spies["inputs"]) == {(16, 16)}

    # Members saved without a recorded scale (older seglearn): the config's factor, and a score
    # version of its own, so the 0.25 scores above are not read back as 0.5 ones.
    ens = load_ensemble(ws, "suggestive")
    for p in ens.paths:
        side = p.with_suffix(".json")
        side.write_text(json.dumps({k: v for k, v in json.loads(side.read_text()).items()
                                    if k != "scale"}))
    # load_ensemble resolves the missing factor once, from the config it is given
    assert load_ensemble(ws, "suggestive", later).scale == 0.5             # 0.5 * 1.0
    assert load_ensemble(ws, "suggestive", cfg).scale == 0.25              # 0.5 * 0.5
    assert load_ensemble(ws, "suggestive").scale == 0.25  # no cfg: the workspace's (= cfg)
    spies["inputs"].clear()
    select_workspace(ws, later, progress=False)
    assert set(spies["inputs"]) == {(32, 32)}      # 64 * 0.5 * 1.0
    assert len(ws.score_versions()) == 2 and ens.version in ws.score_versions()

    # Members of one round that disagree cannot be one ensemble.
    side = ens.paths[0].with_suffix(".json")
    side.write_text(json.dumps({**json.loads(side.read_text()), "scale": 0.5}))
    with pytest.raises(ValueError, match="different scales"):
        load_ensemble(ws, "suggestive")


def test_final_model_is_evaluated_and_exported_at_its_trained_scale(ws, spies, tmp_path):
    """A config changed after training (data.scale 0.5 -> 1.0) does not change the resolution the
    final segmenter runs at: evaluate, tune and export read the sidecars' factor."""
    from seglearn.app.export import export_workspace
    from seglearn.runtime.model import load_model

    ws, cfg = ws
    train_workspace(ws, cfg, final=True, progress=False)
    later = load_config(None, TINY + ["data.scale=1.0", "postprocess.tune=true"])
    spies["inputs"].clear()
    evaluate_workspace(ws, later, progress=False, overlays=False)
    assert spies["inputs"] and set(spies["inputs"]) == {(32, 32)}  # 64 * 0.5, as trained
    info = export_workspace(ws, tmp_path / "final.slq", cfg=later)
    assert load_model(info["path"]).scale == 0.5


def test_scores_reduced_another_way_are_stored_apart(ws, spies):
    """active.reduction changes every stored number: changing it re-scores under its own key
    instead of reading back the mean-reduced scores."""
    from seglearn.app.select import score_version

    ws, cfg = ws
    train_workspace(ws, cfg, progress=False)
    ens = load_ensemble(ws, "suggestive")
    select_workspace(ws, cfg, progress=False)
    spies["inputs"].clear()
    n_unlabeled = len(ws.unlabeled("pool"))
    select_workspace(ws, load_config(None, TINY + ["active.reduction=max"]), progress=False)
    assert len(spies["inputs"]) == 2 * (n_unlabeled + 2)  # the whole pool again, and the sheet
    key = score_version(ens, "max")
    assert key == ens.version + "-max" and score_version(ens, "mean") == ens.version
    assert sorted(ws.score_versions()) == sorted([ens.version, key])
    mean, top = ws.scores(ens.version), ws.scores(key)
    assert mean.keys() == top.keys()
    assert all(top[i][0]["std"] >= mean[i][0]["std"] for i in mean)  # max >= mean of one map
    assert any(top[i][0]["std"] > mean[i][0]["std"] for i in mean)


def test_score_version_names_the_scale():
    assert Ensemble([], [], 3, "suggestive").version == "suggestive-round03"  # stored scores stay valid
    assert Ensemble([], [], 3, "suggestive", 1.0).version == "suggestive-round03"
    assert Ensemble([], [], 3, "suggestive", 0.5).version == "suggestive-round03-x0.5"
