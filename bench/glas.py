"""GlaS benchmark: suggestive annotation and quantization on Test A (Yang et al. 2017; Xu et al. 2018).

    python bench/glas.py --config configs/glas-cpu.yaml --glas ../shared/data/glas \
        --out bench/results/glas-cpu [--rows a,b,curves,f,g] [--seeds 0,1]

Rows (Test A; object F1, object Dice, object Hausdorff, pixel Dice; instances of the binary GlaS
masks by connected components, 8-connectivity):
  a      float FCN, 100% of the training labels
  a1     the same with a single head (no contour head): the instance-aware comparison
  b      INQ-7 QNT (the config's final.quant), 100%
  c      random selection to 50%, float                      (final point of the random curve)
  d      suggestive annotation to 50%, float                  (final point of the suggestive curve)
  e      QSA + QNT to 50% (Xu et al.: quantized ensemble and final FCN) (final point of the qsa curve)
  f      the exported integer-only model of (e), run by seglearn.runtime
  g      (e)'s labeled set, final FCN with ternary middle layers (TWN, 8-bit first/last), exported
Curves: random, uncertainty, suggestive (float) and qsa (quantized), metric vs fraction labeled.

Writes ``<out>.json`` (every row's metrics, config hash, seed, wall time, machine), ``<out>/curves.png``
and ``<out>/<row>/testA_N.png`` (predicted instance masks, uint16 PNG) to re-score them; those
are derived from GlaS (research-use data) and are git-ignored, never committed.

Rescoring (``--phase rescore [--set postprocess.tune=true ...]``): training is the cost, the
post-processing of Test A is not. This phase reloads every final model the run left in
``<out>/workspaces`` (each curve point, each row), applies the post-processing of the given config
(tuned per model on its own training labels with ``postprocess.tune``) and writes
``<out>-rescored.json``, the predictions and ``curves-rescored.png``; the training is not redone.

Two-machine mode (a GPU for training, this machine for Test A): ``--phase train`` trains rows a, a1, b
on the GlaS training set alone and copies their checkpoints to ``--models``; ``--phase evaluate
--models DIR`` evaluates those checkpoints on Test A here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import numpy as np  # noqa: E402

from seglearn.config import Config, config_from_dict, load_config, with_values  # noqa: E402

FULL_ROWS = {
    "a": {"final.quant.weight": None, "model.contour_head": True},
    "a1": {"final.quant.weight": None, "model.contour_head": False},
    "b": {"model.contour_head": True},
}
CURVES = {
    "random": ("random", {"final.quant.weight": None}),
    "uncertainty": ("uncertainty", {"ensemble.quant.weight": None, "final.quant.weight": None}),
    "suggestive": ("suggestive", {"ensemble.quant.weight": None, "final.quant.weight": None}),
    "qsa": ("suggestive", {}),
}
CURVE_ROW = {"random": "c", "suggestive": "d", "qsa": "e"}
# Curves whose round-0 model is the random curve's (same start set, seed and float final FCN).
SHARES_START = ("suggestive", "uncertainty")


def machine(device: str) -> dict:
    import torch

    info = {"python": platform.python_version(), "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "torch": torch.__version__, "device": device}
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def save_predictions(out: Path, row: str, preds: dict) -> None:
    from seglearn.data import write_mask

    d = out / row
    d.mkdir(parents=True, exist_ok=True)
    for name, labels in preds.items():
        write_mask(d / f"{name}.png", labels)


def test_items(glas: Path) -> list[tuple[str, Path, Path]]:
    from seglearn.data import scan_glas

    return [(s.name, s.image_path, s.mask_path) for s in scan_glas(glas)
            if s.split == "test" and s.name.startswith("testA") and s.mask_path is not None]


def run_full(cfg: Config, glas: Path, out: Path, row: str, seed: int, progress: bool) -> dict:
    """Rows a, a1, b: the final segmenter on 100% of the training labels, evaluated on Test A."""
    from seglearn.app.simulate import run_strategy

    c = with_values(cfg, {**FULL_ROWS[row], "active.initial_labeled": 1.0,
                             "simulate.target_fraction": 1.0})
    found = {}
    rows = run_strategy(c, out / "workspaces" / row, "random", seed, {"glas": glas}, progress,
                        on_point=lambda ws, r, ev: found.update(ev.predictions))
    save_predictions(out, row, {k: v for k, v in found.items() if k.startswith("testA")})
    return {**rows[-1], "row": row, "config_hash": c.hash()}


def run_curve(cfg: Config, glas: Path, out: Path, name: str, seed: int, progress: bool,
              every: int = 1, start_point: dict | None = None):
    """One learning curve. ``every``: evaluate every n-th round (and the last). ``start_point``:
    the round-0 point of the random curve of this seed; curves whose final segmenter is the same
    float FCN (suggestive, uncertainty) share it instead of training the same model again."""
    from seglearn.app.simulate import run_strategy

    strategy, over = CURVES[name]
    c = with_values(cfg, over)
    share = start_point is not None and name in SHARES_START
    last = {}
    rows = run_strategy(c, out / "workspaces" / f"{name}-seed{seed}", strategy, seed,
                        {"glas": glas}, progress,
                        on_point=lambda ws, r, ev: last.update(ev.predictions),
                        eval_every=every, skip_start=share)
    if share:
        rows.insert(0, {**start_point, "strategy": strategy, "shared_from": "random"})
    for r in rows:
        r.update({"curve": name, "config_hash": c.hash()})
    return rows, last


def runtime_metrics(model_path: Path, glas: Path) -> tuple[dict, dict]:
    """Test A metrics and instance maps of an exported .slq model run by ``seglearn.runtime``."""
    from seglearn.app.evaluate import score_predictions
    from seglearn.data import read_image, read_mask
    from seglearn.runtime import load_model

    m = load_model(model_path)
    preds, gts = {}, []
    for name, image_path, mask_path in test_items(glas):
        image = read_image(image_path)
        preds[name] = m.predict(image)
        gts.append(read_mask(mask_path, shape=image.shape[:2]))
    return score_predictions(list(preds.values()), gts), preds


def run_exported(cfg: Config, out: Path, glas: Path, src_row: str, seed: int, row: str,
                 final_over: dict | None, progress: bool) -> dict:
    """Row f (export of e's final segmenter) and g (e's labeled set, a low-bit final FCN, exported)."""
    from seglearn.app.export import export_workspace
    from seglearn.app.train import train_workspace
    from seglearn.store import Workspace

    t0 = time.perf_counter()
    ws = Workspace.open(out / "workspaces" / f"qsa-seed{seed}")
    c = cfg
    if final_over:
        c = with_values(cfg, final_over)
        train_workspace(ws, c, final=True, progress=progress)
    model_path = out / f"{row}.slq"
    info = export_workspace(ws, model_path, overwrite=True)  # a rerun replaces its own row
    metrics, preds = runtime_metrics(model_path, glas)
    save_predictions(out, row, preds)
    return {"row": row, "strategy": "suggestive", "seed": seed, "source": src_row,
            "fraction": None, **metrics, "seconds": time.perf_counter() - t0,
            "model_bytes": model_path.stat().st_size, "export": str(info)[:500],
            "config_hash": c.hash()}


def phase_train(cfg: Config, glas: Path, models: Path, rows: list[str], progress: bool) -> None:
    """Train rows a/a1/b on the training set alone (e.g. on a GPU) and copy their checkpoints."""
    from seglearn.app.init import init_workspace
    from seglearn.app.train import train_workspace
    from seglearn.train.engine import load_checkpoint, save_checkpoint

    models.mkdir(parents=True, exist_ok=True)
    for row in rows:
        t0 = time.perf_counter()
        c = with_values(cfg, {**FULL_ROWS[row], "active.initial_labeled": 1.0})
        ws = init_workspace(models / "ws" / row, c, glas=glas, initial_labeled=1.0, force=True,
                            progress=progress)
        out_rows = train_workspace(ws, c, final=True, progress=progress)
        sidecars = {}
        for r in out_rows:
            # Weights only (no optimizer state): what evaluation needs, a third of the bytes.
            src = Path(r["path"])
            state = load_checkpoint(src)
            save_checkpoint(models / f"{row}-m{r['member']}.pt",
                            {"model": state["model"], "step": state["step"]})
            sidecars[r["member"]] = json.loads(src.with_suffix(".json").read_text())
        (models / f"{row}.json").write_text(json.dumps(
            {"row": row, "config": c.to_dict(), "config_hash": c.hash(), "train_rows": out_rows,
             "sidecars": sidecars, "machine": machine(c.train.device),
             "seconds": time.perf_counter() - t0}, indent=2, default=str))
        print(f"{row}: {time.perf_counter() - t0:.0f} s", flush=True)


def phase_evaluate(cfg: Config, glas: Path, models: Path, out: Path, progress: bool) -> list[dict]:
    from seglearn.app.evaluate import evaluate_images
    from seglearn.models.checkpoint import load_trained
    from seglearn.models.ensemble import Ensemble

    results = []
    for meta_path in sorted(models.glob("*.json")):
        if "-m" in meta_path.stem:
            continue
        meta = json.loads(meta_path.read_text())
        row = meta["row"]
        c = config_from_dict(meta["config"])
        paths = sorted(models.glob(f"{row}-m*.pt"))
        for member, side in meta.get("sidecars", {}).items():  # rebuild the JSON sidecars
            (models / f"{row}-m{member}.json").write_text(json.dumps(side))
        ens = Ensemble([load_trained(p)[0] for p in paths], paths, 0, "final")
        t0 = time.perf_counter()
        metrics, preds = evaluate_images(ens, test_items(glas), c, progress=progress)
        save_predictions(out, row, preds)
        results.append({"row": row, "fraction": 1.0, **metrics, "config_hash": meta["config_hash"],
                        "train_seconds": meta["seconds"], "eval_seconds": time.perf_counter() - t0,
                        "trained_on": meta.get("machine"), "steps": c.final.steps or c.train.steps})
    return results


def final_rounds(ws) -> list[int]:
    """Ids of the finished final rounds of a workspace, oldest first (one per evaluated point)."""
    from seglearn.models.ensemble import finished_rounds

    return finished_rounds(ws, "final")


def workspace_config(ws, overrides: list[str]) -> Config:
    """The config a workspace was made with, plus the rescore's ``--set`` overrides."""
    from seglearn.config import apply_overrides

    return apply_overrides(config_from_dict(ws.meta("config")), overrides)


