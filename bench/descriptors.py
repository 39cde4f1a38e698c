"""Do the descriptors discriminate? Pairwise cosines and max-cover gains, per ``active.descriptor``.

    python bench/descriptors.py --synthetic 48 [--workdir DIR] [--set KEY=VALUE ...]
    python bench/descriptors.py --glas ../shared/data/glas --set ensemble.scale=0.5 \
        --set ensemble.steps=60
    python bench/descriptors.py --workspace WS [--dataset NAME]

With ``--synthetic N`` (or ``--glas DIR``) this makes the workspace the way ``seglearn init
--synthetic N`` (``init --glas DIR``) does, with the default config and the ``--set`` overrides,
and trains its suggestive ensemble (``seglearn train``); with ``--workspace`` it reads a workspace
whose suggestive ensemble is trained. Either way it scores the unlabeled pool (training images
only; GlaS's Test A is the workspace's test split and is never read) through ``select``'s own ``score_items`` -- the stored per-image descriptors -- and,
for every registered descriptor transform (seglearn.active.descriptors.DESCRIPTORS), reports:

  cosine_quantiles  quantiles of cos(d(i), d(j)) over the pool's pairs i < j after the transform;
                    Yang et al.'s raw spatial means of ReLU features give ~1 for every pair.
  gain_ratio_2_8    mean(gain_2 .. gain_8) / gain_1 of the suggestive strategy's greedy max-cover
                    (``select("suggestive")``: K = active.candidates most uncertain by
                    active.score, k = 8 picks, covering the whole pool), the coverage gains the
                    suggestion table shows. ~0 means every pick after the first covers nothing.
  gain_ratio_2_8_full_pool  the same with every pool image a candidate (``representative``).

plus, for comparison only (not a config option), ``mean-only``: the pool mean subtracted without
the per-channel scale of ``centered``.

Rows go to ``--json`` (default bench/results/descriptors.json), replacing earlier rows of the same
dataset and keeping the others, with the command that made them. Targets (issue 15): the default
descriptor's median cosine <= 0.9 and gain_ratio_2_8 >= 0.1.
"""

from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.getcwd()) != _HERE]  # see select.py

import argparse  # noqa: E402
import json  # noqa: E402
import shlex  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from seglearn.active import cosine_similarity, select  # noqa: E402
from seglearn.active.descriptors import DESCRIPTORS, pool_descriptors  # noqa: E402

QUANTILES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)
K_GAINS = 8  # the k: gains 2..8 against the first
RESULTS = Path(_HERE) / "results" / "descriptors.json"


def gain_ratio(gains: np.ndarray) -> float:
    """mean(gain_2 .. gain_k) / gain_1 (0 when the first pick covers nothing)."""
    g = np.asarray(gains, dtype=np.float64)
    return float(g[1:].mean() / g[0]) if len(g) > 1 and g[0] > 0 else 0.0


def measure(u: np.ndarray, d: np.ndarray, descriptor: str, candidates: int) -> dict:
    """The row of one descriptor transform on pool uncertainties ``u`` (U,) and descriptors (U, D)."""
    (z,) = pool_descriptors(descriptor, d)
    iu = np.triu_indices(len(d), 1)
    cos = cosine_similarity(z, z)[iu]
    k = min(K_GAINS, len(d))
    ids = list(range(len(d)))
    sugg = select("suggestive", k, ids, u, d, candidates=candidates, descriptor=descriptor)
    full = select("representative", k, ids, u, d, descriptor=descriptor)
    gains = np.array([s.coverage_gain for s in sugg])
    return {
        "descriptor": descriptor,
        "median_cosine": float(np.median(cos)),
        "cosine_quantiles": {f"{q:g}": float(np.quantile(cos, q)) for q in QUANTILES},
        "gain_ratio_2_8": gain_ratio(gains),
        "gains": gains.tolist(),
        "picks": [s.item_id for s in sugg],
        "gain_ratio_2_8_full_pool": gain_ratio([s.coverage_gain for s in full]),
    }


