"""Post-processing parameters of the final segmenter: the config's, or tuned by object F1.

With ``postprocess.tune: true`` the thresholds and the minimum object area are picked by grid
search (:func:`seglearn.postprocess.tune_postprocess`, pooled GlaS object F1) on the images the
final segmenter was trained on (labels created before its round started), predicted by it. That
is in-sample: it calibrates the thresholds and the smallest object to the model's output (what
moves object F1 most: fragments of an under-trained contour head, a low-confidence foreground)
rather than estimating test accuracy. Grid: foreground threshold 0.3..0.7, contour threshold 0.3,
0.5, 0.7 and ``min_area`` 0.5x..8x the configured one (object sizes depend on the data's
resolution, so the config sets the scale). The result is stored in the workspace per final round
and used by ``evaluate`` and ``export`` (and so ``predict``).
"""

from __future__ import annotations

from dataclasses import replace

from seglearn.config import Config

META_KEY = "postprocess_tuned"
MAX_TUNE_IMAGES = 16  # enough images for a 3-parameter grid; bounds the cost on large pools
AREA_FACTORS = (0.5, 1, 2, 4, 8)


def tuning_grid(min_area: int) -> dict:
    from seglearn.postprocess import DEFAULT_GRID

    areas = sorted({int(round(min_area * f)) for f in AREA_FACTORS}) if min_area > 0 else \
        list(DEFAULT_GRID["min_area"])
    return {**DEFAULT_GRID, "min_area": tuple(areas)}


def final_postprocess(ws, cfg: Config, ens, progress: bool = True, device: str = "cpu"):
    """The PostprocessParams for ``ens`` (the final segmenter of ``ws``), tuning them if asked."""
    from seglearn.app.evaluate import postprocess_params

    base = postprocess_params(cfg.postprocess, cfg.model.contour_head)
    if not cfg.postprocess.tune:
        return base
    cached = ws.meta(META_KEY) or {}
    if cached.get("round") == ens.round_id and cached.get("config_hash") == cfg.hash():
        return replace(base, **cached["params"])
    params, f1, n = tune_on_training_images(ws, cfg, ens, base, progress, device)
    with ws.writer():
        ws.set_meta(META_KEY, {"round": ens.round_id, "config_hash": cfg.hash(), "f1": f1,
                               "images": n, "params": _tuned_fields(params)})
    return params


def _tuned_fields(params) -> dict:
    from seglearn.postprocess import DEFAULT_GRID

    return {k: getattr(params, k) for k in DEFAULT_GRID}  # the fields the grid searches


def tune_on_training_images(ws, cfg: Config, ens, base, progress: bool, device: str):
    """(best params, their pooled object F1, number of images) on up to MAX_TUNE_IMAGES labeled images."""
    import numpy as np
    from rich.progress import Progress

    from seglearn.active.ensemble import trained_scale
    from seglearn.data import read_image
    from seglearn.postprocess import tune_postprocess

    started = {r.id: r.started for r in ws.rounds()}.get(getattr(ens, "round_id", None))
    items = [it for it in ws.training_items()
             if started is None or it.label.created <= started][:MAX_TUNE_IMAGES]
    if not items:
        raise ValueError(f"postprocess.tune is on but workspace {ws.root} has no labeled images "
                         "to tune on")
    scale = trained_scale(ens, cfg)
    fgs, contours, gts = [], [], []
    with Progress(transient=True, disable=not progress) as prog:
        task = prog.add_task(f"tuning post-processing on {len(items)} labeled images",
                             total=len(items))
        for it in items:
            probs = ens.predict_mean(read_image(ws.image_file(it)), scale=scale,
                                     device=device)
            fgs.append(probs[0])
            contours.append(probs[1] if probs.shape[0] > 1 else None)
            gts.append(ws.read_label(it).astype(np.int32))
            prog.advance(task)
    use_contour = base.use_contour and all(c is not None for c in contours)
    params, f1, _ = tune_postprocess(fgs, contours if use_contour else None, gts,
                                     grid=tuning_grid(base.min_area), base=base)
    return params, f1, len(items)