def rescore_model(ws, c: Config, round_id: int, glas: Path, progress: bool):
    from seglearn.app.evaluate import evaluate_images
    from seglearn.app.tune import final_postprocess
    from seglearn.models.ensemble import load_ensemble

    ens = load_ensemble(ws, "final", c, round_id=round_id)
    params = final_postprocess(ws, c, ens, progress=progress)
    metrics, preds = evaluate_images(ens, test_items(glas), c, progress=progress, params=params)
    return {**metrics, "postprocess": params.to_dict(), "final_round": round_id}, preds


def phase_rescore(cfg: Config, glas: Path, out: Path, overrides: list[str], progress: bool,
                  args) -> None:
    """Re-evaluate every final model of an earlier run with this config's post-processing."""
    from seglearn.store import Workspace

    t0 = time.perf_counter()
    src = json.loads(out.with_suffix(".json").read_text())
    res_out = out.with_name(out.name + "-rescored")
    rows, curves = [], []

    # Points rescored by an earlier rescore with the same overrides are kept (a rescore can run
    # while the benchmark is still training, then again for the rest).
    cache: dict[tuple[str, int], dict] = {}
    prev_path = res_out.with_suffix(".json")
    if prev_path.is_file():
        prev = json.loads(prev_path.read_text())
        if prev.get("overrides") == overrides:
            cache.update({(k.rsplit("#", 1)[0], int(k.rsplit("#", 1)[1])): v
                          for k, v in prev.get("scored", {}).items()})

    def score(ws_name: str, round_id: int, row: str | None) -> dict:
        key = (ws_name, round_id)
        if key in cache and row is not None and not (res_out / row).is_dir():
            del cache[key]  # its prediction PNGs are needed again
        if key not in cache:
            ws = Workspace.open(out / "workspaces" / ws_name)
            m, preds = rescore_model(ws, workspace_config(ws, overrides), round_id, glas, progress)
            ws.close()
            cache[key] = m
            if row is not None:
                save_predictions(res_out, row, preds)
            prev_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = prev_path.with_name(prev_path.name + ".tmp")  # progress survives a kill
            tmp.write_text(json.dumps({"overrides": overrides, "partial": True, "scored": {
                f"{k[0]}#{k[1]}": v for k, v in cache.items()}}, indent=2, default=float))
            os.replace(tmp, prev_path)
        return cache[key]

    for r in src["rows"]:
        if r["row"] in FULL_ROWS:
            ws = Workspace.open(out / "workspaces" / r["row"])
            last = final_rounds(ws)[-1]
            ws.close()
            rows.append({**r, **score(r["row"], last, r["row"]), "rescored_from": r.get("f1")})
    by_curve: dict[tuple[str, int], list[dict]] = {}
    for p in src["curves"]:
        by_curve.setdefault((p["curve"], p["seed"]), []).append(p)
    for (name, seed), pts in by_curve.items():
        ws_name = f"{name}-seed{seed}"
        ws = Workspace.open(out / "workspaces" / ws_name)
        pts = sorted(pts, key=lambda p: p["round"])
        own = [p for p in pts if not p.get("shared_from")]
        ids = iter(final_rounds(ws)[:len(own)])  # the curve's points first; row g's comes after
        ws.close()
        for p in pts:
            row = CURVE_ROW.get(name) if p is pts[-1] and seed == src["curves"][0]["seed"] else None
            if p.get("shared_from"):  # the random curve's round-0 model
                src_ws = Workspace.open(out / "workspaces" / f"{p['shared_from']}-seed{seed}")
                where = (f"{p['shared_from']}-seed{seed}", final_rounds(src_ws)[0])
                src_ws.close()
            else:
                where = (ws_name, next(ids))
            if args.rows_only and row is None:
                continue  # --rows-only: the curves' last points (rows c, d, e) only
            m = score(*where, row)
            curves.append({**p, **m, "rescored_from": p.get("f1")})
            if row is not None:
                rows.append({**p, **m, "row": row, "rescored_from": p.get("f1")})
    n_qsa = len([p for p in by_curve.get(("qsa", src["curves"][0]["seed"] if src["curves"] else 0),
                                         []) if not p.get("shared_from")])
    for r in src["rows"]:
        if r["row"] in ("f", "g") and n_qsa:
            rows.append(rescore_exported(cfg, out, res_out, glas, r, overrides, n_qsa, progress))
    data = {"command": " ".join(sys.argv), "source": str(out.with_suffix(".json")),
            "overrides": overrides, "config_hash": src.get("config_hash"),
            "machine": machine(cfg.train.device), "wall_seconds": time.perf_counter() - t0,
            "rows": rows, "curves": curves,
            "scored": {f"{k[0]}#{k[1]}": v for k, v in cache.items()}}
    path = res_out.with_suffix(".json")
    path.write_text(json.dumps(data, indent=2, default=float))
    print_table(rows)
    plot_curves(curves, res_out / "curves.png",
                f"GlaS, {args.config}, post-processing {' '.join(overrides) or 'as run'}")


