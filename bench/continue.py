"""Continued rounds against from-scratch rounds on the same labels (issue 14 item 5).

    python bench/continue.py --glas ../shared/data/glas --config configs/glas-cpu.yaml \
        --out bench/results/continue --seeds 0,1 --fraction 0.4 \
        --set active.initial_labeled=0.3 --set train.minutes=1.5 --set train.clock=cpu \
        --set ensemble.minutes=0.8 --set ensemble.scale=0.5 --set ensemble.members=2
    python bench/continue.py --synthetic 24 --out /tmp/continue ...   # fast (the CI smoke test)

Per seed: a workspace labels its random start set (``active.initial_labeled``) and trains the
suggestive ensemble and the final segmenter on it from scratch (round r). Then ``active.budget``
more images, drawn at random so that every arm sees the same labels, are labeled (round r + 1),
and the workspace is copied into arms that train round r + 1:

  scratch    from scratch with the full budget (what every round did before continued rounds)
  continued  each member starts from its round-r twin (``ensemble.continue_fraction`` and
             ``final.continue_fraction`` = ``--fraction``) with that share of the budget
  reseeded   from scratch with another ``train.seed``: the noise floor. Two from-scratch trainings
             on the same labels differ by this much, so a continued round "agrees" with the scratch
             round when it is no further from it than ``reseeded`` is (``--no-reseeded`` skips it)

Measured per arm: the final segmenter's test metrics (GlaS: Test A; its post-processing tuned on
its own training labels, as ``train --final`` does), the CPU seconds of its ensemble and final
training (the whole round, with loading and post-processing tuning) and the members' training
seconds alone, and the suggestive ensemble's ranking of the unlabeled pool against the scratch arm's:
Spearman's rho of the uncertainty scores (``scipy.stats.spearmanr``) and the overlap of the top-k
(k = ``active.budget``: the images a round would suggest by uncertainty).

``--resume`` keeps the seeds ``<out>.json`` already holds, when it was made with the same config
(``Config.hash``) and ``--fraction``, and runs only the other ``--seeds``; without it the file is
started over.

Output ``<out>.json``: ``arms`` (one row per seed and arm), ``summary`` (per arm the mean and std
over seeds of F1, the F1 difference to scratch, the time ratio to scratch and the ranking
agreement) and ``target``: the issue's "a continued round reaches the from-scratch round's F1
(within 0.01) in <= 40% of its time", answered with the numbers. Workspaces go under
``<out>/workspaces/`` (git-ignored).
"""

from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.getcwd()) != _HERE]  # see select.py

import json  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from seglearn import atomic  # noqa: E402
from seglearn.config import Config, ConfigError, dict_hash, load_config, with_values  # noqa: E402

ARMS = ("scratch", "continued", "reseeded")


def arm_config(cfg: Config, arm: str, fraction: float) -> Config:
    """The round r + 1 config of an arm: the same as round r's but for how its members start."""
    if arm == "continued":
        return with_values(cfg, {"ensemble.continue_fraction": fraction,
                                 "final.continue_fraction": fraction}, "continued arm")
    base = with_values(cfg, {"ensemble.continue_fraction": 0.0, "final.continue_fraction": 0.0},
                       f"{arm} arm")
    if arm == "reseeded":
        return with_values(base, {"train.seed": cfg.train.seed + 7919}, "reseeded arm")
    return base


def top_k_overlap(a: dict[int, float], b: dict[int, float], k: int) -> float:
    """|top_k(a) & top_k(b)| / k over the items both score (ties broken by item id)."""
    ids = sorted(set(a) & set(b))
    if not ids or k < 1:
        return float("nan")
    k = min(k, len(ids))

    def top(s):
        return {i for i in sorted(ids, key=lambda i: (-s[i], i))[:k]}

    return len(top(a) & top(b)) / k


def spearman(a: dict[int, float], b: dict[int, float]) -> float:
    from scipy.stats import spearmanr

    ids = sorted(set(a) & set(b))
    if len(ids) < 3:
        return float("nan")
    rho = spearmanr([a[i] for i in ids], [b[i] for i in ids]).statistic
    return float(rho)


def _timed(fn):
    cpu, wall = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.process_time() - cpu, time.perf_counter() - wall


def _uncertainty(ws, cfg: Config, progress: bool) -> dict[int, float]:
    from seglearn.app.select import score_items
    from seglearn.models.ensemble import load_ensemble

    ens = load_ensemble(ws, "suggestive", cfg)
    scores = score_items(ws, ens, ws.unlabeled("pool"), cfg, progress)
    # the score a suggestive round ranks by (active.score: std by default, Yang et al.)
    return {i: float(sc[cfg.active.score]) for i, (sc, _desc) in scores.items()}


