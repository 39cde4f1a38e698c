"""Config schema: defaults, YAML loading, --set overrides, type and unknown-key errors."""

import re

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
    # the embedded default: the ensemble at half the data's resolution, the final model at it
    assert role_scale(Config(), "suggestive") == 0.5 and role_scale(Config(), "final") == 1.0
    full = load_config(None, ["ensemble.scale=1.0"])
    assert role_scale(full, "suggestive") == role_scale(full, "final") == 1.0
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


# ------------------------------------------------------------------ every key validated (issue 19)
def test_every_key_has_a_check():
    """RULES covers every scalar key; lists and quantizer keys have their own checks."""
    from seglearn.config import QUANT_KEYS, RULES

    own = {"simulate.strategies", "simulate.seeds"} | {
        f"{role}.quant.{k}" for role in ("ensemble", "final") for k in QUANT_KEYS}
    assert set(RULES) | own == set(valid_keys()) and not set(RULES) & own


STRATS = "coreset, random, representative, suggestive, uncertainty"
INVALID = [
    ("train.lr=0", "train.lr must be in (0, 1], not 0.0"),
    ("train.lr=2", "train.lr must be in (0, 1], not 2.0"),
    ("train.weight_decay=-1e-4", "train.weight_decay must be in [0, 1], not -0.0001"),
    ("train.checkpoint_every=0", "train.checkpoint_every must be at least 1, not 0"),
    ("train.device=gpu", "train.device must be auto, cpu, cuda or cuda:N, not 'gpu'"),
    ("train.seed=-1", "train.seed must be at least 0, not -1"),
    ("data.scale=0", "data.scale must be in (0, 4], not 0.0"),
    ("data.workers=-2", "data.workers must be at least 0, not -2"),
    ("model.depth=1", "model.depth must be in [2, 8], not 1"),
    ("model.name=unet", "model.name must be one of fcn, not 'unet'"),
    ("model.up=bilinear", "model.up must be one of nearest, transpose, not 'bilinear'"),
    ("active.strategy=suggestve", f"active.strategy must be one of {STRATS}, not 'suggestve'"),
    ("active.reduction=median", "active.reduction must be one of max, mean, topk_mean, not 'median'"),
    ("active.candidates=0", "active.candidates must be at least 1, not 0"),
    ("postprocess.contour_threshold=-0.1", "postprocess.contour_threshold must be in [0, 1], not -0.1"),
    ("postprocess.min_area=-1", "postprocess.min_area must be at least 0, not -1"),
    ("synthetic.test_fraction=1", "synthetic.test_fraction must be in [0, 1), not 1.0"),
    ("synthetic.n=1", "synthetic.n must be at least 2, not 1"),
    ("simulate.rounds=-1", "simulate.rounds must be at least 0, not -1"),
    ("simulate.strategies=[]", f"simulate.strategies must list at least one of {STRATS}"),
    ("simulate.strategies=[random, random]", "simulate.strategies lists a strategy twice"),
    ("simulate.seeds=[0, -3]", "simulate.seeds: -3 is not a seed; each must be an integer >= 0"),
    ("simulate.seeds=[0, x]", "simulate.seeds: 'x' is not a seed"),
    ("ensemble.quant.first_last=int8",
     "ensemble.quant.first_last must be one of iao8, same, float, not 'int8'"),
    ("ensemble.quant.act=twn", "ensemble.quant.act must be null (float) or one of binarynet, "
                               "dorefa, featq, hwgq, iao, syq, tsq, not 'twn'"),
    ("final.quant.weight=lsq", "final.quant.weight must be null (float) or one of"),
    ("final.quant.w_bits=1", "final.quant.w_bits=1 does not fit final.quant.weight=inq: inq: "
                             "bits must be in [2, 16], not 1"),
    ("final.quant.weight_args={bogus: 1}", "final.quant.weight_args {'bogus': 1} does not fit "
                                           "final.quant.weight=inq"),
    ("final.quant.act_args={bits: 4}", "final.quant.act_args is set but final.quant.act is null"),
]


@pytest.mark.parametrize("override,message", INVALID, ids=[o for o, _ in INVALID])
def test_every_key_names_what_it_accepts(override, message):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert message in str(e.value)
    assert str(e.value).startswith("--set")


@pytest.mark.parametrize("override", [
    "train.lr=1", "ensemble.scale=1", "postprocess.fg_threshold=0", "postprocess.fg_threshold=1",
    "synthetic.test_fraction=0", "model.depth=2", "ensemble.steps=0", "train.device=cuda:1",
    "ensemble.quant.weight=null", "ensemble.quant.act=dorefa", "simulate.strategies=[coreset]",
])
def test_boundary_values_are_accepted(override):
    load_config(None, [override])


def test_exponent_floats_from_yaml_and_set(tmp_path):
    """PyYAML (YAML 1.1) loads 1e-3 as the string '1e-3': float keys take it, as a float."""
    import yaml

    assert yaml.safe_load("1e-3") == "1e-3"  # the reason
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  lr: 1e-3\n  weight_decay: 5E-5\npostprocess:\n  fg_threshold: .5\n")
    c = load_config(p, ["data.scale=+2.5e-1"])
    assert (c.train.lr, c.train.weight_decay, c.postprocess.fg_threshold, c.data.scale) == (
        1e-3, 5e-5, 0.5, 0.25)
    assert all(isinstance(v, float) for v in (c.train.lr, c.train.weight_decay, c.data.scale))
    for bad, needle in (("train.lr=1e-3x", "train.lr must be float, not '1e-3x'"),
                        ("train.lr=.inf", "train.lr must be a finite number, not inf"),
                        ("train.lr=true", "train.lr must be float, not True"),
                        ("train.steps=1e3", "train.steps must be int, not '1e3'")):
        with pytest.raises(ConfigError, match=re.escape(needle)):
            load_config(None, [bad])


def test_torch_checks_off_loads_without_torch():
    """Commands that build no model (label, status, predict) check a config without importing
    torch: every key but model.name and the quantizer settings, which the model commands check."""
    import subprocess
    import sys

    from blocking import blocker_source

    code = blocker_source("torch") + "\n".join([
        "from seglearn.config import ConfigError, load_config",
        "cfg = load_config(None, ['data.max_pixels=5', 'final.quant.w_bits=99'], torch_checks=False)",
        "assert cfg.data.max_pixels == 5",
        "for bad in ('data.max_pixels=0', 'active.strategy=nope', 'nope.x=1'):",
        "    try:",
        "        load_config(None, [bad], torch_checks=False)",
        "    except ConfigError as e:",
        "        print(str(e).split(':')[1].split()[0])",
        "assert 'torch' not in sys.modules",
    ])
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["data.max_pixels", "active.strategy", "unknown"]
    with pytest.raises(ConfigError, match="final.quant"):
        load_config(None, ["final.quant.w_bits=99", "final.quant.weight=twn"])