def rescore_exported(cfg: Config, out: Path, res_out: Path, glas: Path, r: dict,
                     overrides: list[str], n_qsa_points: int, progress: bool) -> dict:
    """Rows f and g: re-export the model with the rescored post-processing, run the runtime.

    Both live in the qsa workspace: f is its last curve point's final model (e's), g the final
    model trained after the curve (``run_exported``)."""
    from seglearn.app.export import export_workspace
    from seglearn.store import Workspace

    t0 = time.perf_counter()
    ws = Workspace.open(out / "workspaces" / "qsa-seed0")
    ids = final_rounds(ws)
    rid = ids[n_qsa_points - 1] if r["row"] == "f" else ids[-1]
    c = workspace_config(ws, overrides)
    path = res_out / f"{r['row']}.slq"
    path.parent.mkdir(parents=True, exist_ok=True)
    info = export_workspace(ws, path, round_id=rid, cfg=c, overwrite=True)
    metrics, preds = runtime_metrics(path, glas)
    ws.close()
    save_predictions(res_out, r["row"], preds)
    return {**r, **metrics, "final_round": rid,
            "model_bytes": path.stat().st_size, "export": str(info)[:500],
            "rescored_from": r.get("f1"), "seconds": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="configs/glas-cpu.yaml")
    ap.add_argument("--glas", default=os.environ.get("SEGLEARN_GLAS_DIR", "../shared/data/glas"))
    ap.add_argument("--out", default="bench/results/glas-cpu")
    ap.add_argument("--rows", default="a,a1,b,curves,f,g")
    ap.add_argument("--curves", default="random,suggestive,qsa,uncertainty")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--curve-every", type=int, default=1,
                    help="evaluate a learning curve every n-th round (and its last); 2 halves the "
                         "final-model trainings of a curve")
    ap.add_argument("--set", action="append", default=[], help="config override key=value")
    ap.add_argument("--phase", choices=("all", "train", "evaluate", "rescore"), default="all")
    ap.add_argument("--models", default=None, help="checkpoint folder for --phase train/evaluate")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--rows-only", action="store_true",
                    help="--phase rescore: only the table's rows, not every learning-curve point")
    ap.add_argument("--resume", action="store_true",
                    help="keep the rows and curves already in <out>.json (same config hash) and "
                         "run only the missing ones: a killed or split run continues")
    args = ap.parse_args()
    glas = Path(args.glas)
    if not glas.is_dir():
        sys.exit(f"GlaS folder {glas} not found (set --glas or SEGLEARN_GLAS_DIR)")
    cfg = load_config(args.config, args.set)
    out = Path(args.out)
    progress = not args.no_progress
    rows = [r for r in args.rows.split(",") if r]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    t_all = time.perf_counter()
    if args.phase == "train":
        phase_train(cfg, glas, Path(args.models or out / "models"),
                    [r for r in rows if r in FULL_ROWS], progress)
        return
    results, curves, args.earlier_runs = previous_results(out, cfg) if args.resume else ([], [], [])
    have = {r["row"] for r in results}
    have_curves = {(r["curve"], r["seed"]) for r in curves}
    if args.phase == "rescore":
        phase_rescore(cfg, glas, out, args.set, progress, args)
        return
    if args.phase == "evaluate":
        results = phase_evaluate(cfg, glas, Path(args.models), out, progress)
    else:
        for row in (r for r in rows if r in FULL_ROWS and r not in have):
            results.append(run_full(cfg, glas, out, row, seeds[0], progress))
            write_json(out, cfg, results, curves, args, t_all)
        if "curves" in rows:
            for seed in seeds:
                for name in args.curves.split(","):
                    if (name, seed) in have_curves:
                        continue
                    start = next((dict(p) for p in curves if p["curve"] == "random"
                                  and p["seed"] == seed and p["round"] == 0), None)
                    pts, preds = run_curve(cfg, glas, out, name, seed, progress,
                                           args.curve_every, start)
                    curves += pts
                    if name in CURVE_ROW and seed == seeds[0]:
                        results.append({**pts[-1], "row": CURVE_ROW[name]})
                        save_predictions(out, CURVE_ROW[name],
                                         {k: v for k, v in preds.items() if k.startswith("testA")})
                    write_json(out, cfg, results, curves, args, t_all)
        if "f" in rows and "f" not in have:
            results.append(run_exported(cfg, out, glas, "e", seeds[0], "f", None, progress))
            write_json(out, cfg, results, curves, args, t_all)
        if "g" in rows and "g" not in have:
            results.append(run_exported(cfg, out, glas, "e", seeds[0], "g",
                                        {"final.quant.weight": "twn", "final.quant.w_bits": 2,
                                         "final.quant.first_last": "iao8"}, progress))
    write_json(out, cfg, results, curves, args, t_all)
    print_table(results)
    plot_curves(curves, out / "curves.png", f"GlaS, {args.config}, seeds {args.seeds}")


