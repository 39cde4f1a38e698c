"""Build, save and load a (quantized) FCN: a state dict checkpoint plus a JSON sidecar that says how
to rebuild the network (architecture and quantization scheme). No pickle: the checkpoint is read
with ``weights_only=True``, the sidecar is JSON.

The checkpoint file itself is written and read by ``seglearn.train.engine`` (``save_checkpoint``,
``load_checkpoint``: training resumes from the same files); this module adds the sidecar and the
rebuilding, for ``seglearn train`` (saving) and ``seglearn.models.ensemble`` (loading).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from seglearn import atomic
from seglearn.config import ModelConfig, QuantConfig
from seglearn.models import build_model
from seglearn.quant.convert import quantize_model
from seglearn.train.engine import CheckpointError, load_checkpoint, load_model_state


def scheme_dict(q: QuantConfig) -> dict | None:
    """The quantize_model scheme of a QuantConfig; None when it asks for a float model."""
    if q.weight is None and q.act is None:
        return None
    out = {"weight": q.weight, "act": q.act, "w_bits": q.w_bits, "a_bits": q.a_bits,
           "first_last": q.first_last, "weight_args": dict(q.weight_args),
           "act_args": dict(q.act_args)}
    if q.fold_bn is not None:
        out["fold_bn"] = q.fold_bn
    return out


def scheme_name(scheme: dict | None) -> str:
    if not scheme:
        return "float"
    parts = [f"{scheme['weight']}{scheme['w_bits']}" if scheme.get("weight") else "w-float"]
    if scheme.get("act"):
        parts.append(f"{scheme['act']}{scheme['a_bits']}")
    return "/".join(parts)


def make_model(model_cfg: ModelConfig, scheme: dict | None) -> nn.Module:
    model = build_model(model_cfg.name, width=model_cfg.width, depth=model_cfg.depth,
                        contour_head=model_cfg.contour_head, up=model_cfg.up)
    if scheme:
        model = quantize_model(model, scheme)
    return model


def save_sidecar(checkpoint: Path, model_cfg: ModelConfig, scheme: dict | None, extra: dict) -> Path:
    side = Path(checkpoint).with_suffix(".json")
    data = {"format": "seglearn-model", "version": 1, "model": asdict(model_cfg),
            "scheme": scheme, **extra}
    return atomic.write_text(side, json.dumps(data, indent=2))


def load_trained(checkpoint: str | Path) -> tuple[nn.Module, dict]:
    """Rebuild a saved model from its sidecar and load its weights (eval mode)."""
    checkpoint = Path(checkpoint)
    side = checkpoint.with_suffix(".json")
    try:
        meta = json.loads(side.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"model description {side} is missing or not JSON: {e}") from None
    model_cfg = ModelConfig(**meta["model"])
    model = make_model(model_cfg, meta.get("scheme"))
    state = load_checkpoint(checkpoint)
    _materialize_lazy(model, state["model"])
    load_model_state(model, state["model"], checkpoint)
    model.eval()
    return model, meta


def _materialize_lazy(model: nn.Module, state: dict) -> None:
    """Run one tiny forward so quantizers that create parameters lazily exist before loading."""
    if any("alpha" in k or "running" in k for k in state):
        try:
            with torch.no_grad():
                model.eval()
                m = getattr(model, "multiple", 8)
                model(torch.zeros(1, getattr(model, "in_channels", 3), m * 2, m * 2))
        except Exception:  # noqa: BLE001 - best effort; load_state_dict reports real mismatches
            pass


def models_dir(ws_root: Path, round_id: int, role: str) -> Path:
    d = Path(ws_root) / "models" / f"round_{round_id:02d}" / role
    d.mkdir(parents=True, exist_ok=True)
    return d

