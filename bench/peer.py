"""seglearn's final segmenter against stock MONAI networks at an equal training budget, on GlaS.

    python bench/peer.py --glas ../shared/data/glas --minutes 15 --seed 0 \
        --models seglearn-inq7,monai-unet,monai-basicunet [--clock cpu] [--out bench/results/accuracy.json]

What every row gets (the same for all): the 85 GlaS training images, all labeled, at the config's
resolution (``configs/glas-cpu.yaml``: data.scale 0.5), the same random crops, batch size and
augmentation (seglearn.app.samples.make_batches, seglearn's batch pipeline; the peer lists the
images as the workspace does, ``seglearn.data.scan_glas``'s numeric order, so the shuffled stream
and the 16 images post-processing is tuned on are the same; the seed-0 peer rows were made when
the peer sorted them by file name, train_1, train_10, ...),
``--minutes`` of training on the same clock (``train.clock``: ``wall``, or ``cpu`` = process CPU
seconds / threads, which keeps the budget fair when other processes share the cores), and the
same post-processing, tuned on the training images each model was trained on (up to 16, as
``seglearn tune`` does), never on Test A. Test A (60 images) is scored once per row with
``seglearn.metrics.glas_metrics`` (object F1, object Dice, object Hausdorff).

Rows:
  seglearn-inq7   ``seglearn init --glas`` + ``seglearn train --final`` (INQ-7, the config's final
                  scheme, post-processing tuned and stored by train) + ``seglearn export`` + the
                  exported .slq run by the integer runtime (``seglearn predict``'s code): route
                  "runtime"; and ``seglearn evaluate`` on the same workspace: route "torch".
  seglearn-twn    the same with a ternary middle (TWN), whose export runs on the packed kernels.
  seglearn-float  the same FCN unquantized (route "torch": the runtime is integer-only).
  monai-unet      ``monai.networks.nets.UNet(2, 3, 1, channels=(32, 64, 128, 256),
                  strides=(2, 2, 2), num_res_units=2)``, a plain AdamW loop (lr 1e-3, weight
                  decay 1e-4, cosine decay over the measured step count) with MONAI's DiceCELoss on
                  the foreground: what a lab would write from MONAI's tutorials. route "torch".
  monai-basicunet ``monai.networks.nets.BasicUNet(2, 3, 1)`` (features 32..256), the same loop.

Writes (merging into an existing file: a rerun replaces its own rows) ``--out`` with
``{"rows": [{"model", "minutes", "route", "seed", "testA": {"f1", "obj_dice", "obj_hausdorff",
...}, "steps", "train_seconds", "clock", "postprocess", "command"}], "machine": ...}``. The
predicted Test A masks (uint16 PNG; derived from research-use data) go to ``--work``/<row>/, which
is git-ignored.
"""

from __future__ import annotations

import os
import sys

# bench/ holds select.py: off the path before anything imports the standard library's select
# (subprocess does), or that module would be this folder's
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SEGLEARN_ROWS = {
    "seglearn-inq7": {},
    "seglearn-twn": {"final.quant.weight": "twn", "final.quant.w_bits": 2},
    "seglearn-float": {"final.quant.weight": None},
}
MONAI_ROWS = ("monai-unet", "monai-basicunet")