def plot_curves(curves: list[dict], path: Path, title: str) -> None:
    """Object F1 on Test A against the fraction of the training set labeled, one line a curve."""
    if not curves:
        return
    from seglearn.report.sheets import learning_curves

    pts: dict[str, list] = {}
    for r in sorted(curves, key=lambda r: (r["curve"], r["fraction"])):
        pts.setdefault(r["curve"], []).append((r["fraction"], r["f1"]))
    learning_curves(pts, path, "object F1 (Test A)", title=title)


def previous_results(out: Path, cfg: Config) -> tuple[list[dict], list[dict], list[dict]]:
    """Rows, curve points and commands (with wall times) of the earlier runs of the same config
    (``--resume``), else none: a resumed run records them under ``earlier_runs`` instead of
    passing their rows off as its own."""
    path = out.with_suffix(".json")
    if not path.is_file():
        return [], [], []
    data = json.loads(path.read_text())
    if data.get("config_hash") != cfg.hash():
        sys.exit(f"{path} was made with another config (hash {data.get('config_hash')}, now "
                 f"{cfg.hash()}); drop --resume or choose another --out")
    runs = data.get("earlier_runs", []) + [{"command": data.get("command"),
                                            "wall_seconds": data.get("wall_seconds")}]
    return data.get("rows", []), data.get("curves", []), runs


def write_json(out: Path, cfg: Config, results: list, curves: list, args, t0: float) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    data = {"command": " ".join(sys.argv), "config": args.config, "config_hash": cfg.hash(),
            "earlier_runs": args.earlier_runs,
            "machine": machine(cfg.train.device), "wall_seconds": time.perf_counter() - t0,
            "instances": "connected components (8-connectivity) of the binary GlaS masks",
            "rows": results, "curves": curves}
    path = out.with_suffix(".json") if args.phase != "evaluate" else out.with_name(
        out.name + "-evaluate.json")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=float))
    os.replace(tmp, path)


def print_table(results: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="GlaS Test A")
    for col in ("row", "fraction", "f1", "obj_dice", "obj_hausdorff", "pixel_dice"):
        t.add_column(col, justify="right")
    for r in results:
        frac = r.get("fraction")
        t.add_row(r["row"], "" if frac is None else f"{frac:.2f}",
                  *[f"{r.get(k, float('nan')):.4f}" for k in ("f1", "obj_dice")],
                  f"{r.get('obj_hausdorff', float('nan')):.1f}", f"{r.get('pixel_dice', np.nan):.4f}")
    Console().print(t)


if __name__ == "__main__":
    main()
