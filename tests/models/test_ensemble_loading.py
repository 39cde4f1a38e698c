"""models.ensemble.load_ensemble resolves an ensemble's scale and device once (the sidecars'
factor, else the config's for the role; the config's train.device), and Ensemble.predict runs at
both unless told otherwise; models.device resolves train.device for training and inference alike."""

import numpy as np
import pytest
import torch

import seglearn.models.ensemble as ensemble_mod
from seglearn.app.init import init_workspace
from seglearn.config import ModelConfig, load_config
from seglearn.models.checkpoint import make_model, models_dir, save_sidecar
from seglearn.models.device import config_device, resolve_device
from seglearn.models.ensemble import Ensemble, load_ensemble
from seglearn.train.engine import save_checkpoint

TINY = ["synthetic.size=32", "model.width=4", "model.depth=3", "data.scale=0.5",
        "ensemble.scale=0.5"]


def _store_round(ws, cfg, role: str, scales: list) -> tuple[int, list[dict]]:
    """A finished round of ``role`` with one untrained member per entry of ``scales`` (the factor
    its sidecar records; None: none recorded, as seglearn wrote before); returns the round id and
    the members' state dicts."""
    with ws.writer():
        rid = ws.start_round(f"train-{role}", cfg.hash())
    states = []
    for member, scale in enumerate(scales):
        torch.manual_seed(100 + member)
        model = make_model(cfg.model, None)
        ckpt = models_dir(ws.root, rid, role) / f"member_{member}.pt"
        save_checkpoint(ckpt, {"model": model.state_dict()})
        save_sidecar(ckpt, cfg.model, None, {} if scale is None else {"scale": scale})
        states.append({k: v.clone() for k, v in model.state_dict().items()})
        with ws.writer():
            ws.add_model(rid, role, member, str(ckpt.relative_to(ws.root)), cfg.hash(), {}, {})
    with ws.writer():
        ws.finish_round(rid, {})
    return rid, states


@pytest.fixture
def ws(tmp_path):
    cfg = load_config(None, TINY)
    return init_workspace(tmp_path / "ws", cfg, synthetic=4, seed=0, progress=False), cfg


def test_load_ensemble_takes_the_sidecars_scale_else_the_configs_for_the_role(ws):
    ws, cfg = ws
    recorded, states = _store_round(ws, cfg, "suggestive", [0.3, 0.3])
    older, _ = _store_round(ws, cfg, "suggestive", [None, None])
    final, _ = _store_round(ws, cfg, "final", [None])
    later = load_config(None, TINY + ["data.scale=0.8", "ensemble.scale=0.25"])

    ens = load_ensemble(ws, "suggestive", later, round_id=recorded)
    assert ens.scale == 0.3 and ens.version == f"suggestive-round{recorded:02d}-x0.3"
    assert [p.name for p in ens.paths] == ["member_0.pt", "member_1.pt"]
    for member, state in zip(ens.members, states):   # the saved weights, in member order
        assert all(torch.equal(member.state_dict()[k], v) for k, v in state.items())
    # no factor recorded: the given config's for the role (data.scale * ensemble.scale)...
    assert load_ensemble(ws, "suggestive", later).round_id == older       # the newest round
    assert load_ensemble(ws, "suggestive", later).scale == pytest.approx(0.8 * 0.25)
    assert load_ensemble(ws, "final", later).scale == pytest.approx(0.8)  # final: data.scale
    # ...and without a config, the workspace's own (0.5 * 0.5)
    assert load_ensemble(ws, "suggestive").scale == pytest.approx(0.25)
    assert load_ensemble(ws, "final", round_id=final).scale == pytest.approx(0.5)


def test_load_ensemble_puts_the_members_on_the_configured_device(ws):
    ws, cfg = ws
    _store_round(ws, cfg, "suggestive", [1.0, 1.0])
    ens = load_ensemble(ws, "suggestive", cfg)
    assert ens.device == config_device(cfg) == "cpu"
    # "meta" stands in for a GPU on this CPU-only machine: a device the members must move to
    cfg.train.device = "meta"
    ens = load_ensemble(ws, "suggestive", cfg)
    assert ens.device == "meta"
    assert {p.device.type for m in ens.members for p in m.parameters()} == {"meta"}


def test_predict_runs_at_the_ensembles_scale_and_device_unless_told_otherwise(monkeypatch):
    torch.manual_seed(0)
    members = [make_model(ModelConfig(width=4, depth=3), None).eval() for _ in range(2)]
    seen = []
    real = ensemble_mod.prepare_input

    def spy(image, scale, device):
        seen.append((scale, device))
        return real(image, scale, device="cpu")

    monkeypatch.setattr(ensemble_mod, "prepare_input", spy)
    image = np.random.default_rng(1).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    ens = Ensemble(members, [], 1, "suggestive", scale=0.5, device="the-ensembles-device")
    probs, desc = ens.predict(image)
    assert seen == [(0.5, "the-ensembles-device")]
    assert probs.shape == (2, 1, 40, 48)
    np.testing.assert_array_equal(probs, ens.predict(image, scale=0.5)[0])
    assert not np.allclose(probs, ens.predict(image, scale=1.0)[0], atol=1e-4)
    seen.clear()
    ens.predict_many([image], scale=0.25, device="cpu")
    assert seen == [(0.25, "cpu")]
    seen.clear()
    Ensemble(members, [], 1, "suggestive").predict_mean(image)  # no factor recorded: as is
    assert seen == [(1.0, "cpu")]


def test_resolve_device(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match=r"train.device=cuda:1 but no CUDA device is available"):
        resolve_device("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert config_device(load_config(None, ["train.device=cuda:1"])) == "cuda:1"


def test_training_resolves_the_device_where_inference_does():
    """One resolution of train.device: the training engine uses models.device's."""
    from seglearn.train import engine

    assert engine.resolve_device is resolve_device
