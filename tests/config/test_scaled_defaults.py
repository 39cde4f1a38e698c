"""Post-processing sizes not set by the user follow data.scale**2; set ones are kept as given."""

from __future__ import annotations

import math

import pytest

from seglearn.config import Config, config_from_dict, load_config, scaled_default, with_values


def _expected(base: int, scale: float) -> int:
    """round-half-up(base * scale^2), at least 1 (computed independently of the code)."""
    return max(1, int(math.floor(base * scale * scale + 0.5)))


@pytest.mark.parametrize("scale", [1.0, 0.5, 0.25, 0.1, 2.0])
def test_unset_sizes_scale_with_data_scale(scale):
    cfg = config_from_dict({"data": {"scale": scale}})
    assert cfg.postprocess.min_area == _expected(30, scale)
    assert cfg.postprocess.seed_min_area == _expected(10, scale)
    assert scaled_default(30, scale) == _expected(30, scale)


def test_hand_computed_values_and_the_full_resolution_defaults():
    half = config_from_dict({"data": {"scale": 0.5}}).postprocess
    assert (half.min_area, half.seed_min_area) == (8, 3)  # 7.5 -> 8, 2.5 -> 3
    tiny = config_from_dict({"data": {"scale": 0.1}}).postprocess
    assert (tiny.min_area, tiny.seed_min_area) == (1, 1)  # 0.3 and 0.1 -> at least 1
    assert config_from_dict({}).postprocess == Config().postprocess  # 30 / 10 at scale 1


def test_explicit_values_are_kept(tmp_path):
    cfg = config_from_dict({"data": {"scale": 0.5}, "postprocess": {"min_area": 30}})
    assert cfg.postprocess.min_area == 30 and cfg.postprocess.seed_min_area == 3
    cfg = config_from_dict({"data": {"scale": 0.5}, "postprocess": {"min_area": 0,
                                                                   "seed_min_area": 0}})
    assert (cfg.postprocess.min_area, cfg.postprocess.seed_min_area) == (0, 0)
    f = tmp_path / "c.yaml"
    f.write_text("data:\n  scale: 0.5\npostprocess:\n  seed_min_area: 7\n")
    cfg = load_config(f)
    assert (cfg.postprocess.min_area, cfg.postprocess.seed_min_area) == (8, 7)


def test_set_data_scale_rescales_only_what_neither_file_nor_set_gave(tmp_path):
    cfg = load_config(None, ["data.scale=0.5"])
    assert (cfg.postprocess.min_area, cfg.postprocess.seed_min_area) == (8, 3)
    cfg = load_config(None, ["data.scale=0.5", "postprocess.min_area=40"])
    assert (cfg.postprocess.min_area, cfg.postprocess.seed_min_area) == (40, 3)
    f = tmp_path / "c.yaml"
    f.write_text("postprocess:\n  min_area: 25\n")
    cfg = load_config(f, ["data.scale=0.5"])
    assert (cfg.postprocess.min_area, cfg.postprocess.seed_min_area) == (25, 3)


def test_a_built_config_keeps_its_resolved_values():
    """to_dict -> config_from_dict (a workspace's stored config) and with_values change nothing:
    every key is given there."""
    half = load_config(None, ["data.scale=0.5"])
    again = config_from_dict(half.to_dict())
    assert again == half and again.postprocess.min_area == 8
    # a config stored before this rule (30 at scale 0.5) keeps its 30
    old = Config().to_dict()
    old["data"]["scale"] = 0.5
    assert config_from_dict(old).postprocess.min_area == 30
    assert with_values(half, {"data.scale": 1.0}).postprocess.min_area == 8


def test_workspace_stores_resolved_values_and_keeps_them(tmp_path):
    from seglearn.app.init import init_workspace
    from seglearn.cli.common import workspace_config
    from seglearn.store import Workspace

    cfg = load_config(None, ["data.scale=0.5", "synthetic.size=32", "train.bf16=false"])
    init_workspace(tmp_path / "ws", cfg, synthetic=2, progress=False).close()
    with Workspace.open(tmp_path / "ws") as ws:
        assert ws.meta("config")["postprocess"]["min_area"] == 8
        assert workspace_config(ws, None, None).postprocess.min_area == 8
        # the stored values are the user's now: --set data.scale does not move them
        assert workspace_config(ws, None, ["data.scale=1.0"]).postprocess.min_area == 8
