"""Post-processing parameters of the final segmenter: the config's, or tuned on its training labels.

With ``postprocess.tune: true`` the post-processing is picked by grid search
(:func:`seglearn.postprocess.tune_postprocess`) on the images the final segmenter was trained on
(labels created before its round started), predicted by it. That is in-sample: it calibrates the
thresholds, the smallest object and the structure's rules to the model's output (what moves the
score most: fragments of an under-trained contour head, a low-confidence foreground, filled
space between vessels, pruned thin branches) rather than estimating test accuracy.

Objective: what fits the labels' structure (``seglearn.metrics.shape.metrics_kind`` with
``evaluate.metrics``, as evaluate scores them): pooled object F1 for blob-like objects (glands),
pooled pixel Dice for thin structures (vessels). Grid (:func:`tuning_grids`): the instances mode
(foreground threshold 0.3..0.7, contour threshold 0.3, 0.5, 0.7 with a contour map, else
distance-watershed splitting on or off; hole filling on or off) and the semantic mode (foreground
threshold; its components only), both with ``min_area`` 0.5x..16x the configured one (object sizes
depend on the data's resolution, so the config sets the scale). The mode that fits the labels
comes first in the grid, so it wins ties (instances without hole filling or splitting give the
semantic mode's pixels). The record says which objective was used and its score.

One set of parameters per trained model: ``train --final`` tunes when it finishes (``tune_final``)
and stores the result in the workspace per final round; ``evaluate`` and ``export`` (and so
``predict``, which runs what export wrote) read exactly that record, so the three agree.
``seglearn tune WS`` re-tunes a round (e.g. after changing the configured ``min_area``, the centre
of the grid). ``export`` never tunes: a round without a record is an error naming the command.
With ``postprocess.tune: false`` the configured values apply everywhere.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from rich.progress import Progress

from seglearn.app.evaluate import postprocess_params
from seglearn.app.images import item_image
from seglearn.config import Config
from seglearn.metrics.shape import metrics_kind
from seglearn.postprocess import DEFAULT_GRID, tune_postprocess

META_KEY = "postprocess_tuned"
MAX_TUNE_IMAGES = 16  # enough images for a 3-parameter grid; bounds the cost on large pools
# Up to 16x: the GlaS runs picked the top of a grid ending at 8x (the grid is searched on training
# labels only, so a wider one is legitimate).
AREA_FACTORS = (0.5, 1, 2, 4, 8, 16)
# The fields a tuning record stores (every field the grids search, and tta: not searched, but the
# probability maps were tuned with it, so the model keeps it); older records lack some (mode,
# split_touching, tta), which then keep the configured values.
TUNED_FIELDS = ("fg_threshold", "contour_threshold", "min_area", "fill_holes", "split_touching",
                "mode", "tta")
# evaluate's metrics kind -> the objective of tune_postprocess, and its name in the record
OBJECTIVES = {"objects": ("f1", "object F1"), "pixels": ("dice", "pixel Dice")}


def _areas(min_area: int) -> tuple:
    return tuple(sorted({int(round(min_area * f)) for f in AREA_FACTORS})) if min_area > 0 else \
        tuple(DEFAULT_GRID["min_area"])


def tuning_grid(min_area: int, contour: bool = True) -> dict:
    """The instances-mode values: thresholds, ``min_area`` around the configured one, whether
    holes are filled (glands have none, ring-shaped or branching structures do: filling them
    merges the space between vessels into the object) and, without a contour map
    (``contour=False``), whether touching objects are split by a distance watershed.
    ``fill_holes`` is applied after the shared work, so it costs one extra area pass per point,
    not a second segmentation."""
    grid = {**DEFAULT_GRID, "min_area": _areas(min_area), "fill_holes": (True, False),
            "mode": ("instances",)}
    if not contour:
        grid["split_touching"] = (False, True)
    return grid


def tuning_grids(min_area: int, contour: bool = True, kind: str = "objects") -> list[dict]:
    """Both modes: :func:`tuning_grid` and the semantic mode (foreground components and
    ``min_area`` only; cheap: one labelling per threshold; its hole filling and splitting are
    recorded off, as they act). The mode that fits ``kind`` comes first, so it wins ties (equal
    scores are common: instances without hole filling or splitting give the same pixels):
    instances for "objects", semantic for "pixels"."""
    semantic = {"mode": ("semantic",), "fg_threshold": DEFAULT_GRID["fg_threshold"],
                "min_area": _areas(min_area), "fill_holes": (False,), "split_touching": (False,)}
    grids = [tuning_grid(min_area, contour), semantic]
    return grids[::-1] if kind == "pixels" else grids


class NotTunedError(ValueError):
    """``postprocess.tune`` is on but the final round has no stored tuning result."""


def _records(ws) -> dict:
    """{str(round id): record} of every stored tuning result."""
    stored = ws.meta(META_KEY) or {}
    if "round" in stored:  # the one-record layout of workspaces made before per-round records
        stored = {str(stored["round"]): stored}
    return stored


def stored_tuning(ws, round_id) -> dict | None:
    """The stored tuning record of final round ``round_id`` (None when it has none)."""
    return _records(ws).get(str(round_id))


def tune_final(ws, cfg: Config, ens, progress: bool = True, device: str = "cpu") -> dict:
    """Tune the post-processing of final round ``ens.round_id`` and store it; returns the record."""
    base = postprocess_params(cfg.postprocess, cfg.model.contour_head)
    params, score, n, kind = _tune(ws, cfg, ens, base, progress, device)
    objective, name = OBJECTIVES[kind]
    # "f1" stays the object F1 (records before the objective was recorded are all object F1)
    record = {"round": ens.round_id, "config_hash": cfg.hash(), "objective": objective,
              "objective_name": name, "score": score, "images": n,
              "params": _tuned_fields(params), **({"f1": score} if objective == "f1" else {})}
    with ws.writer():  # read-modify-write under the writer lock: no record of another round lost
        ws.set_meta(META_KEY, {**_records(ws), str(ens.round_id): record})
    return record


def final_postprocess(ws, cfg: Config, ens, progress: bool = True, device: str = "cpu",
                      tune_if_missing: bool = True):
    """The PostprocessConfig of ``ens`` (the final segmenter of ``ws``): the configured ones, or
    with ``postprocess.tune`` the round's stored tuning result (tuned now and stored when missing,
    unless ``tune_if_missing=False``: then :class:`NotTunedError`)."""
    base = postprocess_params(cfg.postprocess, cfg.model.contour_head)
    if not cfg.postprocess.tune:
        return base
    record = stored_tuning(ws, ens.round_id)
    if record is None:
        if not tune_if_missing:
            raise NotTunedError(
                f"final round {ens.round_id} of workspace {ws.root} has no tuned post-processing "
                f"(postprocess.tune is on); run `seglearn tune {ws.root}` first, or pass "
                "--set postprocess.tune=false to use the configured values")
        record = tune_final(ws, cfg, ens, progress, device)
    return replace(base, **record["params"])


def _tuned_fields(params) -> dict:
    return {k: getattr(params, k) for k in TUNED_FIELDS}


def tune_on_training_images(ws, cfg: Config, ens, base, progress: bool, device: str):
    """(best params, their pooled objective score, number of images) on up to MAX_TUNE_IMAGES
    labeled images (the objective: see :func:`_tune`)."""
    return _tune(ws, cfg, ens, base, progress, device)[:3]


def _tune(ws, cfg: Config, ens, base, progress: bool, device: str):
    """:func:`tune_on_training_images` and the metrics kind ("objects" | "pixels", from
    ``evaluate.metrics`` and the labels' shapes) that picked the objective (:data:`OBJECTIVES`)."""
    # lazy: torch, only when tuning runs a model: final_postprocess, stored_tuning and tuning_grid
    # are torch-free (evaluate's scoring, bench/peer.py)
    from seglearn.models.ensemble import trained_scale
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
            probs = ens.predict_mean(item_image(ws, it), scale=scale, device=device,
                                     flips=base.tta)  # the maps the stored parameters will meet
            fgs.append(probs[0])
            contours.append(probs[1] if probs.shape[0] > 1 else None)
            gts.append(ws.read_label(it).astype(np.int32))
            prog.advance(task)
    use_contour = base.use_contour and all(c is not None for c in contours)
    kind, _ = metrics_kind(cfg.evaluate.metrics, gts)
    params, score, _ = tune_postprocess(fgs, contours if use_contour else None, gts,
                                        grid=tuning_grids(base.min_area, use_contour, kind),
                                        base=base,
                                        objective=OBJECTIVES[kind][0])
    return params, score, len(items), kind
