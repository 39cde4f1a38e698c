"""Does a half-resolution suggestive ensemble rank the pool like a full-resolution one?

    python bench/select_scale.py [--pool 96] [--labeled 16] [--size 256] [--json OUT] [--set K=V]

``ensemble.scale = 0.5`` makes `select`'s pool inference 4x fewer FLOPs (bench/select.py); it is
only worth it if the ensemble still picks the same kind of images. On seglearn's synthetic glands
(``--size`` px, the issue's 256), with the default config (4 INQ-7 members, default steps, 128 px
crops), one workspace, one labeled start set, this trains three suggestive ensembles with
seglearn's own ``train_workspace``:

    full        ensemble.scale 1.0
    half        ensemble.scale 0.5
    full-seed2  ensemble.scale 1.0 again, other seeds: the noise floor

Each round has its own member seeds (the round id enters them) and bootstrap resamples, so
"full vs half" carries the same seed noise as "full vs full-seed2". All three score the same
unlabeled pool through ``select``'s own ``score_items`` (at their trained scale), and the table
compares them pairwise: Spearman rank correlation of the per-image uncertainty (``active.score``),
overlap of the top-K candidate sets (K = ``active.candidates``, the images max-cover chooses
from), overlap of the k suggested images (the suggestive strategy, ``active.budget``), and the
Spearman correlation of the pairwise descriptor cosine similarities (what max-cover covers with).
"""

from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.getcwd()) != _HERE]  # see select.py

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from seglearn.active import cosine_similarity, select  # noqa: E402
from seglearn.app.init import init_workspace  # noqa: E402
from seglearn.app.select import score_items  # noqa: E402
from seglearn.app.train import train_workspace  # noqa: E402
from seglearn.config import apply_overrides, config_from_dict, load_config  # noqa: E402
from seglearn.models.ensemble import load_ensemble  # noqa: E402

ENSEMBLES = (("full", 1.0), ("half", 0.5), ("full-seed2", 1.0))
PAIRS = (("full", "half"), ("full", "full-seed2"))


def train_and_score(ws, cfg, name: str, scale: float, pool) -> dict:
    """Train one suggestive ensemble at ``ensemble.scale = scale`` and score ``pool`` with it."""
    c = apply_overrides(config_from_dict(cfg.to_dict()), [f"ensemble.scale={scale}"])
    t0 = time.perf_counter()
    rows = train_workspace(ws, c, progress=False)
    t1 = time.perf_counter()
    ens = load_ensemble(ws, "suggestive", c, round_id=rows[0]["round"])
    scores = score_items(ws, ens, pool, c, progress=False)
    t2 = time.perf_counter()
    ids = [it.id for it in pool]
    u = np.array([scores[i][0][c.active.score] for i in ids])
    d = np.stack([scores[i][1] for i in ids])
    picks = select("suggestive", c.active.budget, ids, u, d, None, rng=0,
                   candidates=c.active.candidates)
    top = [ids[i] for i in np.argsort(-u, kind="stable")[: c.active.candidates]]
    return {"name": name, "scale": scale, "round": ens.round_id, "version": ens.version,
            "train_seconds": t1 - t0, "score_seconds": t2 - t1,
            "score_ms_per_image": 1e3 * (t2 - t1) / len(pool),
            "uncertainty": u.tolist(), "top": top, "picks": [p.item_id for p in picks],
            "_descriptors": d}


def compare(a: dict, b: dict) -> dict:
    rho = spearmanr(a["uncertainty"], b["uncertainty"]).statistic
    iu = np.triu_indices(len(a["uncertainty"]), 1)
    sims = [cosine_similarity(x["_descriptors"], x["_descriptors"])[iu] for x in (a, b)]
    return {"pair": f"{a['name']} vs {b['name']}",
            "spearman_uncertainty": float(rho),
            "top_overlap": len(set(a["top"]) & set(b["top"])), "top_k": len(a["top"]),
            "picks_overlap": len(set(a["picks"]) & set(b["picks"])), "picks_k": len(a["picks"]),
            "spearman_descriptor_similarity": float(spearmanr(*sims).statistic)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pool", type=int, default=96, help="unlabeled images scored")
    ap.add_argument("--labeled", type=int, default=16, help="labeled start set")
    ap.add_argument("--size", type=int, default=256, help="synthetic image side (px)")
    ap.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    ap.add_argument("--workdir", help="keep the workspace here (default: a temporary folder)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="config override (repeatable), e.g. ensemble.steps=30")
    args = ap.parse_args(argv)
    n = args.pool + args.labeled
    cfg = load_config(None, [f"synthetic.size={args.size}", "synthetic.test_fraction=0",
                             *args.sets])
    console = Console(width=120)
    with tempfile.TemporaryDirectory(prefix="select-scale-") as tmp:
        root = Path(args.workdir or tmp)
        ws = init_workspace(root / "ws", cfg, synthetic=n, initial_labeled=(args.labeled - 0.5) / n,
                            seed=cfg.active.seed, force=True, progress=False)
        pool = ws.unlabeled("pool")
        n_labeled = len(ws.training_items())
        runs = {}
        for name, scale in ENSEMBLES:
            runs[name] = train_and_score(ws, cfg, name, scale, pool)
            r = runs[name]
            console.print(f"{name}: scale {scale:g}, trained in {r['train_seconds']:.0f} s, "
                          f"scored {len(pool)} images in {r['score_seconds']:.1f} s")
        ws.close()
    comps = [compare(runs[a], runs[b]) for a, b in PAIRS]

    tab = Table(title=f"suggestive ensembles at ensemble.scale 1.0 vs 0.5: {len(pool)} pool "
                      f"images {args.size}^2, {n_labeled} labeled, {cfg.ensemble.members} members")
    for col in ("pair", f"Spearman {cfg.active.score}", "top-K overlap", "picks overlap",
                "Spearman descriptor cos"):
        tab.add_column(col)
    for c in comps:
        tab.add_row(c["pair"], f"{c['spearman_uncertainty']:.3f}",
                    f"{c['top_overlap']}/{c['top_k']}", f"{c['picks_overlap']}/{c['picks_k']}",
                    f"{c['spearman_descriptor_similarity']:.3f}")
    console.print(tab)
    cost = Table(title="cost per ensemble (this machine)")
    for col in ("ensemble", "scale", "train s", "score s", "score ms/image"):
        cost.add_column(col)
    for r in runs.values():
        cost.add_row(r["name"], f"{r['scale']:g}", f"{r['train_seconds']:.1f}",
                     f"{r['score_seconds']:.1f}", f"{r['score_ms_per_image']:.1f}")
    console.print(cost)
    if args.json:
        import torch

        out = {"comparisons": comps,
               "ensembles": [{k: v for k, v in r.items() if not k.startswith("_")}
                             for r in runs.values()],
               "pool": len(pool), "labeled": n_labeled, "size": args.size,
               "config_hash": cfg.hash(), "config": cfg.to_dict(), "overrides": args.sets,
               "machine": {"cpus": os.cpu_count(), "processor": platform.processor(),
                           "torch": torch.__version__, "threads": torch.get_num_threads(),
                           "load_average_1_5_15": os.getloadavg()}}  # timings are this box's
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
