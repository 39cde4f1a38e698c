"""`seglearn evaluate`: GlaS object metrics and pixel Dice/IoU of the final segmenter on the test split.

Instances come from the post-processing of the foreground (and contour) probabilities
(seglearn.postprocess); ground-truth instances from the stored masks (connected components,
8-connectivity, when the masks are binary). Writes metrics.json and an overlay per image under
``reports/evaluate_round_NN/``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seglearn import atomic
from seglearn.config import Config, PostprocessConfig
from seglearn.data import read_image, read_mask


@dataclass
class EvalResult:
    metrics: dict
    n_images: int
    report_dir: Path
    predictions: dict


def postprocess_params(pc: PostprocessConfig, contour: bool):
    from seglearn.postprocess import PostprocessParams

    return PostprocessParams(fg_threshold=pc.fg_threshold, contour_threshold=pc.contour_threshold,
                             seed_min_area=pc.seed_min_area, min_area=pc.min_area,
                             fill_holes=pc.fill_holes, use_contour=contour,
                             watershed=pc.watershed)


def instances_from_output(probs: np.ndarray, params) -> np.ndarray:
    """(C, H, W) probabilities -> int32 instances (channel 1, when present, is the contour)."""
    from seglearn.postprocess import instances_from_probs

    contour = probs[1] if probs.shape[0] > 1 else None
    return instances_from_probs(probs[0], contour, params)


def score_predictions(preds: list[np.ndarray], gts: list[np.ndarray]) -> dict:
    from seglearn.metrics import glas_metrics, pixel_metrics

    m = glas_metrics(preds, gts)
    out = {"f1": m["f1"], "obj_dice": m["dice"], "obj_hausdorff": m["hausdorff"],
           "precision": m.get("precision"), "recall": m.get("recall")}
    px = pixel_metrics(preds, gts)  # pooled over the test part
    out["pixel_dice"] = px["dice"]
    out["pixel_iou"] = px["iou"]
    return {k: float(v) for k, v in out.items() if v is not None}


def evaluate_images(ens, items: list[tuple[str, Path, Path]], cfg: Config,
                    report_dir: Path | None = None, progress: bool = True,
                    device: str = "cpu", params=None) -> tuple[dict, dict]:
    """Metrics of ``ens`` (an Ensemble: probabilities averaged over members) on (name, image, mask)
    triples; overlays under ``report_dir`` when given. ``params``: PostprocessParams (default: the
    config's). Returns (metrics, {name: instances})."""
    from rich.progress import Progress

    from seglearn.active.ensemble import trained_scale
    from seglearn.report.sheets import save_overlay

    if params is None:
        params = postprocess_params(cfg.postprocess, cfg.model.contour_head)
    scale = trained_scale(ens, cfg)
    preds, gts, names = [], [], []
    with Progress(transient=True, disable=not progress) as prog:
        task = prog.add_task(f"evaluating on {len(items)} test images", total=len(items))
        for name, image_path, mask_path in items:
            image = read_image(image_path)
            probs = ens.predict_mean(image, scale=scale, device=device)
            pred = instances_from_output(probs, params)
            gt = read_mask(mask_path, shape=image.shape[:2])
            preds.append(pred)
            gts.append(gt)
            names.append(name)
            if report_dir is not None:
                save_overlay(Path(report_dir) / f"{name}.png", image, pred, gt, title=name)
            prog.advance(task)
    return score_predictions(preds, gts), dict(zip(names, preds))


def evaluate_workspace(ws, cfg: Config, progress: bool = True, overlays: bool = True,
                       ensemble=None) -> EvalResult:
    from seglearn.active.ensemble import load_ensemble
    from seglearn.app.select import _device
    from seglearn.app.tune import final_postprocess

    ens = ensemble or load_ensemble(ws, "final")
    tests = [it for it in ws.items(split="test") if it.oracle_mask_path]
    if not tests:
        raise ValueError(f"workspace {ws.root} has no test images with masks to evaluate on")
    report = ws.root / "reports" / f"evaluate_round_{ens.round_id:02d}"
    report.mkdir(parents=True, exist_ok=True)
    items = [(it.name, ws.image_file(it), ws.resolve(it.oracle_mask_path)) for it in tests]
    params = final_postprocess(ws, cfg, ens, progress, _device(cfg))
    metrics, preds = evaluate_images(ens, items, cfg, report if overlays else None, progress,
                                     _device(cfg), params)
    atomic.write_text(report / "metrics.json", json.dumps(
        {"metrics": metrics, "round": ens.round_id, "postprocess": params.to_dict(),
         "images": list(preds), "instances": "connected components, 8-connectivity, when masks "
         "are binary"}, indent=2))
    with ws.writer():
        ws.set_meta("last_metrics", {"round": ens.round_id, **metrics})
    return EvalResult(metrics, len(tests), report, preds)
