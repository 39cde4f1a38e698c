"""INQ's schedule on GlaS, validated on held-out *training* images (Test A is never read).

    python bench/inq_schedule.py --glas ../shared/data/glas --seeds 0,1 \
        --json bench/results/inq_schedule.json

Three final segmenters, each trained with ``configs/glas-cpu.yaml`` (half resolution, 300 steps,
contour head) on the same 64 of the 85 GlaS training images and scored on the other 21 with the
GlaS object metrics and the config's (untuned) post-processing:

  float         no quantization (the reference)
  inq7-init     INQ-7 freezing from step 0 (``float_fraction 0``): the first 50% of every layer is
                fixed at its random initialisation, the defect of the old schedule
  inq7          INQ-7 as Zhou et al. run it, inside the budget: float phase (``float_fraction 0.5``),
                then 50/75/87.5% at equal intervals from the trained weights, 100% after the last step

The held-out split is fixed (seeded permutation of the 85 names); ``--seeds`` sets training seeds.
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

VARIANTS = {
    "float": None,
    "inq7-init": {"weight": "inq", "w_bits": 7, "act": None, "first_last": "same",
                  "weight_args": {"float_fraction": 0.0}},
    "inq7": {"weight": "inq", "w_bits": 7, "act": None, "first_last": "same",
             "weight_args": {"float_fraction": 0.5}},
}


def split_train(glas: Path, n_val: int, seed: int = 1234):
    from seglearn.data import read_image, read_mask
    from seglearn.data.importers import scan_glas

    # training images are split "pool" (their masks the simulation's oracle); Test A is "test"
    items = [s for s in scan_glas(glas) if s.split == "pool" and s.mask_path is not None]
    if not items:
        raise SystemExit(f"no GlaS training images under {glas}")
    order = np.random.default_rng(seed).permutation(len(items))
    samples = []
    for i in order:
        img = read_image(items[i].image_path)
        samples.append({"name": items[i].name, "image": img,
                        "label": read_mask(items[i].mask_path, shape=img.shape[:2])})
    return samples[n_val:], samples[:n_val]


def score(model, val, cfg) -> dict:
    from seglearn.app.evaluate import instances_from_output, postprocess_params, score_predictions
    from seglearn.models.infer import predict_image

    params = postprocess_params(cfg.postprocess, cfg.model.contour_head)
    model.eval()
    preds = [instances_from_output(predict_image(model, s["image"], scale=cfg.data.scale)[0], params)
             for s in val]
    return score_predictions(preds, [s["label"] for s in val])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--glas", default="../shared/data/glas")
    ap.add_argument("--config", default="configs/glas-cpu.yaml")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--val", type=int, default=21, help="held-out training images")
    ap.add_argument("--set", action="append", default=[], help="config overrides a.b=c")
    ap.add_argument("--json", default="bench/results/inq_schedule.json")
    args = ap.parse_args(argv)

    from seglearn.app.train import train_member
    from seglearn.config import apply_overrides, load_config

    cfg = apply_overrides(load_config(args.config), args.set)
    train, val = split_train(Path(args.glas), args.val)
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for name in args.variants.split(","):
            t0 = time.perf_counter()
            model, res = train_member(train, cfg, VARIANTS[name], seed, cfg.train.steps,
                                      checkpoint=None, progress=False, description=name)
            row = {"variant": name, "seed": seed, "steps": cfg.train.steps,
                   "train_seconds": round(res.seconds, 1), **score(model, val, cfg),
                   "seconds": round(time.perf_counter() - t0, 1)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    out = {"command": " ".join(["python", "bench/inq_schedule.py"] + (argv or sys.argv[1:])),
           "config": args.config, "overrides": args.set, "n_train": len(train),
           "n_val": len(val), "val_names": [s["name"] for s in val],
           "machine": platform.processor() or platform.machine(), "rows": rows}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
