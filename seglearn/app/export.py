"""`seglearn export`: the workspace's final segmenter -> the integer runtime's .slq (or QDQ ONNX)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import nn

from seglearn.app.images import item_image
from seglearn.app.tune import final_postprocess
from seglearn.config import config_from_dict
from seglearn.export import export_model
from seglearn.export.onnx_qdq import export_onnx
from seglearn.models.ensemble import load_ensemble
from seglearn.runtime.resample import resize_image_uint8
from seglearn.store.workspace import managed_by

FORMATS = ("slq", "onnx")
CALIB_IMAGES = 8


def _calibration_images(ws, scale: float) -> list[np.ndarray]:
    """A few training images (as the runtime will see them) for float-activation calibration."""
    items = ws.items(split="train") or ws.items()
    return [resize_image_uint8(item_image(ws, it), scale)
            for it in items[:CALIB_IMAGES]]


def check_export_target(out: Path, overwrite: bool = False) -> None:
    """Refuse an output that would destroy data: a workspace's managed file or folder (its
    database, lock, images/, labels/ ... of any workspace, not only the exported one), a folder,
    or an existing file without ``overwrite``. Checked before the (slow) export starts."""
    out = Path(out)
    owner = managed_by(out)
    if owner is not None:
        raise ValueError(f"refusing to export to {out}: it is inside the managed files of workspace "
                         f"{owner} (its database, lock and folders belong to seglearn); choose a "
                         "path outside them, e.g. a model.slq beside the workspace")
    if out.is_dir():
        raise IsADirectoryError(f"export output {out} is a folder; give a file name, e.g. "
                                f"{out / 'model.slq'}")
    if out.exists() and not overwrite:
        raise FileExistsError(f"export output {out} already exists; nothing was written: choose "
                              "another file name or pass --overwrite to replace it")


def export_workspace(ws, out: Path, fmt: str = "slq", round_id: int | None = None,
                     cfg=None, overwrite: bool = False) -> dict:
    """Export the final segmenter of ``ws`` to ``out``; returns a summary dict.

    An ensemble of N final members is exported as member 0 (the summary says so): the integer
    graph holds one network. Postprocess parameters: with ``postprocess.tune`` the round's stored
    tuning result (the same evaluate uses; export never tunes), else the workspace config's (or
    ``cfg``'s); the resize factor is the one the member was trained
    at (its sidecar; ``data.scale`` for older models). Schemes with float activations
    are calibrated on up to 8 training images. ``round_id``: that final round, not the newest.
    ``out`` is checked first (``check_export_target``); an existing file is replaced only with
    ``overwrite``.
    """
    if fmt not in FORMATS:
        raise ValueError(f"export format must be one of {FORMATS}, not {fmt!r}")
    check_export_target(out, overwrite)
    if cfg is None:
        cfg = config_from_dict(ws.meta("config"), where=f"{ws.root} config")
    ens = load_ensemble(ws, "final", cfg, round_id=round_id)
    model = ens.members[0]
    scale = ens.scale  # the factor the member learned at
    out = Path(out)
    source = f"{ws.root} final round {ens.round_id} member 0 of {len(ens.members)}"
    if fmt == "onnx":
        info = export_onnx(model, out)
    else:
        convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
        needs_calib = any(getattr(m, "act_quant", None) is None for m in convs[1:])
        calib = _calibration_images(ws, scale) if needs_calib else None
        info = export_model(model, out, postprocess=final_postprocess(ws, cfg, ens, progress=False,
                                                                    tune_if_missing=False),
                            scale=scale, calib=calib, source=source)
    info["members"] = len(ens.members)
    if len(ens.members) > 1:
        info["note"] = f"exported member 0 of an ensemble of {len(ens.members)}"
    info["round"] = ens.round_id
    return info
