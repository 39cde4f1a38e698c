"""The final segmenter's recipe, one change at a time, judged on held-out *training* images (issue 14 item 4).

    python bench/recipe.py --glas ../shared/data/glas --config configs/glas-cpu.yaml \
        --out bench/results/recipe --seeds 0,1 --set train.minutes=6 [--variants baseline,width24,...]
    python bench/recipe.py --synthetic 24 --out /tmp/recipe ...     # fast (the CI smoke test)
    python bench/recipe.py --synthetic 48 --config configs/default.yaml --set synthetic.kind=vessels ...
                                        # the embedded default on the generator's pool (its kind,
                                        # size and seed from the config, as seglearn init makes it)

Protocol. The source's training images (GlaS: the 85 of ``train``; never Test A) are split once,
by ``--split-seed``, into a validation set (``--val``, default 20%: 17 GlaS images) and the images
the model is fit on (the rest, all labeled). For every variant and seed (``train.seed``) a
workspace of the fit images trains the final segmenter with the config plus the variant's
overrides and the same budget (the config's ``train.steps`` or ``train.minutes``; use steps on a
busy machine, see ``train.clock``), its post-processing tuned on its own training labels as
``train --final`` does, and is scored on the validation images (``evaluate_workspace`` on a
folder: object F1, object Dice, object Hausdorff, pixel Dice). A variant is ``kept`` when its
paired difference to ``baseline`` over seeds has a positive mean larger than its standard
deviation: the rule the issue asks for, decided on training images only. The score differenced is
object F1, or pixel Dice where evaluate scores the labels by pixels only (thin structures:
``--synthetic`` with ``--set synthetic.kind=vessels``).

A variant that changes only the post-processing (``tta``: flip averaging) trains nothing: it
copies the workspace of its *trained twin* (the variant with the same training overrides:
``baseline``), tunes the post-processing again with its own config and is scored, so its paired
difference is the effect of the post-processing alone (``--no-reuse`` trains it separately).

Variants (``--variants``, default all; ``--variant NAME:key=value,key=value`` adds one): the
candidates of issue 14 item 4 that the config can express, each a set of ``--set`` overrides.

Output ``<out>.json``: ``rows`` (variant, seed, overrides, metrics, steps, seconds), ``summary``
(per variant: mean/std over seeds, the paired difference to baseline, ``kept``), ``split`` (the
validation image names), ``command``. Rewritten after every row; ``--resume`` skips rows already
there with the same config. Workspaces and the split's symlinks go under ``<out>/`` (git-ignored).
"""

from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.getcwd()) != _HERE]  # see select.py

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from seglearn import atomic  # noqa: E402
from seglearn.config import INHERITED, Config, ConfigError, get_key, load_config, with_values  # noqa: E402

# name -> overrides. Width/depth, batch and crop, learning rate and its warm-up, loss weights, the
# contour band and head, the decoder's upsampling, stronger (stain, elastic) augmentation,
# test-time flip averaging (tuned, evaluated and exported with it), and the final scheme (a packed
# ternary middle instead of INQ-7).
VARIANTS: dict[str, dict] = {
    "baseline": {},
    "width24": {"model.width": 24},
    "depth5": {"model.depth": 5},
    "batch16": {"data.batch_size": 16},
    "crop192": {"data.crop": 192},
    # the final segmenter's own keys (config.role_train): train.lr would reach it only where the
    # config leaves final.lr unset. The rows of recipe.json / recipe15.json ran these as train.*
    # with final.* unset (the same training); the README's commands define them so to resume.
    "lr1e-3": {"final.lr": 1e-3},
    "lr4e-3": {"final.lr": 4e-3},
    "warmup5": {"final.warmup": 0.05},
    "warmup5_lr4e-3": {"final.warmup": 0.05, "final.lr": 4e-3},
    "contour_weight0.5": {"model.contour_weight": 0.5},
    "contour_weight2": {"model.contour_weight": 2.0},
    "contour_width3": {"data.contour_width": 3},
    "no_contour": {"model.contour_head": False},
    "up_transpose": {"model.up": "transpose"},
    "augment_strong": {"data.augment": "strong"},
    "tta": {"postprocess.tta": True},
    "twn": {"final.quant.weight": "twn", "final.quant.w_bits": 2},
}
METRIC_KEYS = ("f1", "obj_dice", "obj_hausdorff", "pixel_dice")


