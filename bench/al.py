"""Annotation efficiency with spread (issue 15 items 2-4): five strategies, several seeds, ALC.

    python bench/al.py --synthetic 48 --out bench/results/al-synthetic [--seeds 0,1,2]
    python bench/al.py --glas ../shared/data/glas --config configs/glas-cpu.yaml --out bench/results/al \
        --seeds 0,1,2 --eval-every 2 --set train.steps=300 --set ensemble.steps=80 \
        --set ensemble.scale=0.5 --set ensemble.members=2 --set ensemble.continue_fraction=0.4
    ... --resume        # continue a killed run where its state on disk ends

Protocol. Strategies (``--strategies``, default all five):
  random            the baseline (no ensemble)
  uncertainty       the K most uncertain of the config's suggestive ensemble (quantized: QSA's)
  suggestive        QSA (Xu et al. 2018): the config's quantized ensemble, uncertainty + max-cover
  suggestive-float  SA (Yang et al. 2017): the same with a float ensemble (ensemble.quant null)
  coreset           k-centre greedy on the ensemble's descriptors (Sener & Savarese 2018)
For each seed (``--seeds``, >= 3 for the statistics; the seed sets the random start set and every
training's seed): start from ``active.initial_labeled`` (10%) of the pool, label ``active.budget``
(k = 8) per round from the hidden masks until ``simulate.target_fraction`` (50%), and train and
evaluate the final segmenter (``final.*``, the same for every strategy; post-processing tuned on
its own training labels, ``postprocess.tune``) every ``--eval-every`` rounds and at the end, on
the workspace's test split (GlaS: Test A; nothing is tuned on it). The round-0 point (the start
set) is the same for every strategy of a seed and is trained once, by the first strategy, unless
``final.continue_fraction`` makes later points depend on it. A full-data reference per seed
trains the final segmenter on the whole pool with the same budget (the same steps or minutes, from
scratch). The loop is ``seglearn.app.simulate.run_strategy``.

Resumable: every strategy and seed has its workspace under ``<out>/workspaces/`` (git-ignored), and
``<out>.json`` is rewritten after every round and every point. ``--resume`` reopens the
workspaces (a round interrupted mid-training continues from its checkpoints) and runs only what
is missing; it refuses a JSON made with another config or protocol. Every point records the
command, the run (an index into ``runs``), its config hash and seed.

Output ``<out>.json`` (the names of issue 15's results file; more keys beside them):
  points     one per strategy, seed and evaluated round: strategy, seed, round, fraction,
             n_labeled, f1, obj_dice, obj_hausdorff, pixel_dice, cpu_seconds (final training +
             evaluation of this point), config_hash, run, command
  reference  the full-data points (one per seed)
  summary    per strategy: alc_mean, alc_std, seeds (object F1; ``seglearn.report.alstats``),
             reach_0.95 (fraction labeled at 95% of the full-data F1; null if never), the curve
             (mean/std per fraction), and the same ALC statistics for obj_dice
  paired     "suggestive-random" etc.: alc_diff_mean, alc_diff_std over seeds
  descriptor the dataset's row of bench/results/descriptors.json for active.descriptor
  cost       CPU and wall seconds per round (ensemble training + selection) and per curve
  answers    the issue's questions as yes/no with their numbers
and ``<out>.png``: mean curves with +-std bands, object F1 and object Dice panels.
"""

from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.getcwd()) != _HERE]  # see select.py

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from seglearn import atomic  # noqa: E402
from seglearn.config import Config, ConfigError, load_config, with_values  # noqa: E402

STRATEGIES = {
    "random": ("random", {}),
    "uncertainty": ("uncertainty", {}),
    "suggestive": ("suggestive", {}),
    "suggestive-float": ("suggestive", {"ensemble.quant.weight": None, "ensemble.quant.act": None}),
    "coreset": ("coreset", {}),
}
METRICS = {"f1": "object F1", "obj_dice": "object Dice"}
POINT_KEYS = ("strategy", "seed", "round", "fraction", "n_labeled", "f1", "obj_dice",
              "obj_hausdorff", "pixel_dice", "cpu_seconds", "wall_seconds", "final_steps")
DESCRIPTORS_JSON = Path(__file__).resolve().parent / "results" / "descriptors.json"


def strategy_config(cfg: Config, name: str) -> tuple[str, Config]:
    strategy, over = STRATEGIES[name]
    return strategy, with_values(cfg, over, f"strategy {name}")


def reference_config(cfg: Config) -> Config:
    return with_values(cfg, {"active.initial_labeled": 1.0, "simulate.target_fraction": 1.0},
                       "full-data reference")


