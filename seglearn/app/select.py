"""`seglearn select`: score the unlabeled pool with the suggestive ensemble and suggest images.

Per-item scores and descriptors are stored in the datastore under the ensemble's model version, a
batch at a time: a re-run (or a run after a kill) reuses them instead of re-running inference, and
changing the strategy or budget re-selects without any inference at all.

The ensemble runs at the resize factor its members were trained at (their sidecars; for members
saved before the factor was recorded, ``config.role_scale(cfg, "suggestive")`` =
``data.scale * ensemble.scale``), for the scores and the picture sheet alike: ``load_ensemble``
resolves it, and the device, once. Yang et al.'s
ensemble only ranks images, so it can work below the final segmenter's resolution: at
``ensemble.scale = 0.5`` pool inference is 4x fewer FLOPs.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.progress import Progress

from seglearn import atomic
from seglearn.active import SCORES, score_image_all, score_map, select
from seglearn.app.images import item_image, slide_columns
from seglearn.app.preannotate import pre_annotator, write_pre_annotations
from seglearn.compute import get_backend
from seglearn.compute.pool import MOMENT_TRANSFORMS, descriptor_file, suggestive_streamed
from seglearn.config import Config
from seglearn.models.device import config_device
from seglearn.models.ensemble import BATCH_IMAGES, Ensemble, load_ensemble
from seglearn.report.sheets import suggestion_sheet

SCORE_NAMES = tuple(SCORES.names())  # stored per pool image: the registry is the list
SLIDE_COLUMNS = ("slide", "x", "y", "level")


@dataclass
class SelectResult:
    round: int
    strategy: str
    rows: list[dict]
    csv_path: Path
    sheet_path: Path
    pre_annotations: Path | None = None  # folder of <item>_pre.png/.geojson (active.pre_annotate)


def score_items(ws, ens: Ensemble, items, cfg: Config, progress: bool = True,
                batch: int = BATCH_IMAGES, backend=None) -> dict[int, tuple[dict, np.ndarray]]:
    """Scores and descriptors of ``items`` under ``ens`` (from ``load_ensemble``: run at its
    trained scale, on its device); computes only what is not stored yet under its model version
    (which names the scale)."""
    return ws.scores(store_scores(ws, ens, items, cfg, progress, batch, backend))


def store_scores(ws, ens: Ensemble, items, cfg: Config, progress: bool = True,
                 batch: int = BATCH_IMAGES, backend=None) -> str:
    """Score the ``items`` not stored yet under ``ens``'s model version through ``backend``
    (default ``compute.get_backend(cfg)``) and store them; returns the version. The results are
    stored a chunk per transaction as the backend hands them back, so a killed run keeps every
    chunk before it and a rerun scores only the rest."""
    version = score_version(ens, cfg.active.reduction)
    stored = ws.scored_ids(version)
    todo = [it for it in items if it.id not in stored]
    backend = backend or get_backend(cfg)
    with Progress(transient=True, disable=not progress) as prog:
        task = prog.add_task(f"scoring {len(todo)} images", total=len(todo))
        for chunk, results in backend.score(ens, todo, lambda it: item_image(ws, it),
                                            cfg.active.reduction, ens.device, batch):
            # One transaction per chunk: a killed run keeps every chunk before it.
            with ws.writer():
                ws.set_scores(version, [(it.id, sc, desc)
                                        for it, (sc, desc) in zip(chunk, results)])
            prog.advance(task, len(chunk))
    return version


def score_version(ens: Ensemble, reduction: str = "mean") -> str:
    """The key scores are stored under: the ensemble's model version (role, round, scale) and,
    unless it is the default mean, the reduction that turned the maps into numbers, so scores
    reduced one way are never read back as another's."""
    return ens.version if reduction == "mean" else f"{ens.version}-{reduction}"


def image_scores(ens: Ensemble, image: np.ndarray, reduction: str = "mean",
                 device: str | None = None) -> tuple[dict[str, float], np.ndarray]:
    """One pool image's work in ``select``: :func:`image_scores_many` of one image."""
    return image_scores_many(ens, [image], reduction, device)[0]


def image_scores_many(ens: Ensemble, images: list[np.ndarray], reduction: str = "mean",
                      device: str | None = None) -> list[tuple[dict[str, float], np.ndarray]]:
    """The work ``select`` does per pool image, for a chunk of them: the ensemble at its trained
    scale (its fused copies; small images batched, ``Ensemble.predict_many``), then every score
    of ``SCORE_NAMES`` on the foreground channel, and the member-averaged descriptor, per image.
    ``device``: default the ensemble's. ``bench/select.py`` times these two calls."""
    runs = ens.predict_many(images, device=device, bf16=False)
    return [(score_image_all(probs[:, 0], SCORE_NAMES, reduction), desc) for probs, desc in runs]


def _select_streamed(ws, ens: Ensemble, pool, ids, k: int, cfg: Config, progress: bool,
                     backend) -> list:
    """The suggestive picks of a pool too large for memory (seglearn.compute.pool)."""
    a = cfg.active
    version = store_scores(ws, ens, pool, cfg, progress, backend=backend)
    u, d = descriptor_file(ws, version, ids, a.score)
    try:
        return suggestive_streamed(ids, u, d, k, a.candidates, a.descriptor)
    finally:
        Path(d.filename).unlink(missing_ok=True)  # a cache of the datastore's rows: rebuilt each run