def training_sources(args, root: Path, cfg: Config) -> list:
    """The source's training images (split "pool": GlaS train, or the synthetic pool made as
    ``seglearn init --synthetic`` makes it: the config's ``synthetic`` kind, size, seed and test
    fraction), by name."""
    if args.glas:
        from seglearn.data.importers import scan_glas

        sources = scan_glas(Path(args.glas))
    else:
        from seglearn.data.synthetic import make_synthetic

        sc = cfg.synthetic
        sources = make_synthetic(int(args.synthetic), root / "data", size=(sc.size, sc.size),
                                 seed=sc.seed, test_fraction=sc.test_fraction, kind=sc.kind)
    return sorted((s for s in sources if s.split == "pool"), key=lambda s: s.name)


def split_sources(sources: list, n_val: int, seed: int) -> tuple[list, list]:
    """(fit, val): ``n_val`` images drawn by ``seed``, the rest to fit on; both sorted by name."""
    if not 1 <= n_val < len(sources):
        raise ValueError(f"--val must be in [1, {len(sources) - 1}] for {len(sources)} training images")
    order = np.random.default_rng(seed).permutation(len(sources))
    val = {int(i) for i in order[:n_val]}
    return ([s for i, s in enumerate(sources) if i not in val],
            [s for i, s in enumerate(sources) if i in val])


def link_folder(sources: list, folder: Path) -> tuple[Path, Path]:
    """``folder/images`` and ``folder/masks`` of symlinks to the sources (stem-paired as
    ``scan_folders`` pairs them): the research-use images are linked, never copied."""
    images, masks = folder / "images", folder / "masks"
    for d in (images, masks):
        d.mkdir(parents=True, exist_ok=True)
        for old in d.iterdir():
            old.unlink()
    for s in sources:
        (images / f"{s.name}{Path(s.image_path).suffix}").symlink_to(Path(s.image_path).resolve())
        (masks / f"{s.name}{Path(s.mask_path).suffix}").symlink_to(Path(s.mask_path).resolve())
    return images, masks


def config_hash(cfg: Config) -> str:
    """``Config.hash``: keys added to the schema later, at their defaults, leave it as it was, so a
    ``--resume`` after such a change keeps its rows. (Until 2026-12-06 this hashed the whole
    ``to_dict`` and a new key dropped every row; the committed JSONs were re-hashed after checking
    each stored hash against that formula.)"""
    return cfg.hash()


# Overrides that act only after training (how the trained model's maps become instances): a
# variant made only of these changes nothing the optimiser sees.
AFTER_TRAINING = ("postprocess.",)


def _after_training(overrides: dict) -> bool:
    return any(k.startswith(AFTER_TRAINING) for k in overrides)


def _training(cfg: Config, overrides: dict) -> dict:
    """What the optimiser sees of ``cfg`` with ``overrides``: the config less post-processing."""
    d = with_values(cfg, overrides, "variant").to_dict()
    d.pop("postprocess", None)
    return d


def trained_twin(name: str, cfg: Config) -> str | None:
    """The variant that trains exactly the model ``name`` would (the same config less
    post-processing, compared as typed: ``train.lr=4e-3`` from ``--variant`` equals ``4e-3`` in
    VARIANTS), when ``name`` differs from it only after training; else None. ``tta`` ->
    ``baseline``: flip averaging is then measured on the very same weights, so its paired
    difference holds no training noise (and costs no second training)."""
    if not _after_training(VARIANTS[name]):
        return None
    want = _training(cfg, VARIANTS[name])
    return next((v for v, o in VARIANTS.items() if v != name
                 and not _after_training(o)
                 and _training(cfg, o) == want), None)


def shadowed(name: str, cfg: Config) -> None:
    """Refuse a variant that sets a ``train`` key the final segmenter does not read: where the
    config sets ``final.lr`` (``final.warmup``), ``train.lr`` changes only the ensemble."""
    for final_key, train_key in INHERITED.items():
        if train_key in VARIANTS[name] and final_key not in VARIANTS[name] \
                and get_key(cfg, final_key) is not None:
            raise ConfigError(f"variant {name} sets {train_key}, but the config's {final_key}="
                              f"{get_key(cfg, final_key)} is what the final segmenter trains with: "
                              f"set {final_key} instead")


def workspace_dir(root: Path, name: str, seed: int) -> Path:
    return root / "workspaces" / f"{name}-seed{seed}"