def pool_scores(ws, cfg) -> tuple[np.ndarray, np.ndarray, list]:
    """(uncertainty (U,), descriptors (U, D), pool items) of the unlabeled pool, as select reads them."""
    from seglearn.app.select import score_items
    from seglearn.models.ensemble import load_ensemble

    pool = ws.unlabeled("pool")
    ens = load_ensemble(ws, "suggestive", cfg)
    scores = score_items(ws, ens, pool, cfg, progress=False)
    u = np.array([scores[it.id][0][cfg.active.score] for it in pool], dtype=np.float64)
    d = np.stack([scores[it.id][1] for it in pool]).astype(np.float64)
    return u, d, pool


def _merge(path: Path, dataset: str, rows: list[dict], command: str) -> dict:
    old = json.loads(path.read_text()) if path.exists() else {}
    kept = [r for r in old.get("rows", []) if r.get("dataset") != dataset]
    commands = {**old.get("commands", {}), dataset: command}
    return {"rows": kept + rows, "commands": commands,
            "targets": {"median_cosine_max": 0.9, "gain_ratio_2_8_min": 0.1}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--synthetic", type=int, metavar="N", help="make and train the demo pool")
    src.add_argument("--glas", type=Path, metavar="DIR", help="make and train a GlaS workspace")
    src.add_argument("--workspace", type=Path, help="a workspace with a trained ensemble")
    ap.add_argument("--dataset", help="name of the rows (default: synthetic / glas / the folder)")
    ap.add_argument("--workdir", type=Path, help="keep the workspace made here")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="config override (repeatable)")
    ap.add_argument("--json", type=Path, default=RESULTS, help=f"results file (default {RESULTS})")
    args = ap.parse_args(argv)
    from seglearn.config import load_config
    from seglearn.store import Workspace

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="descriptors-") as tmp:
        if args.workspace is None:
            from seglearn.app.init import init_workspace
            from seglearn.app.train import train_workspace

            cfg = load_config(None, args.sets)
            ws = init_workspace((args.workdir or Path(tmp)) / "ws", cfg, glas=args.glas,
                                synthetic=args.synthetic, seed=0, force=True, progress=False)
            train_workspace(ws, cfg, progress=False)
            dataset = args.dataset or ("glas" if args.glas else "synthetic")
        else:
            from seglearn.cli.common import workspace_config

            ws = Workspace.open(args.workspace)
            cfg = workspace_config(ws, None, args.sets)
            dataset = args.dataset or args.workspace.name
        u, d, pool = pool_scores(ws, cfg)
        ws.close()
    runs = [(name, d, name, True) for name in DESCRIPTORS.names()]
    # For comparison, not a config option: the pool mean subtracted, no per-channel scale.
    runs.append(("mean-only", d - d.mean(axis=0), "yang", False))
    rows = []
    for label, x, name, option in runs:
        row = {"dataset": dataset, **measure(u, x, name, cfg.active.candidates),
               "descriptor": label, "config_option": option,
               "default": label == cfg.active.descriptor, "pool": len(pool),
               "features": int(d.shape[1]), "candidates": cfg.active.candidates}
        rows.append(row)
        q = row["cosine_quantiles"]
        print(f"{dataset} {label:>9}: cosine q05 {q['0.05']:.3f} median {q['0.5']:.3f} "
              f"q95 {q['0.95']:.3f}; gains {' '.join(f'{g:.2f}' for g in row['gains'])}; "
              f"mean(gain 2-8)/gain 1 = {row['gain_ratio_2_8']:.3f} "
              f"(full pool {row['gain_ratio_2_8_full_pool']:.3f})")
    command = "python " + " ".join(shlex.quote(a) for a in
                                   ["bench/descriptors.py", *(argv if argv is not None
                                                              else sys.argv[1:])])
    for r in rows:
        r["command"] = command
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(_merge(args.json, dataset, rows, command), indent=2) + "\n")
    print(f"{len(pool)} pool images, {d.shape[1]} features, {time.perf_counter() - t0:.0f} s; "
          f"rows in {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