def _cli(*args: str) -> None:
    cmd = [sys.executable, "-m", "seglearn.cli.app", *args]
    print("$", shlex.join(cmd[2:]), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def _sets(values: dict) -> list[str]:
    out = []
    for k, v in values.items():
        out += ["--set", f"{k}={'null' if v is None else v}"]
    return out


def _test_items(glas: Path) -> list[tuple[str, Path, Path]]:
    test = glas / "testA"
    items = []
    for img in sorted(test.glob("testA_*.png")):
        if img.stem.endswith("_anno"):
            continue
        mask = test / f"{img.stem}_anno.png"
        if mask.is_file():
            items.append((img.stem, img, mask))
    if not items:
        raise SystemExit(f"no Test A images with masks in {test}")
    return items


def _score(preds: dict, items) -> dict:
    from seglearn.app.evaluate import score_predictions
    from seglearn.data.io import read_mask

    # read_mask: a binary mask becomes its connected components (8-connectivity), as in evaluate
    gts = [read_mask(m).astype(np.int32) for _, _, m in items]
    return score_predictions([preds[n] for n, _, _ in items], gts)


def _save(work: Path, preds: dict) -> None:
    from seglearn.data.io import write_mask

    work.mkdir(parents=True, exist_ok=True)
    for name, lab in preds.items():
        write_mask(work / f"{name}.png", lab.astype(np.uint16))


def run_seglearn(row: str, args, items, command: str) -> list[dict]:
    """init + train --final (tunes) + evaluate (torch) + export + predict (runtime) for one row."""
    from seglearn.app.predict import predict_files
    from seglearn.config import load_config
    from seglearn.data.io import read_mask

    work = Path(args.work) / f"{row}-{args.minutes:g}min-seed{args.seed}"
    ws = work / "workspace"
    sets = _sets({**SEGLEARN_ROWS[row], "active.initial_labeled": 1.0, "train.seed": args.seed,
                  "train.minutes": args.minutes, "train.clock": args.clock,
                  "train.threads": args.threads})
    t0 = time.perf_counter()
    if args.reuse and (ws / "seglearn.db").is_file():
        print(f"--reuse: keeping the trained workspace {ws}", flush=True)
    else:
        _cli("init", str(ws), "--glas", str(args.glas), "--config", args.config, "--force",
             "--initial-labeled", "1.0", *sets)
        t0 = time.perf_counter()
        _cli("train", str(ws), "--final", "--config", args.config, *sets, "--no-progress")
    train_seconds = time.perf_counter() - t0
    steps, tuned = _final_info(ws)
    rows = []
    # torch route: seglearn evaluate (the stored tuned post-processing); its metrics.json
    _cli("evaluate", str(ws), "--config", args.config, *sets, "--no-progress")
    metrics = _last_eval(ws)
    # the config the row trained with (the file as of the run, plus the row's overrides): rows of
    # one model made before and after a change of configs/glas-cpu.yaml are told apart by it
    config_hash = load_config(ROOT / args.config, sets[1::2]).hash()
    base = {"model": row, "minutes": args.minutes, "seed": args.seed, "steps": steps,
            "train_seconds": round(train_seconds, 1), "clock": args.clock,
            "postprocess": tuned, "config_hash": config_hash, "command": command}
    rows.append({**base, "route": "torch", "testA": metrics})
    if SEGLEARN_ROWS[row].get("final.quant.weight", "inq") is not None:
        slq = work / "model.slq"
        _cli("export", str(ws), str(slq), "--config", args.config, *sets, "--overwrite")
        imgs = work / "testA-images"  # predict takes a folder: the images alone, not the masks
        imgs.mkdir(parents=True, exist_ok=True)
        for name, img, _ in items:
            link = imgs / img.name
            if not link.exists():
                link.symlink_to(img.resolve())
        out = work / "predict"
        n = predict_files(slq, [imgs], out, progress=False, overwrite=True)
        assert n == len(items), (n, len(items))
        preds = {name: read_mask(out / f"{name}.png").astype(np.int32) for name, _, _ in items}
        rows.append({**base, "route": "runtime", "testA": _score(preds, items)})
    return rows


def _final_info(ws: Path) -> tuple[int, dict | None]:
    from seglearn.store import Workspace

    with Workspace.open(ws) as w:
        m = [x for x in w.models(role="final")][-1]
        tuned = (w.meta("postprocess_tuned") or {}).get(str(m.round_id))
        return int(m.metrics.get("steps", 0)), (tuned or {}).get("params")


def _last_eval(ws: Path) -> dict:
    reports = sorted((ws / "reports").glob("evaluate_round_*/metrics.json"))
    m = json.loads(reports[-1].read_text())["metrics"]
    return {k: m[k] for k in ("f1", "obj_dice", "obj_hausdorff", "precision", "recall",
                              "pixel_dice") if k in m}


class _Peer:
    """A MONAI network with the two things seglearn's tiled inference asks of a model: the input
    multiple (2^levels) and ``forward_features`` (logits, a dummy descriptor)."""

    @staticmethod
    def build(kind: str):
        import torch
        from monai.networks.nets import BasicUNet, UNet

        if kind == "monai-unet":
            net = UNet(spatial_dims=2, in_channels=3, out_channels=1,
                       channels=(32, 64, 128, 256), strides=(2, 2, 2), num_res_units=2)
            multiple = 8
        else:
            net = BasicUNet(spatial_dims=2, in_channels=3, out_channels=1)
            multiple = 16

        class Wrapped(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.net = net
                self.multiple = multiple

            def forward(self, x):
                return self.net(x)

            def forward_features(self, x):
                y = self.net(x)
                return y, y.new_zeros(y.shape[0], 1, 1, 1)

        return Wrapped()


def run_monai(row: str, args, cfg, items, command: str) -> list[dict]:
    """The plain MONAI loop on seglearn's batch pipeline, then tuned post-processing and Test A."""
    import torch
    from monai.losses import DiceCELoss

    from seglearn.app.evaluate import postprocess_params
    from seglearn.app.samples import make_batches
    from seglearn.app.tune import MAX_TUNE_IMAGES, OBJECTIVES, TUNED_FIELDS, tuning_grids
    from seglearn.metrics.shape import metrics_kind
    from seglearn.config import with_values
    from seglearn.data.importers import scan_glas
    from seglearn.data.io import read_image, read_mask
    from seglearn.models.infer import predict_image
    from seglearn.postprocess import instances_from_probs, tune_postprocess
    from seglearn.train.engine import _budget_steps, budget_clock

    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    c = with_values(cfg, {"model.contour_head": False, "train.seed": args.seed})
    # the workspace's own listing (numeric order: train_1, train_2, ...), so the peer's shuffled
    # stream and tuning images are seglearn's
    train = [s for s in scan_glas(args.glas) if s.split == "pool"]
    samples = [{"name": s.name, "image": read_image(s.image_path),
                "label": read_mask(s.mask_path).astype(np.int32)} for s in train]
    batches = make_batches(samples, c, args.seed)
    model = _Peer.build(row)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    loss_fn = DiceCELoss(sigmoid=True)
    clock = budget_clock(args.clock)
    budget = 60.0 * args.minutes
    total, step, b0, first = 100, 0, clock(), None
    t0 = time.perf_counter()
    model.train()
    while step < total:
        for batch in batches:
            if step >= total:
                break
            for g in opt.param_groups:
                g["lr"] = 1e-3 * 0.5 * (1 + math.cos(math.pi * step / total))
            x = batch["image"].contiguous(memory_format=torch.channels_last)
            loss = loss_fn(model(x), batch["target"][:, :1])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            now = clock()
            first = now if first is None else first
            new = _budget_steps(budget, now - b0, now - first, step, 0, total)
            if new is not None:
                total = new
            if step % 50 == 0:
                print(f"{row} step {step}/{total} loss {float(loss):.3f}", flush=True)
    train_seconds = time.perf_counter() - t0
    model.eval()
    scale = c.data.scale

    def probs(image):  # with the config's test-time flips, as seglearn's own model predicts
        return predict_image(model, image, scale=scale, flips=c.postprocess.tta)[0][0]

    # the post-processing tuned as seglearn tunes its own: on (up to 16 of) the training images
    tune = samples[:MAX_TUNE_IMAGES]
    base = postprocess_params(c.postprocess, False)
    gts = [s["label"] for s in tune]
    # seglearn's own grids and objective (app.tune._tune) for a model without a contour map
    kind, _ = metrics_kind(c.evaluate.metrics, gts)
    params, tune_f1, _ = tune_postprocess([probs(s["image"]) for s in tune], None, gts,
                                          grid=tuning_grids(base.min_area, False, kind),
                                          base=base, objective=OBJECTIVES[kind][0])
    preds = {name: instances_from_probs(probs(read_image(img)), None, params)
             for name, img, _ in items}
    _save(Path(args.work) / f"{row}-{args.minutes:g}min-seed{args.seed}" / "predict", preds)
    return [{"model": row, "minutes": args.minutes, "route": "torch", "seed": args.seed,
             "steps": step, "train_seconds": round(train_seconds, 1), "clock": args.clock,
             "postprocess": {**{k: getattr(params, k) for k in TUNED_FIELDS},
                             "tta": bool(c.postprocess.tta)},
             "tune_f1": tune_f1, "testA": _score(preds, items), "command": command}]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--glas", type=Path, default=ROOT.parent / "shared" / "data" / "glas")
    ap.add_argument("--config", default="configs/glas-cpu.yaml")
    ap.add_argument("--models", default="seglearn-inq7,monai-unet,monai-basicunet")
    ap.add_argument("--minutes", type=float, default=15.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "accuracy.json")
    ap.add_argument("--reuse", action="store_true",
                    help="keep a row's trained workspace from an earlier run (evaluate, export and "
                         "predict again; its train_seconds is then 0)")
    ap.add_argument("--work", type=Path, default=ROOT / "bench" / "results" / "accuracy")
    args = ap.parse_args(argv)
    if not (args.glas / "train").is_dir():
        raise SystemExit(f"GlaS not found at {args.glas} (needs train/ and testA/)")
    from seglearn.config import load_config

    cfg = load_config(ROOT / args.config)
    items = _test_items(args.glas)
    out = json.loads(args.out.read_text()) if args.out.is_file() else {"rows": []}
    for row in [r.strip() for r in args.models.split(",") if r.strip()]:
        command = shlex.join(["python", "bench/peer.py", "--models", row, "--minutes",
                              f"{args.minutes:g}", "--seed", str(args.seed), "--clock",
                              args.clock, "--threads", str(args.threads), "--config",
                              args.config])
        if row in SEGLEARN_ROWS:
            rows = run_seglearn(row, args, items, command)
        elif row in MONAI_ROWS:
            rows = run_monai(row, args, cfg, items, command)
        else:
            raise SystemExit(f"unknown model row {row!r}; known: "
                             f"{sorted(SEGLEARN_ROWS) + list(MONAI_ROWS)}")
        keys = {(r["model"], r["minutes"], r["route"], r["seed"]) for r in rows}
        out["rows"] = [r for r in out["rows"]
                       if (r["model"], r["minutes"], r["route"], r["seed"]) not in keys] + rows
        out["machine"] = {"cpu": platform.processor() or platform.machine(),
                          "cores": os.cpu_count(), "python": platform.python_version()}
        out["test"] = "GlaS Test A (60 images), scored once per row; nothing tuned on it"
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2) + "\n")
        for r in rows:
            t = r["testA"]
            print(f"{r['model']:16s} {r['route']:8s} {r['minutes']:g} min  F1 {t['f1']:.3f}  "
                  f"ObjDice {t['obj_dice']:.3f}  ObjHaus {t['obj_hausdorff']:.1f}", flush=True)


if __name__ == "__main__":
    main()