def run_row(cfg: Config, name: str, seed: int, fit: tuple[Path, Path], val: tuple[Path, Path],
            root: Path, progress: bool, twin_row: dict | None = None) -> dict:
    """Train the variant's final segmenter on the fit images and score it on the validation images.

    ``twin_row``: the finished row of :func:`trained_twin`'s variant for this seed. Its workspace
    is copied and only the post-processing is tuned again (as ``train --final`` tunes it, with the
    variant's config) before scoring: the row's ``trained_by`` names the twin."""
    from seglearn.app.evaluate import evaluate_workspace
    from seglearn.app.init import init_workspace
    from seglearn.app.train import train_workspace
    from seglearn.app.tune import tune_final
    from seglearn.models.ensemble import load_ensemble
    from seglearn.store.workspace import Workspace

    c = with_values(cfg, {**VARIANTS[name], "train.seed": seed}, f"variant {name}")
    path = workspace_dir(root, name, seed)
    cpu, wall = time.process_time(), time.perf_counter()
    if twin_row is None:
        ws = init_workspace(path, c, images=fit[0], masks=fit[1], seed=seed, force=True,
                            progress=progress)
        train_workspace(ws, c, final=True, progress=progress)
    else:
        if path.exists():
            shutil.rmtree(path)
        shutil.copytree(workspace_dir(root, twin_row["variant"], seed), path, symlinks=True)
        ws = Workspace.open(path)  # a workspace stores its own files relative to its root
        if c.postprocess.tune:
            tune_final(ws, c, load_ensemble(ws, "final", c), progress)
    train_cpu, train_wall = time.process_time() - cpu, time.perf_counter() - wall
    ev = evaluate_workspace(ws, c, progress=progress, overlays=False, images=val[0], masks=val[1])
    last = max(r.id for r in ws.rounds() if r.kind == "train-final")
    members = [m.metrics or {} for m in ws.models("final", last)]
    post = (ws.meta("postprocess_tuned") or {}).get(str(last))  # what train --final tuned and stored
    ws.close()
    row = {"variant": name, "seed": seed, "overrides": VARIANTS[name], "config_hash": config_hash(c),
           **{k: ev.metrics.get(k) for k in METRIC_KEYS}, "n_val": ev.n_images,
           "steps": [m.get("steps") for m in members],
           "train_seconds": sum(float(m.get("seconds") or 0.0) for m in members),
           "round_cpu_seconds": train_cpu, "round_wall_seconds": train_wall, "postprocess": post}
    if twin_row is not None:  # the training is the twin's; this row's seconds are the re-tuning's
        row.update(trained_by=twin_row["variant"], steps=twin_row["steps"],
                   train_seconds=twin_row["train_seconds"], retune_cpu_seconds=train_cpu,
                   round_cpu_seconds=twin_row["round_cpu_seconds"],
                   round_wall_seconds=twin_row["round_wall_seconds"])
    return row


def objective(rows: list[dict]) -> str:
    """The score a variant is judged by: object F1 where the rows have it (blob-like objects:
    glands), else pixel Dice (thin structures, which evaluate scores by pixels only: vessels)."""
    return "f1" if any(r.get("f1") is not None for r in rows) else "pixel_dice"


def summarize(rows: list[dict]) -> dict:
    """Per variant: mean/std over seeds and the paired difference to the same seed's baseline;
    ``kept`` judges the difference of :func:`objective`."""
    base = {r["seed"]: r for r in rows if r["variant"] == "baseline"}
    score = objective(rows)
    out = {}
    for name in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == name]
        s: dict = {"seeds": len(mine), "objective": score}
        for k in METRIC_KEYS:
            v = [r[k] for r in mine if r.get(k) is not None]
            if v:
                s[k] = {"mean": float(np.mean(v)), "std": float(np.std(v))}
        if name != "baseline":
            for k in ("f1", "obj_dice", "pixel_dice"):
                d = [r[k] - base[r["seed"]][k] for r in mine
                     if r["seed"] in base and r.get(k) is not None and base[r["seed"]].get(k) is not None]
                if d:
                    s[f"{k}_minus_baseline"] = {"mean": float(np.mean(d)), "std": float(np.std(d)), "n": len(d)}
            d = s.get(f"{score}_minus_baseline")
            s["kept"] = bool(d and d["n"] >= 2 and d["mean"] > 0 and d["mean"] > d["std"])
        out[name] = s
    return out


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--glas", type=Path)
    src.add_argument("--synthetic", type=int)
    ap.add_argument("--config", default="configs/glas-cpu.yaml")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", default="bench/results/recipe", help="<out>.json and the workspaces under <out>/")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--val", type=float, default=0.2, help="validation images: a fraction, or a count >= 1")
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=VALUE,...",
                    help="an extra variant")
    ap.add_argument("--resume", action="store_true", help="keep the rows of <out>.json made with the same config")
    ap.add_argument("--no-reuse", dest="reuse", action="store_false",
                    help="train a post-processing-only variant (tta) itself instead of re-tuning "
                         "its trained twin's model (baseline)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    args.seeds = [int(s) for s in str(args.seeds).split(",") if s.strip()]
    for spec in args.variant:
        name, _, sets = spec.partition(":")
        if not name or not sets:
            ap.error(f"--variant {spec!r}: give NAME:KEY=VALUE[,KEY=VALUE]")
        import yaml  # typed as --set types them: 0.5 a float, true a bool, null None

        VARIANTS[name] = {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in sets.split(","))}
        args.variants += f",{name}"
    args.variants = list(dict.fromkeys(v for v in args.variants.split(",") if v))
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    if "baseline" not in args.variants:
        args.variants.insert(0, "baseline")  # every difference is to it
    return args