def run_seed(cfg: Config, source: dict, seed: int, root: Path, fraction: float, arms: list[str],
             progress: bool) -> list[dict]:
    """Round r on the start set, one random round of labels, then round r + 1 in every arm."""
    from seglearn.app.evaluate import evaluate_workspace
    from seglearn.app.init import init_workspace
    from seglearn.app.label import oracle_entries
    from seglearn.app.train import train_workspace
    from seglearn.store import Workspace

    c = with_values(cfg, {"train.seed": seed, "active.seed": seed}, f"seed {seed}")
    base = root / f"seed{seed}-base"
    ws = init_workspace(base, c, seed=seed, force=True, progress=progress, **source)
    train_workspace(ws, c, final=False, progress=progress)
    train_workspace(ws, c, final=True, progress=progress)
    rng = np.random.default_rng(10_000 + seed)
    pool = sorted(it.id for it in ws.unlabeled("pool"))
    new = sorted(int(i) for i in rng.choice(pool, size=min(c.active.budget, len(pool)),
                                            replace=False))
    with ws.writer():
        ws.add_labels(oracle_entries(ws, new))
    n_labeled = len(ws.training_items())
    ws.close()
    rows, ranks = [], {}
    for arm in arms:
        ac = arm_config(c, arm, fraction)
        path = root / f"seed{seed}-{arm}"
        shutil.rmtree(path, ignore_errors=True)
        shutil.copytree(base, path)
        aws = Workspace.open(path)
        _, ens_cpu, ens_wall = _timed(lambda: train_workspace(aws, ac, final=False,
                                                              progress=progress))
        _, fin_cpu, fin_wall = _timed(lambda: train_workspace(aws, ac, final=True,
                                                              progress=progress))
        ev = evaluate_workspace(aws, ac, progress=progress, overlays=False)
        ranks[arm] = _uncertainty(aws, ac, progress)
        last = {role: max(r.id for r in aws.rounds() if r.kind == f"train-{role}")
                for role in ("suggestive", "final")}
        steps = {role: [(m.metrics or {}).get("steps") for m in aws.models(role, last[role])]
                 for role in last}
        # the members' own training seconds (no loading, scoring or post-processing tuning)
        train_s = sum(float((m.metrics or {}).get("seconds") or 0.0)
                      for role in last for m in aws.models(role, last[role]))
        aws.close()
        rows.append({"seed": seed, "arm": arm, "n_labeled": n_labeled,
                     "fraction": fraction if arm == "continued" else 1.0,
                     "f1": ev.metrics.get("f1"), "obj_dice": ev.metrics.get("obj_dice"),
                     "pixel_dice": ev.metrics.get("pixel_dice"),
                     "ensemble_cpu_seconds": ens_cpu, "final_cpu_seconds": fin_cpu,
                     "ensemble_wall_seconds": ens_wall, "final_wall_seconds": fin_wall,
                     "train_seconds": train_s, "steps": steps})
    k = c.active.budget
    for row in rows:
        if "scratch" in ranks:
            row["spearman_vs_scratch"] = spearman(ranks[row["arm"]], ranks["scratch"])
            row["top_k_overlap_vs_scratch"] = top_k_overlap(ranks[row["arm"]], ranks["scratch"], k)
    return rows


def summarize(rows: list[dict]) -> dict:
    """Per arm: mean/std over seeds, with differences and time ratios to the same seed's scratch."""
    scratch = {r["seed"]: r for r in rows if r["arm"] == "scratch"}
    out = {}
    for arm in dict.fromkeys(r["arm"] for r in rows):
        mine = [r for r in rows if r["arm"] == arm]
        stats = {}
        for key in ("f1", "obj_dice", "spearman_vs_scratch", "top_k_overlap_vs_scratch"):
            v = [r[key] for r in mine if r.get(key) is not None]
            if v:
                stats[key] = {"mean": float(np.mean(v)), "std": float(np.std(v)), "n": len(v)}
        paired = [(r, scratch[r["seed"]]) for r in mine if r["seed"] in scratch]
        if paired and arm != "scratch":
            d = [r["f1"] - s["f1"] for r, s in paired if r["f1"] is not None]
            t = [(r["ensemble_cpu_seconds"] + r["final_cpu_seconds"])
                 / (s["ensemble_cpu_seconds"] + s["final_cpu_seconds"]) for r, s in paired]
            tf = [r["final_cpu_seconds"] / s["final_cpu_seconds"] for r, s in paired]
            tt = [r["train_seconds"] / s["train_seconds"] for r, s in paired if s["train_seconds"]]
            stats["f1_minus_scratch"] = {"mean": float(np.mean(d)), "std": float(np.std(d)),
                                         "n": len(d)}
            stats["time_ratio_vs_scratch"] = {"mean": float(np.mean(t)), "std": float(np.std(t))}
            stats["final_time_ratio_vs_scratch"] = {"mean": float(np.mean(tf)),
                                                    "std": float(np.std(tf))}
            if tt:
                stats["train_time_ratio_vs_scratch"] = {"mean": float(np.mean(tt)),
                                                        "std": float(np.std(tt))}
        out[arm] = stats
    return out


