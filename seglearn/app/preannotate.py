"""Pre-annotations (``select --pre-annotate``, ``active.pre_annotate``): the model's instance
masks of the suggested images, for the expert to correct rather than draw from scratch.

The model is the newest final segmenter when the workspace has one (members' probabilities
averaged, its stored or tuned post-processing: ``app.tune.final_postprocess``), else the
suggestive ensemble's mean with the configured post-processing; both run at the scale they were
trained at. Per suggested item, beside the suggestion CSV::

    suggestions/round_NN/<item>_pre.png      uint16 instance labels (0 = background), editable
    suggestions/round_NN/<item>_pre.geojson  QuPath annotations, one feature per instance

Each is recorded with its SHA-256 (``Workspace.add_pre_annotation``), and the GeoJSON features
carry ids derived from the item and round (``data.geojson.feature_ids``), so ``seglearn label``
can tell a label that started from a pre-annotation, and whether it was changed
(``app.label.label_origin``): the measure of annotation time saved needs exactly that.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from seglearn.app.evaluate import instances_from_output, postprocess_params
from seglearn.app.images import item_image
from seglearn.app.label import PRE_SUFFIX, pre_annotation_key
from seglearn.app.tune import final_postprocess
from seglearn.config import Config
from seglearn.data import write_mask
from seglearn.data.geojson import write_geojson
from seglearn.models.ensemble import finished_rounds, load_ensemble
from seglearn.store.digest import file_sha256


@dataclass
class PreAnnotator:
    ens: object      # a models.ensemble.Ensemble
    params: object   # config.PostprocessConfig
    scale: float
    model: str       # e.g. "final round 2": recorded with each pre-annotation


def pre_annotator(ws, cfg: Config, progress: bool = True, device: str = "cpu",
                  suggestive=None) -> PreAnnotator:
    """The model that pre-annotates (see the module docstring); ``suggestive``: the already loaded
    suggestive ensemble, used when there is no final segmenter."""
    if finished_rounds(ws, "final"):
        ens = load_ensemble(ws, "final", cfg)
        params = final_postprocess(ws, cfg, ens, progress, device)
    else:
        if not finished_rounds(ws, "suggestive"):
            raise ValueError(f"active.pre_annotate is on but workspace {ws.root} has no trained "
                             "model to pre-annotate with; run `seglearn train` first (or pass "
                             "--set active.pre_annotate=false)")
        ens = suggestive if suggestive is not None else load_ensemble(ws, "suggestive", cfg)
        params = postprocess_params(cfg.postprocess, cfg.model.contour_head)
    return PreAnnotator(ens, params, ens.scale, f"{ens.role} round {ens.round_id}")


def write_pre_annotations(ws, pa: PreAnnotator, round_id: int, rows: list[dict],
                          device: str = "cpu") -> Path:
    """Write and record the pre-annotations of the suggestion ``rows`` of ``round_id``; returns
    their folder."""
    folder = ws.root / "suggestions" / f"round_{round_id:02d}"
    folder.mkdir(parents=True, exist_ok=True)
    for r in rows:
        it = ws.item(r["item_id"])
        probs = pa.ens.predict_mean(item_image(ws, it), scale=pa.scale, device=device,
                                    flips=pa.params.tta)
        labels = instances_from_output(probs, pa.params)
        if labels.max(initial=0) > 65535:
            raise ValueError(f"pre-annotation of {it.name}: more than 65535 objects do not fit a "
                             "16-bit label PNG")
        stem = _safe(it.name) + PRE_SUFFIX
        png = write_mask(folder / f"{stem}.png", labels.astype("uint16"))
        # A slide tile's outlines are written in slide level-0 coordinates: they land in place
        # when the GeoJSON is imported onto the slide in QuPath (and `label` maps them back).
        where = ({} if it.tile is None else
                 {"offset": (it.tile.x, it.tile.y), "scale": it.tile.downsample})
        geo = write_geojson(folder / f"{stem}.geojson", labels,
                            id_key=pre_annotation_key(it.name, round_id), **where)
        n = len(set(labels[labels > 0].tolist()))
        with ws.writer():
            ws.add_pre_annotation(round_id, it.id, png, file_sha256(png), geo, file_sha256(geo),
                                  n, pa.model)
    return folder


def _safe(name: str) -> str:
    """An item name as a file name (the names ``init`` gives are already safe)."""
    return name.replace("/", "_").replace("\\", "_")
