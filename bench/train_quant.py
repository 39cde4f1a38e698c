"""Training-step time of each quantization scheme relative to the float FCN, in the same run.

    python bench/train_quant.py [--quick] [--json OUT] [--device cpu|cuda] [--only SUBSTRING ...]

Same FCN, batch and crop for every scheme; forward + backward + optimizer step + the scheme's
callbacks, median of the timed steps after warm-up. Target: no scheme slower than 1.5x float.
Known misses: the BN-folded schemes (``fold_bn``, the IAO default) run conv -> divide by the BN scale
-> batch norm in training (Krishnamoorthi 2018's QAT graph), two extra passes over every
activation map: 1.4-1.8x float on the CPU in our runs.
Peers: the float model itself (torch's Conv2d); every scheme is fake quantization on top of it, so
the ratio is the cost of the quantizers (weight statistics per step, activation rounding).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings

import torch
from rich.console import Console
from rich.table import Table

from seglearn.models import FCN
from seglearn.quant.convert import quantize_model, scheme_callbacks

SCHEMES = {
    "float": None,
    "binarynet (w1)": {"weight": "binarynet"},
    "twn w2 + dorefa a4": {"weight": "twn", "act": "dorefa", "a_bits": 4},
    "dorefa w1 a2": {"weight": "dorefa", "w_bits": 1, "act": "dorefa", "a_bits": 2},
    "dorefa w2 a4 g8": {"weight": "dorefa", "w_bits": 2, "act": "dorefa", "a_bits": 4, "g_bits": 8},
    "inq w5": {"weight": "inq", "w_bits": 5},
    "inq w7": {"weight": "inq", "w_bits": 7},
    "clipq w3 p0.2": {"weight": "clipq", "w_bits": 3},
    "hwgq w1 a2": {"weight": "hwgq", "act": "hwgq", "a_bits": 2},
    "iao w8 a8 (folded)": {"weight": "iao", "act": "iao", "w_bits": 8, "a_bits": 8},
    "twn w2 folded": {"weight": "twn", "act": "dorefa", "a_bits": 4, "fold_bn": True},
    "elq w2 (+ loss-error term)": {"weight": "elq", "w_bits": 2},
    "featq floor a8": {"act": "featq", "a_bits": 8},
    "featq power a8": {"act": "featq", "a_bits": 8, "act_args": {"mode": "power"}},
    "syq w2 pixel + a8": {"weight": "syq", "act": "syq", "w_bits": 2},
    "tsq w2 a2": {"weight": "tsq", "act": "tsq", "w_bits": 2, "a_bits": 2},
}


def time_scheme(scheme, args, device) -> float:
    torch.manual_seed(0)
    model = FCN(in_channels=3, width=args.width, depth=args.depth)
    if scheme is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = quantize_model(model, scheme)
    model.to(device).train()
    x = torch.rand(args.batch, 3, args.crop, args.crop, device=device)
    y = (torch.rand(args.batch, 1, args.crop, args.crop, device=device) > 0.5).float()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    total = args.warmup + args.steps
    cbs = scheme_callbacks(model, scheme) if scheme is not None else []
    for cb in cbs:
        cb.on_train_start(model, total)
    times = []
    for step in range(total):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for cb in cbs:
            cb.before_step(model, step, total)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        for cb in cbs:
            cb.after_step(model, step, total)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= args.warmup:
            times.append(time.perf_counter() - t0)
    for cb in cbs:
        cb.on_train_end(model)
    return statistics.median(times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small model and few steps (< ~60 s)")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--only", nargs="+", metavar="SUBSTRING",
                   help="time only the schemes whose name contains one of these (float always runs)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (--quick uses 1: on a shared 2-core machine thread "
                        "contention, not the quantizers, dominates otherwise)")
    args = p.parse_args(argv)
    if args.quick:
        args.width, args.depth, args.batch, args.crop, args.steps, args.warmup = 8, 3, 4, 64, 6, 2
        args.threads = args.threads or 1
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = {}
    for name, scheme in SCHEMES.items():
        if name == "float" or not args.only or any(o in name for o in args.only):
            rows[name] = time_scheme(scheme, args, device)
    base = rows["float"]
    table = Table(title=f"training step, FCN w{args.width} d{args.depth}, batch {args.batch}, "
                        f"crop {args.crop}, {device.type} ({torch.get_num_threads()} threads)")
    for col in ("scheme", "ms/step", "x float", "<= 1.5x"):
        table.add_column(col, justify="left" if col == "scheme" else "right")
    results = []
    for name, t in rows.items():
        ratio = t / base
        table.add_row(name, f"{1e3 * t:.1f}", f"{ratio:.2f}", "yes" if ratio <= 1.5 else "NO")
        results.append({"scheme": name, "ms_per_step": 1e3 * t, "ratio_to_float": ratio})
    Console().print(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": vars(args), "device": str(device), "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