def target(summary: dict) -> dict | None:
    c = summary.get("continued")
    if not c or "f1_minus_scratch" not in c:
        return None
    diff, ratio = c["f1_minus_scratch"]["mean"], c["time_ratio_vs_scratch"]["mean"]
    train = (c.get("train_time_ratio_vs_scratch") or {}).get("mean")
    # "its time" is the round's: ensemble and final training with their fixed costs (loading,
    # scoring, post-processing tuning); the training alone is reported beside it
    return {"question": "continued round within 0.01 F1 of the from-scratch round in <= 40% of "
                        "its time", "f1_minus_scratch": diff, "time_ratio": ratio,
            "train_time_ratio": train, "met": bool(diff >= -0.01 and ratio <= 0.4)}


def kept_rows(path: Path, cfg: Config, fraction: float, arms: list[str]) -> tuple[list[dict], list[str]]:
    """``--resume``: the rows of ``path`` for the seeds it finished with every arm, and the
    commands that made them, when it was made with this config (``Config.hash``, also of a config
    stored before a key was added: ``config.dict_hash``) and ``fraction``; exits naming what
    differs otherwise. No file: nothing kept."""
    if not path.is_file():
        return [], []
    old = json.loads(path.read_text())
    stored = old.get("config_hash") or dict_hash(old.get("config", {}))
    if stored != cfg.hash() or old.get("fraction") != fraction:
        what = [n for n, bad in (("config", stored != cfg.hash()),
                                 ("fraction", old.get("fraction") != fraction)) if bad]
        sys.exit(f"error: {path} was made with another {' and '.join(what)}; drop --resume to "
                 "start over, or choose another --out")
    by_seed: dict[int, list[dict]] = {}
    for r in old.get("arms", []):
        by_seed.setdefault(r["seed"], []).append(r)
    rows = [r for seed, rs in sorted(by_seed.items()) if {r["arm"] for r in rs} >= set(arms)
            for r in rs if r["arm"] in arms]
    return rows, old.get("commands") or [old["command"]]


def _al_bench():
    """bench/al.py as a module (bench/ is off sys.path: see the top of this file)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_al", Path(_HERE) / "al.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def parse(argv=None):
    ap = _al_bench().simulation_parser(__doc__, "bench/results/continue",
                                       "<out>.json and the workspaces under <out>/workspaces/")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--fraction", type=float, default=0.4,
                    help="the continued arm's share of the budget")
    ap.add_argument("--no-reseeded", action="store_true", help="skip the noise-floor arm")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--resume", action="store_true",
                    help="keep the seeds <out>.json already has (same config hash, fraction and "
                         "arms) and run only the others")
    args = ap.parse_args(argv)
    args.seeds = [int(s) for s in str(args.seeds).split(",") if s.strip()]
    if not 0 < args.fraction <= 1:
        ap.error(f"--fraction must be in (0, 1], not {args.fraction}")
    return args


def main(argv=None) -> dict:
    args = parse(argv)
    command = "python bench/continue.py " + " ".join(sys.argv[1:] if argv is None else argv)
    try:
        cfg = load_config(args.config, args.set)
    except (ConfigError, OSError) as e:
        sys.exit(f"error: {e}")
    source = {"glas": Path(args.glas)} if args.glas else {"synthetic": int(args.synthetic)}
    out = Path(args.out)
    root = out / "workspaces"
    root.mkdir(parents=True, exist_ok=True)
    arms = [a for a in ARMS if not (a == "reseeded" and args.no_reseeded)]
    rows, commands = kept_rows(out.with_suffix(".json"), cfg, args.fraction, arms) if args.resume \
        else ([], [])
    done = sorted({r["seed"] for r in rows})
    seeds = done + [s for s in args.seeds if s not in done]
    t0 = time.perf_counter()
    result: dict = {}
    for seed in seeds:
        if seed not in done:
            rows += run_seed(cfg, source, seed, root, args.fraction, arms, not args.no_progress)
        summary = summarize(rows)
        # every command that made a kept row, then this one (the rows say which seed is whose)
        result = {"command": command, "commands": commands + [command], "config": cfg.to_dict(),
                  "config_hash": cfg.hash(), "fraction": args.fraction, "seeds": seeds,
                  "arms": rows, "summary": summary, "target": target(summary),
                  "wall_seconds": time.perf_counter() - t0}
        atomic.write_text(out.with_suffix(".json"), json.dumps(result, indent=2))
    print(json.dumps({"summary": result["summary"], "target": result["target"]}, indent=2))
    return result


if __name__ == "__main__":
    main()
