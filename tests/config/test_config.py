"""Config schema: defaults, YAML loading, --set overrides, type and unknown-key errors."""

import pytest

from seglearn.config import Config, ConfigError, apply_overrides, config_from_dict, load_config, valid_keys


def test_defaults_are_the_paper_defaults():
    c = Config()
    assert c.ensemble.members == 4          # Yang et al. 2017
    assert c.ensemble.quant.weight == "inq" and c.ensemble.quant.w_bits == 7   # Xu et al. 2018
    assert c.active.candidates == 16 and c.active.budget == 8


def test_yaml_load_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  steps: 7\nensemble:\n  quant:\n    weight: twn\n    w_bits: 2\n")
    c = load_config(p, ["train.lr=0.5", "ensemble.quant.act=null", "simulate.seeds=[1, 2]"])
    assert c.train.steps == 7 and c.train.lr == 0.5
    assert c.ensemble.quant.weight == "twn" and c.ensemble.quant.act is None
    assert c.simulate.seeds == [1, 2]


def test_int_is_accepted_for_float():
    assert load_config(None, ["train.lr=1"]).train.lr == 1.0


@pytest.mark.parametrize("override,needle", [
    ("train.stepz=3", "unknown key 'train.stepz'"),
    ("trian.steps=3", "unknown key 'trian'"),
    ("train.steps=abc", "train.steps must be int"),
    ("train.bf16=3", "train.bf16 must be bool"),
    ("train.steps", "expected KEY=VALUE"),
    ("data.crop=100", "multiple of"),
])
def test_bad_overrides_name_the_problem(override, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config(None, [override])


def test_unknown_key_lists_valid_keys(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("model:\n  widht: 8\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(p) in str(e.value) and "model.width" in str(e.value)


def test_not_yaml_and_missing_file(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_round_trip_and_hash():
    c = apply_overrides(Config(), ["train.steps=11"])
    c2 = config_from_dict(c.to_dict())
    assert c2 == c and c2.hash() == c.hash() and c.hash() != Config().hash()
    assert "ensemble.quant.weight" in valid_keys()


def test_shipped_configs_load():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "configs"
    files = sorted(root.glob("*.yaml"))
    assert files, "configs/ holds the shipped experiment configs"
    for f in files:
        load_config(f)


@pytest.mark.parametrize("value", ["0", "1.5", "-0.5"])
def test_ensemble_scale_must_be_a_fraction(value):
    with pytest.raises(ConfigError, match=r"ensemble.scale must be in \(0, 1\]"):
        load_config(None, [f"ensemble.scale={value}"])


def test_role_scale_suggestive_is_a_fraction_of_data_scale():
    from seglearn.config import role_scale

    c = load_config(None, ["data.scale=0.5", "ensemble.scale=0.5"])
    assert role_scale(c, "suggestive") == 0.25 and role_scale(c, "final") == 0.5
    assert role_scale(Config(), "suggestive") == role_scale(Config(), "final") == 1.0
    with pytest.raises(ValueError, match="unknown model role"):
        role_scale(c, "bench")


def test_with_values_copies_validates_and_takes_typed_values():
    from seglearn.config import with_values

    base = load_config(None, ["train.steps=7"])
    c = with_values(base, {"final.quant.weight": None, "model.contour_head": True, "train.steps": 9})
    assert c.final.quant.weight is None and c.model.contour_head and c.train.steps == 9
    assert base.train.steps == 7 and base.final.quant.weight is not None  # the original is unchanged
    assert with_values(base, {}).hash() == base.hash()
    with pytest.raises(ConfigError, match="unknown key 'train.stepz'"):
        with_values(base, {"train.stepz": 1})
    with pytest.raises(ConfigError, match="train.steps must be at least 1"):
        with_values(base, {"train.steps": 0})