def select_workspace(ws, cfg: Config, progress: bool = True, backend=None) -> SelectResult:
    """Score the pool (through ``backend``, default ``compute.get_backend(cfg)``) and suggest."""
    a = cfg.active
    pool = ws.unlabeled("pool")
    if not pool:
        raise ValueError(f"workspace {ws.root} has no unlabeled pool images left to suggest")
    k = min(a.budget, len(pool))
    if a.strategy == "random":
        pa = _pre_annotator(ws, cfg, progress) if a.pre_annotate else None
        return _pre_annotate(ws, pa, _select_random(ws, cfg, pool, k), cfg)
    backend = backend or get_backend(cfg)  # a Ray cluster that does not answer fails here
    ens = load_ensemble(ws, "suggestive", cfg)
    pa = _pre_annotator(ws, cfg, progress, ens) if a.pre_annotate else None  # fails before writing
    need_labeled = a.strategy == "coreset"
    labeled = ws.training_items() if need_labeled else []
    ids = [it.id for it in pool]
    if backend.name == "ray" and a.strategy == "suggestive" and a.descriptor in MOMENT_TRANSFORMS:
        # streamed: scores stored chunk by chunk, descriptors on disk and read in blocks
        picks = _select_streamed(ws, ens, pool, ids, k, cfg, progress, backend)
    else:
        scores = score_items(ws, ens, pool + labeled, cfg, progress, backend=backend)
        u = np.array([scores[i][0][a.score] for i in ids], dtype=np.float64)
        d = np.stack([scores[i][1] for i in ids])
        lab = np.stack([scores[it.id][1] for it in labeled]) if labeled else None
        rng = np.random.default_rng(a.seed * 7919 + ens.round_id)
        # The descriptor transform needs the pool's statistics, so it runs at selection time
        # (inside select): stored descriptors and score_version do not depend on active.descriptor.
        picks = select(a.strategy, k, ids, u, d, lab, rng, candidates=a.candidates,
                       descriptor=a.descriptor)
    by_id = {it.id: it for it in pool}
    rows = [{"rank": r + 1, "item_id": int(p.item_id), "item": by_id[p.item_id].name,
             "path": by_id[p.item_id].image_path, "uncertainty": p.uncertainty,
             "coverage_gain": p.coverage_gain, "strategy": a.strategy,
             **slide_columns(by_id[p.item_id])}
            for r, p in enumerate(picks)]
    _record(ws, ens.round_id, rows)
    out_dir = ws.root / "suggestions"
    csv_path = _write_csv(out_dir / f"round_{ens.round_id:02d}.csv", rows)
    sheet_path = _sheet(ws, ens, rows, cfg, out_dir / f"round_{ens.round_id:02d}.png")
    return _pre_annotate(ws, pa, SelectResult(ens.round_id, a.strategy, rows, csv_path,
                                              sheet_path), cfg)


def _pre_annotator(ws, cfg: Config, progress: bool, suggestive=None):
    return pre_annotator(ws, cfg, progress, config_device(cfg), suggestive)


def _pre_annotate(ws, pa, result: SelectResult, cfg: Config) -> SelectResult:
    """``result`` with the pre-annotations of its rows written (``pa`` None: unchanged)."""
    if pa is None:
        return result
    folder = write_pre_annotations(ws, pa, result.round, result.rows, config_device(cfg))
    return dataclasses.replace(result, pre_annotations=folder)


def _select_random(ws, cfg: Config, pool, k: int) -> SelectResult:
    """The random baseline needs no model: no inference, no sheet of uncertainty maps."""
    with ws.writer():
        round_id = ws.start_round("select-random", cfg.hash())
        ws.finish_round(round_id, {"strategy": "random", "k": k})
    rng = np.random.default_rng(cfg.active.seed * 7919 + round_id)
    picks = select("random", k, [it.id for it in pool], np.zeros(len(pool)), None, None, rng)
    by_id = {it.id: it for it in pool}
    rows = [{"rank": r + 1, "item_id": int(p.item_id), "item": by_id[p.item_id].name,
             "path": by_id[p.item_id].image_path, "uncertainty": float("nan"),
             "coverage_gain": float("nan"), "strategy": "random",
             **slide_columns(by_id[p.item_id])} for r, p in enumerate(picks)]
    _record(ws, round_id, rows)
    csv_path = _write_csv(ws.root / "suggestions" / f"round_{round_id:02d}.csv", rows)
    return SelectResult(round_id, "random", rows, csv_path, csv_path)


def _record(ws, round_id: int, rows: list[dict]) -> None:
    keys = ("rank", "item_id", "uncertainty", "coverage_gain", "strategy")
    with ws.writer():
        ws.add_suggestions(round_id, [{k: r[k] for k in keys} for r in rows])


def _write_csv(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.writer(buf)
    # slide, x, y, level: where a whole-slide tile lies (level-0 px; empty for an ordinary image)
    w.writerow(["rank", "item", "path", "uncertainty", "coverage_gain", *SLIDE_COLUMNS])
    for r in rows:
        w.writerow([r["rank"], r["item"], r["path"], f"{r['uncertainty']:.6f}",
                    f"{r['coverage_gain']:.6f}", *(r.get(k, "") for k in SLIDE_COLUMNS)])
    return atomic.write_text(path, buf.getvalue())


def _sheet(ws, ens: Ensemble, rows: list[dict], cfg: Config, path: Path) -> Path:
    pics = []
    for r in rows:
        image = item_image(ws, r["item_id"])
        probs, _ = ens.predict(image)  # at the ensemble's scale, on its device
        pics.append({**r, "image": image, "uncertainty_map": score_map(probs[:, 0], cfg.active.score),
                     "mean_prob": probs[:, 0].mean(axis=0)})
    return suggestion_sheet(pics, path, f"round {ens.round_id} suggestions ({cfg.active.strategy})")
