"""Export: lower a trained (quantized) FCN to the integer-only runtime's .slq file, or to QDQ ONNX.

``export_model(model, out, postprocess=..., scale=1.0, calib=None) -> dict`` writes a .slq file
(``seglearn.runtime.slq``) that ``seglearn.runtime.load_model`` runs with numpy + numba only.
The only module that knows both torch and the integer graph (docs/DESIGN.md, Boundaries).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from torch import nn

from seglearn.config import PostprocessConfig
from seglearn.export.lower import LoweringError, head_thresholds, lower_fcn
from seglearn.quant.iao import IAOAct
from seglearn.runtime.slq import write_slq

__all__ = ["LoweringError", "export_model", "calibrate_activations"]


def _postprocess_dict(postprocess: PostprocessConfig | None) -> dict:
    """The parameters stored in the graph: those of ``postprocess`` (the config's defaults when
    None), without ``tune`` (a switch of the app, not a parameter of the instances)."""
    if postprocess is None:
        postprocess = PostprocessConfig()
    if not isinstance(postprocess, PostprocessConfig):
        raise TypeError("export_model: postprocess must be a seglearn.config.PostprocessConfig "
                        f"(seglearn.postprocess.PostprocessParams) or None, not "
                        f"{type(postprocess).__name__}")
    d = postprocess.to_dict()
    d.pop("tune")
    return d


def _calib_tensor(img, multiple: int) -> torch.Tensor:
    if isinstance(img, torch.Tensor):
        x = img.float()
        x = x[None] if x.ndim == 3 else x
    else:
        a = np.asarray(img)
        if a.dtype != np.uint8:
            raise ValueError(f"calibration images must be uint8 arrays, got {a.dtype}")
        a = np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a
        x = torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))).float().div_(255.0)[None]
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    return torch.nn.functional.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x


@torch.no_grad()
def calibrate_activations(model: nn.Module, images: Iterable) -> dict:
    """8-bit IAO quantizers (Jacob et al. 2018) for every conv input without a quantizer.

    The range of each such input over ``images`` (uint8 (H, W, 3) arrays or float tensors) fixes
    ``S, Z`` (``seglearn.quant.iao.affine_params``): post-training quantization of float activations.
    """
    names = [n for n, m in model.named_modules()
             if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and getattr(m, "act_quant", None) is None]
    if not names:
        return {}
    mods = dict(model.named_modules())
    ranges: dict[str, list[float]] = {}
    hooks = []
    for n in names:
        def hook(mod, args, n=n):
            x = args[0]
            r = ranges.setdefault(n, [float("inf"), float("-inf")])
            r[0], r[1] = min(r[0], float(x.min())), max(r[1], float(x.max()))
        hooks.append(mods[n].register_forward_pre_hook(hook))
    model.eval()
    try:
        for img in images:
            model(_calib_tensor(img, getattr(model, "multiple", 1)))
    finally:
        for h in hooks:
            h.remove()
    out = {}
    for n, (lo, hi) in ranges.items():
        q = IAOAct(bits=8)
        q.lo.fill_(lo)
        q.hi.fill_(hi)
        q.initialized.fill_(True)
        out[n] = q.eval()
    return out


def export_model(model: nn.Module, out: str | Path, postprocess=None, scale: float = 1.0,
                 calib: Iterable | None = None, source: str = "") -> dict:
    """Lower ``model`` (seglearn's FCN, quantized or not) and write the .slq file ``out``.

    ``postprocess``: a :class:`seglearn.config.PostprocessConfig` (None: its defaults): stored in
    the graph, with the probability thresholds turned into integer thresholds on the head's
    accumulators. ``scale``: the resize factor the model was trained at (data.scale).
    ``calib``: sample images; needed only when some conv input has no activation quantizer.
    Returns a summary dict (path, op counts, which layers are exact, notes).
    """
    if not float(scale) > 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    was_training = model.training
    model.eval()
    try:
        calibrated = calibrate_activations(model, calib) if calib is not None else {}
        graph, arrays, (layers, head) = lower_fcn(model, calibrated)
    finally:
        model.train(was_training)
    pp = _postprocess_dict(postprocess)
    graph["postprocess"] = pp
    graph["decisions"] = head_thresholds(head, {"fg": (0, pp["fg_threshold"]),
                                                "contour": (1, pp["contour_threshold"])})
    graph["scale"] = float(scale)
    graph["layers"] = layers
    graph["source"] = source
    path = write_slq(out, graph, arrays)
    counts: dict[str, int] = {}
    for op in graph["ops"]:
        counts[op["op"]] = counts.get(op["op"], 0) + 1
    inexact = [ly["name"] for ly in layers if not (ly["weights_exact"] and ly["acts_exact"])]
    return {"path": str(path), "format": "slq", "ops": counts, "layers": len(layers),
            "exact": not inexact and not calibrated, "inexact_layers": inexact,
            "calibrated_inputs": sorted(calibrated), "bytes": path.stat().st_size}
