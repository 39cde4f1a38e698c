"""`seglearn evaluate`: GlaS object metrics and pixel Dice/IoU of the final segmenter on the test
split, or on any labeled folder (``--images DIR --masks DIR``). Object metrics only where the
objects are blob-like (``evaluate.metrics``; seglearn.metrics.shape), pixel Dice/IoU always.

Instances come from the post-processing of the foreground (and contour) probabilities
(seglearn.postprocess); ground-truth instances from the stored masks (connected components,
8-connectivity, when the masks are binary). Writes metrics.json and an overlay per image under
``reports/evaluate_round_NN/``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from rich.progress import Progress

from seglearn import atomic
from seglearn.config import Config, PostprocessConfig
from seglearn.data import read_image, read_mask
from seglearn.data.importers import scan_test_folders
from seglearn.metrics import glas_metrics, pixel_metrics
from seglearn.metrics.shape import metrics_kind
from seglearn.postprocess import instances_from_probs


@dataclass
class EvalResult:
    metrics: dict
    n_images: int
    report_dir: Path
    predictions: dict
    kind: str = "objects"        # the metrics reported: "objects" (and pixels) or "pixels" only


def postprocess_params(pc: PostprocessConfig, contour: bool) -> PostprocessConfig:
    """The configured post-processing for a model with (``contour``) or without a contour head:
    ``pc`` itself (the one parameter type), its contour map off when the model has none."""
    return replace(pc, use_contour=pc.use_contour and bool(contour))


def instances_from_output(probs: np.ndarray, params) -> np.ndarray:
    """(C, H, W) probabilities -> int32 instances (channel 1, when present, is the contour)."""
    contour = probs[1] if probs.shape[0] > 1 else None
    return instances_from_probs(probs[0], contour, params)


def score_predictions(preds: list[np.ndarray], gts: list[np.ndarray], kind: str = "objects") -> dict:
    """Pixel Dice/IoU (pooled over the images) always; with ``kind`` "objects" the GlaS object
    metrics too (F1, object Dice, object Hausdorff, precision, recall). ``kind`` "pixels" is for
    thin structures, where object matching means nothing (seglearn.metrics.shape)."""
    if kind not in ("objects", "pixels"):
        raise ValueError(f"metrics kind must be 'objects' or 'pixels', not {kind!r}")
    out = {}
    if kind == "objects":
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
    """Metrics of ``ens`` on (name, image, mask) triples and {name: instances}: see
    :func:`_evaluate`."""
    metrics, preds, _ = _evaluate(ens, items, cfg, report_dir, progress, device, params)
    return metrics, preds


def _evaluate(ens, items: list[tuple[str, Path, Path]], cfg: Config,
              report_dir: Path | None = None, progress: bool = True,
              device: str = "cpu", params=None) -> tuple[dict, dict, dict]:
    """Metrics of ``ens`` (an Ensemble: probabilities averaged over members) on (name, image, mask)
    triples; overlays under ``report_dir`` when given. ``params``: PostprocessConfig (default: the
    config's). Which metrics: ``cfg.evaluate.metrics`` (auto: from the masks' shapes,
    seglearn.metrics.shape.metrics_kind). Returns (metrics, {name: instances}, {"kind": objects
    or pixels, "median_elongation": the masks' (auto only)})."""
    # lazy: torch (models.ensemble) and matplotlib (report.sheets), only when a model is evaluated:
    # score_predictions, postprocess_params and instances_from_output serve torch-free callers
    # (preannotate's writer, bench/peer.py)
    from seglearn.models.ensemble import trained_scale
    from seglearn.report.sheets import save_overlay

    if params is None:
        params = postprocess_params(cfg.postprocess, cfg.model.contour_head)
    scale = trained_scale(ens, cfg)
    preds, gts, names = [], [], []
    with Progress(transient=True, disable=not progress) as prog:
        task = prog.add_task(f"evaluating on {len(items)} test images", total=len(items))
        for name, image_path, mask_path in items:
            image = read_image(image_path)
            probs = ens.predict_mean(image, scale=scale, device=device, flips=params.tta)
            pred = instances_from_output(probs, params)
            gt = read_mask(mask_path, shape=image.shape[:2])
            preds.append(pred)
            gts.append(gt)
            names.append(name)
            if report_dir is not None:
                save_overlay(Path(report_dir) / f"{name}.png", image, pred, gt, title=name)
            prog.advance(task)
    kind, elongation = metrics_kind(cfg.evaluate.metrics, gts)
    return (score_predictions(preds, gts, kind), dict(zip(names, preds)),
            {"kind": kind, "median_elongation": elongation})


def evaluate_workspace(ws, cfg: Config, progress: bool = True, overlays: bool = True,
                       ensemble=None, images: Path | None = None, masks: Path | None = None,
                       image_pattern: str | None = None,
                       mask_pattern: str | None = None) -> EvalResult:
    """Score the final segmenter on the workspace's test split, or (``images`` with ``masks``)
    on any labeled folder, paired as ``seglearn init`` pairs them (``scan_folders``: stems or
    the patterns), without adding it to the workspace: its report goes to
    ``reports/evaluate_round_NN_<folder>/`` and the workspace's last metrics stay those of its
    own test split."""
    # lazy: torch (models.*), only when a model is evaluated (see _evaluate); app.tune: cycle, it
    # imports this module at its top
    from seglearn.models.device import config_device as _device
    from seglearn.models.ensemble import load_ensemble
    from seglearn.app.tune import final_postprocess

    if (images is None) != (masks is None):
        raise ValueError("evaluate: --images and --masks go together (a folder of images and the "
                         "folder of their masks)")
    if images is not None:  # checked before the model is loaded: a bad folder fails at once
        items = [(s.name, s.image_path, s.mask_path) for s in scan_test_folders(
            images, masks, image_pattern, mask_pattern, what="evaluate: images")]
    ens = ensemble or load_ensemble(ws, "final", cfg)
    if images is None:
        tests = [it for it in ws.items(split="test") if it.oracle_mask_path]
        if not tests:
            raise ValueError(f"workspace {ws.root} has no test images with masks to evaluate on; "
                             "give `seglearn evaluate WS --images DIR --masks DIR`, or create the "
                             "workspace with `init --test-images DIR --test-masks DIR`")
        items = [(it.name, ws.image_file(it), ws.resolve(it.oracle_mask_path)) for it in tests]
        report = ws.root / "reports" / f"evaluate_round_{ens.round_id:02d}"
    else:
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(images).resolve().name) or "folder"
        report = ws.root / "reports" / f"evaluate_round_{ens.round_id:02d}_{safe}"
    report.mkdir(parents=True, exist_ok=True)
    params = final_postprocess(ws, cfg, ens, progress, _device(cfg))
    metrics, preds, chosen = _evaluate(ens, items, cfg, report if overlays else None, progress,
                                       _device(cfg), params)
    atomic.write_text(report / "metrics.json", json.dumps(
        {"metrics": metrics, "round": ens.round_id, "postprocess": params.to_dict(),
         "images": list(preds), "instances": "connected components, 8-connectivity, when masks "
         "are binary", "evaluate.metrics": cfg.evaluate.metrics, **chosen,
         "source": "test split" if images is None else {"images": str(images),
                                                        "masks": str(masks)}}, indent=2))
    if images is None:
        with ws.writer():
            ws.set_meta("last_metrics", {"round": ens.round_id, **metrics})
    return EvalResult(metrics, len(items), report, preds, chosen["kind"])