def main(argv=None) -> dict:
    args = parse(argv)
    command = "python bench/recipe.py " + " ".join(sys.argv[1:] if argv is None else argv)
    try:
        cfg = load_config(args.config, args.set)
        for name in args.variants:  # every variant's overrides fit the schema before hours of training
            shadowed(name, with_values(cfg, VARIANTS[name], f"variant {name}"))
    except (ConfigError, OSError) as e:
        sys.exit(f"error: {e}")
    twin_of = {v: trained_twin(v, cfg) for v in args.variants} if args.reuse else {}
    # a twin trains before the variants that re-tune its model
    args.variants.sort(key=lambda v: (v != "baseline", v not in twin_of.values()))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sources = training_sources(args, out, cfg)
    n_val = int(args.val) if args.val >= 1 else max(1, round(args.val * len(sources)))
    fit_s, val_s = split_sources(sources, n_val, args.split_seed)
    fit, val = link_folder(fit_s, out / "split" / "fit"), link_folder(val_s, out / "split" / "val")
    path = out.with_suffix(".json")
    rows = []
    if args.resume and path.is_file():
        old = json.loads(path.read_text())
        rows = [r for r in old.get("rows", []) if r["variant"] in VARIANTS and
                r["config_hash"] == config_hash(with_values(cfg, {**VARIANTS[r["variant"]],
                                                                  "train.seed": r["seed"]}, "resume"))]
    done = {(r["variant"], r["seed"]) for r in rows}
    result: dict = {}
    for seed in args.seeds:
        for name in args.variants:
            if (name, seed) not in done:
                twin = twin_of.get(name)
                twin_row = next((r for r in rows if r["variant"] == twin and r["seed"] == seed), None)
                if twin_row is not None and not workspace_dir(out, twin, seed).is_dir():
                    twin_row = None  # its workspace is gone (a resumed file from another machine)
                rows.append(run_row(cfg, name, seed, fit, val, out, not args.no_progress, twin_row))
            result = {"command": command, "config": cfg.to_dict(), "seeds": args.seeds,
                      "split": {"seed": args.split_seed, "fit": len(fit_s), "val": [s.name for s in val_s]},
                      "rows": rows, "summary": summarize(rows)}
            atomic.write_text(path, json.dumps(result, indent=2, default=str))
    print(table(result["summary"]))
    return result


def table(summary: dict) -> str:
    """The summary as a Markdown table (what the README shows): the objective, ObjDice (glands)
    or pixel Dice, and the objective's paired difference to baseline."""
    nan = {"mean": float("nan"), "std": float("nan")}
    score = next(iter(summary.values()), {}).get("objective", "f1")
    name2 = "ObjDice" if score == "f1" else "pixel Dice"
    key2 = "obj_dice" if score == "f1" else "pixel_dice"
    label = "F1" if score == "f1" else "pixel Dice"
    lines = [f"| variant | seeds | {label} (mean ± std) | {name2} | {label} − baseline | kept |",
             "|---|---|---|---|---|---|"]
    for name, s in summary.items():
        m, o, d = s.get(score, nan), s.get(key2, nan), s.get(f"{score}_minus_baseline")
        lines.append(f"| {name} | {s['seeds']} | {m['mean']:.3f} ± {m['std']:.3f} | {o['mean']:.3f} | "
                     + (f"{d['mean']:+.3f} ± {d['std']:.3f}" if d else "—") + f" | {s.get('kept', '—')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