def protocol(cfg: Config, args) -> dict:
    """What makes two runs comparable (a resumed run must match it)."""
    return {"strategies": args.strategies, "seeds": args.seeds, "eval_every": args.eval_every,
            "source": source_of(args), "config_hash": cfg.hash(),
            "start": cfg.active.initial_labeled, "k": cfg.active.budget,
            "target": cfg.simulate.target_fraction}


def source_of(args) -> dict:
    return {"glas": str(args.glas)} if args.glas else {"synthetic": int(args.synthetic)}


def _point(row: dict, c: Config, run: int, command: str) -> dict:
    out = {k: row[k] for k in POINT_KEYS if k in row}
    out.update({"config_hash": c.hash(), "run": run, "command": command})
    if "shared_from" in row:
        out["shared_from"] = row["shared_from"]
    return out


class Results:
    """The JSON on disk, rewritten (atomically) after every round and point."""

    def __init__(self, path: Path, cfg: Config, args, command: str):
        self.path, self.cfg, self.args, self.command = path, cfg, args, command
        self.t0 = time.perf_counter()
        self.data = {"points": [], "reference": [], "finished": [], "rounds": [], "runs": []}
        if path.is_file():
            if not args.resume:
                sys.exit(f"error: {path} exists; --resume continues that run, --force starts over")
            old = json.loads(path.read_text())
            want = protocol(cfg, args)
            if old.get("protocol") != want:
                diff = sorted(k for k in want if (old.get("protocol") or {}).get(k) != want[k])
                sys.exit(f"error: {path} was made with another protocol or config ({', '.join(diff)} "
                         "differ); drop --resume and pass --force, or choose another --out")
            for key in self.data:
                self.data[key] = old.get(key, [])
        self.run = len(self.data["runs"])
        self.data["runs"].append({"run": self.run, "command": command,
                                  "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                  "wall_seconds": 0.0})

    def have(self, strategy: str, seed: int) -> set[int]:
        return {p["round"] for p in self.data["points"]
                if p["strategy"] == strategy and p["seed"] == seed}

    def finished(self, strategy: str, seed: int) -> bool:
        return [strategy, seed] in self.data["finished"]

    def add_point(self, row: dict, c: Config) -> None:
        self.data["points"].append(_point(row, c, self.run, self.command))
        self.write()

    def add_round(self, info: dict) -> None:
        self.data["rounds"].append({**info, "run": self.run})
        self.write()

    def finish(self, strategy: str, seed: int) -> None:
        self.data["finished"].append([strategy, seed])
        self.write()

    def write(self, final: bool = False) -> None:
        self.data["runs"][-1]["wall_seconds"] = time.perf_counter() - self.t0
        out = {"command": self.command, "protocol": protocol(self.cfg, self.args),
               "config": self.cfg.to_dict(), "machine": machine(), **self.data}
        if self.data["points"]:
            out.update(statistics(self.data, self.args.share))
        out["cost"] = cost(self.data)
        out["descriptor"] = descriptor_row(self.args, self.cfg)
        atomic.write_text(self.path, json.dumps(out, indent=2, default=_json_default))
        if final and self.data["points"]:
            plot(out, self.path.with_suffix(".png"), self.args)


def _json_default(x):
    if hasattr(x, "item"):
        return x.item()
    return str(x)


def machine() -> dict:
    import torch

    return {"python": platform.python_version(), "platform": platform.platform(),
            "cpus": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads()}


def statistics(data: dict, share: float) -> dict:
    """summary, paired and answers from the points (F1, with obj_dice's ALC beside it)."""
    from seglearn.report.alstats import summarize

    finished = {tuple(f) for f in data["finished"]}
    # only whole curves: a curve cut short would be integrated over a shorter common range
    pts = [p for p in data["points"] if (p["strategy"], p["seed"]) in finished]
    if not pts:
        return {}
    ref = data["reference"] or None
    f1 = summarize(pts, ref, "f1", share=share)
    dice = summarize(pts, ref, "obj_dice", share=share)
    for s, row in f1["summary"].items():
        d = dice["summary"].get(s, {})
        row["obj_dice"] = {k: d.get(k) for k in ("alc_mean", "alc_std", "seeds", "end_mean",
                                                 "end_std", "curve")}
    for k, row in f1["paired"].items():
        d = dice["paired"].get(k, {})
        row["obj_dice"] = {k2: d.get(k2) for k2 in ("alc_diff_mean", "alc_diff_std")}
    out = {"summary": f1["summary"], "paired": f1["paired"], "alc_range": f1["range"],
           "reference_f1": f1["reference"], "reference_obj_dice": dice["reference"]}
    out["answers"] = answers(f1)
    return out


def answers(f1: dict) -> dict:
    """Issue 15's questions: does suggestive at the target reach full-data F1, and is its ALC above
    random's by more than one standard deviation of the paired difference?"""
    out = {}
    s, ref = f1["summary"].get("suggestive"), f1["reference"]
    if s is not None and ref is not None:
        out["suggestive_reaches_full_f1"] = {
            "answer": bool(s["end_mean"] >= ref["mean"]), "end_f1_mean": s["end_mean"],
            "end_f1_std": s["end_std"], "full_f1_mean": ref["mean"], "full_f1_std": ref["std"]}
    p = f1["paired"].get("suggestive-random")
    if p is not None:
        out["suggestive_alc_above_random_by_1std"] = {
            "answer": bool(p["alc_diff_std"] is not None and p["alc_diff_mean"] > p["alc_diff_std"]),
            "alc_diff_mean": p["alc_diff_mean"], "alc_diff_std": p["alc_diff_std"],
            "seeds": p["seeds"]}
    return out


def cost(data: dict) -> dict:
    """CPU/wall seconds: per selection round (ensemble training + selection + labels), per point
    (final training + evaluation), per curve (its rounds and its own points) and in all."""
    curves: dict[str, dict[str, dict]] = {}

    def add(strategy, seed, cpu, wall):
        c = curves.setdefault(strategy, {}).setdefault(str(seed), {"cpu_seconds": 0.0,
                                                                   "wall_seconds": 0.0})
        c["cpu_seconds"] += cpu
        c["wall_seconds"] += wall

    for r in data["rounds"]:
        add(r["strategy"], r["seed"], r["cpu_seconds"], r["wall_seconds"])
    for p in data["points"]:
        if "shared_from" not in p:
            add(p["strategy"], p["seed"], p.get("cpu_seconds", 0.0), p.get("wall_seconds", 0.0))
    ref_cpu = sum(r.get("cpu_seconds", 0.0) for r in data["reference"])
    total = sum(c["cpu_seconds"] for by in curves.values() for c in by.values()) + ref_cpu
    return {"rounds": [{k: r[k] for k in ("strategy", "seed", "round", "n_labeled",
                                          "cpu_seconds", "wall_seconds")}
                       for r in data["rounds"]],
            "curves": curves, "reference_cpu_seconds": ref_cpu, "total_cpu_seconds": total,
            "total_wall_seconds": sum(r.get("wall_seconds", 0.0) for r in data["runs"]),
            "note": "cpu_seconds = time.process_time(): every thread of the process (2 cores "
                    "busy count twice); a round's is its ensemble training and selection, a "
                    "point's its final segmenter's training, tuning and evaluation"}


def descriptor_row(args, cfg: Config) -> dict:
    """The dataset's row of bench/results/descriptors.json for the config's descriptor."""
    dataset = "glas" if args.glas else "synthetic"
    out = {"dataset": dataset, "descriptor": cfg.active.descriptor, "median_cosine": None,
           "gain_ratio_2_8": None, "source": None}
    if DESCRIPTORS_JSON.is_file():
        data = json.loads(DESCRIPTORS_JSON.read_text())
        for row in data.get("rows", []):
            if row.get("dataset") == dataset and row.get("descriptor") == cfg.active.descriptor:
                out.update({"median_cosine": row.get("median_cosine"),
                            "gain_ratio_2_8": row.get("gain_ratio_2_8"),
                            "source": f"bench/results/descriptors.json ({row.get('command')})"})
    return out


def plot(out: dict, path: Path, args) -> None:
    from seglearn.report.sheets import spread_panels

    summary = out.get("summary") or {}
    if not summary:
        return
    panels = {METRICS["f1"]: {s: r["curve"] for s, r in summary.items()},
              METRICS["obj_dice"]: {s: r["obj_dice"]["curve"] for s, r in summary.items()}}
    refs = {}
    for key, name in METRICS.items():
        ref = out.get(f"reference_{key}")
        if ref:
            refs[name] = ref["mean"]
    seeds = max(r["seeds"] for r in summary.values())
    where = "GlaS Test A" if args.glas else f"synthetic pool ({args.synthetic})"
    spread_panels(panels, path, f"{where}: mean over {seeds} seed(s), +-1 std shaded", refs)


def run(args, cfg: Config, command: str) -> Results:
    from seglearn.app.simulate import run_strategy

    out = Path(args.out)
    res = Results(out.with_suffix(".json"), cfg, args, command)
    progress = not args.no_progress
    source = {"glas": Path(args.glas)} if args.glas else {"synthetic": int(args.synthetic)}
    wdir = out / "workspaces"
    share_start = cfg.final.continue_fraction == 0  # round 0 identical for every strategy
    for seed in args.seeds:
        if not res.finished("full", seed):
            rc = reference_config(cfg)
            rows = run_strategy(rc, wdir / f"full-seed{seed}", "random", seed, source, progress,
                                resume=args.resume)
            res.data["reference"].append(_point({**rows[-1], "strategy": "full"}, rc, res.run,
                                                command))
            res.finish("full", seed)
        start = None
        for i, name in enumerate(args.strategies):
            strategy, c = strategy_config(cfg, name)
            first = next((p for p in res.data["points"] if p["seed"] == seed and p["round"] == 0
                          and p["strategy"] == args.strategies[0]), None)
            start = first if share_start and i > 0 else None
            if res.finished(name, seed):
                continue
            have = res.have(name, seed)
            if start is not None and 0 not in have:
                res.add_point({**start, "strategy": name, "shared_from": args.strategies[0],
                               "cpu_seconds": 0.0, "wall_seconds": 0.0}, c)

            def point(ws, row, ev, _c=c, _name=name):
                res.add_point({**row, "strategy": _name}, _c)

            def round_done(ws, info, _name=name):
                res.add_round({**info, "strategy": _name})

            run_strategy(c, wdir / f"{name}-seed{seed}", strategy, seed, source, progress,
                         on_point=point, on_round=round_done, eval_every=args.eval_every,
                         skip_start=start is not None, resume=args.resume,
                         done_rounds=res.have(name, seed))
            res.finish(name, seed)
    res.write(final=True)
    return res


def simulation_parser(doc: str, out: str, out_help: str) -> argparse.ArgumentParser:
    """The arguments every simulated-annotation bench takes (this one and bench/continue.py): the
    pool (GlaS or synthetic), the config and its overrides, the output stem."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--glas", help="GlaS folder: the training images are the pool, Test A scores")
    src.add_argument("--synthetic", type=int, help="a synthetic pool of N images (fast)")
    ap.add_argument("--config", default=None, help="YAML config (default: the embedded one)")
    ap.add_argument("--set", action="append", default=[], help="config override key=value")
    ap.add_argument("--out", default=out, help=out_help)
    return ap


def parse(argv=None):
    ap = simulation_parser(__doc__, "bench/results/al",
                           "<out>.json, <out>.png and the workspaces under <out>/workspaces/")
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--eval-every", type=int, default=1,
                    help="evaluate the final segmenter every n-th round (and the last)")
    ap.add_argument("--share", type=float, default=0.95,
                    help="reach_<share>: the fraction labeled at this share of full-data F1")
    ap.add_argument("--resume", action="store_true", help="continue the run in <out>")
    ap.add_argument("--force", action="store_true", help="start over, replacing <out>.json")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    args.strategies = [s for s in args.strategies.split(",") if s]
    bad = [s for s in args.strategies if s not in STRATEGIES]
    if bad or not args.strategies:
        ap.error(f"--strategies: {', '.join(bad) or 'none given'}; choose from "
                 f"{', '.join(STRATEGIES)}")
    try:
        args.seeds = [int(s) for s in args.seeds.split(",") if s]
    except ValueError:
        ap.error(f"--seeds must be integers separated by commas, not {args.seeds!r}")
    if not args.seeds or len(set(args.seeds)) != len(args.seeds) or min(args.seeds) < 0:
        ap.error(f"--seeds must list distinct integers >= 0, not {args.seeds}")
    if args.eval_every < 1:
        ap.error("--eval-every must be >= 1")
    if args.glas and not Path(args.glas).is_dir():
        ap.error(f"--glas {args.glas}: no such folder")
    if args.synthetic is not None and args.synthetic < 4:
        ap.error("--synthetic needs at least 4 images")
    if args.resume and args.force:
        ap.error("--resume and --force exclude each other")
    return args


def main(argv=None) -> None:
    args = parse(argv)
    try:
        cfg = load_config(args.config, args.set)
    except ConfigError as e:
        sys.exit(f"error: {e}")
    if args.synthetic:
        cfg = with_values(cfg, {"synthetic.n": int(args.synthetic)}, "--synthetic")
    command = "python bench/al.py " + " ".join(sys.argv[1:] if argv is None else argv)
    out = Path(args.out)
    if args.force and out.with_suffix(".json").is_file():
        out.with_suffix(".json").unlink()
    res = run(args, cfg, command)
    s = res.data
    print(f"{len(s['points'])} points, {len(s['reference'])} reference(s): "
          f"{out.with_suffix('.json')} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
