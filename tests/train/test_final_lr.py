"""final.lr / final.warmup: the final segmenter's own optimizer settings (issue 14 item 4: the
recipe measured on the final model), null = train's; the suggestive ensemble keeps train's."""

import dataclasses

import pytest

import seglearn.app.train as train_mod
from seglearn.app.init import init_workspace
from seglearn.app.train import train_workspace
from seglearn.config import ConfigError, load_config, role_key, role_train

TINY = ["synthetic.size=32", "data.crop=32", "model.width=4", "model.depth=3",
        "ensemble.steps=2", "train.steps=2", "ensemble.members=1", "data.batch_size=2",
        "train.bf16=false", "ensemble.quant.weight=null", "final.quant.weight=null",
        "postprocess.tune=false", "train.lr=0.002", "train.warmup=0.1"]


def test_role_train_takes_the_final_keys_only_for_the_final_role():
    cfg = load_config(None, ["train.lr=0.002", "train.warmup=0.1", "final.lr=0.004",
                             "final.warmup=0.05"])
    final = role_train(cfg, "final")
    assert (final.lr, final.warmup) == (0.004, 0.05)
    # the rest of train is the same object's values
    assert dataclasses.replace(final, lr=0.002, warmup=0.1) == cfg.train
    for role in ("suggestive", None):
        assert role_train(cfg, role) is cfg.train
    with pytest.raises(ValueError, match="role"):
        role_train(cfg, "ensemble")


def test_unset_final_keys_are_train_s_and_leave_the_hash_of_before():
    cfg = load_config(None, ["train.lr=0.003", "final.warmup=0.2"])
    final = role_train(cfg, "final")
    assert (final.lr, final.warmup) == (0.003, 0.2)  # lr inherited, warm-up its own
    # null written out is the default: the same hash as a config that never named the keys
    plain = load_config(None, [])
    assert load_config(None, ["final.lr=null", "final.warmup=null"]).hash() == plain.hash()
    assert load_config(None, ["final.lr=0.002"]).hash() != plain.hash()


@pytest.mark.parametrize("key,value", [("final.lr", "0"), ("final.lr", "2"), ("final.warmup", "0.9")])
def test_final_keys_validated(key, value):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, [f"{key}={value}"])


def test_train_workspace_fits_each_role_with_its_settings(tmp_path, monkeypatch):
    seen = []
    real = train_mod.fit

    def fit(model, batches, cfg, **kw):
        seen.append((cfg.lr, cfg.warmup))
        return real(model, batches, cfg, **kw)

    monkeypatch.setattr(train_mod, "fit", fit)
    cfg = load_config(None, TINY + ["final.lr=0.004", "final.warmup=0.25"])
    ws = init_workspace(tmp_path / "ws", cfg, synthetic=8, seed=0, progress=False)
    train_workspace(ws, cfg, progress=False)
    train_workspace(ws, cfg, final=True, progress=False)
    assert seen == [(0.002, 0.1), (0.004, 0.25)]


def test_role_key_names_the_key_that_set_the_rate():
    cfg = load_config(None, ["final.lr=0.004"])
    assert role_key(cfg, "final", "train.lr") == "final.lr"
    assert role_key(cfg, "final", "train.warmup") == "train.warmup"  # final.warmup unset: inherited
    assert role_key(cfg, "suggestive", "train.lr") == role_key(cfg, None, "train.lr") == "train.lr"
    assert role_key(load_config(None, []), "final", "train.lr") == "train.lr"
    with pytest.raises(ValueError, match="role"):
        role_key(cfg, "ensemble", "train.lr")


def test_a_diverged_final_model_suggests_final_lr(tmp_path, monkeypatch):
    """The final segmenter trains with final.lr: the message of a NaN loss names that key (a lower
    train.lr would change nothing for it), the ensemble's still names train.lr."""
    import seglearn.train.engine as engine
    from seglearn.train.engine import TrainingDiverged

    real = engine.segmentation_loss
    monkeypatch.setattr(engine, "segmentation_loss",
                        lambda logits, target, weight=1.0: real(logits, target, weight) * float("nan"))
    cfg = load_config(None, TINY + ["final.lr=0.004"])
    ws = init_workspace(tmp_path / "ws", cfg, synthetic=8, seed=0, progress=False)
    with pytest.raises(TrainingDiverged, match=r"train\.lr=0\.002 is probably too high: try a "
                                               r"lower one \(e\.g\. --set train\.lr=0\.0002\)"):
        train_workspace(ws, cfg, progress=False)
    with pytest.raises(TrainingDiverged, match=r"final\.lr=0\.004 is probably too high: try a "
                                               r"lower one \(e\.g\. --set final\.lr=0\.0004\)"):
        train_workspace(ws, cfg, final=True, progress=False)
