"""Benchmark of the integer-only runtime kernels against torch float32 conv2d, both on 2 threads.

    python bench/runtime.py --quick --json OUT.json

Layer: 3x3 conv, 64 -> 64 channels, 128x128 pixels, padding 1 (one image, as the runtime runs).
Measured (fast numba kernels through their public wrappers, after warm-up):
  - binary XNOR-popcount conv on packed +-1 codes      -> binary_conv_speedup_vs_torch_fp32 (target >= 10)
  - int8 conv (uint8 codes x int8 weights, int32 acc)   -> int8_conv_speedup_vs_torch_fp32
  - bit-plane conv, 2-bit codes x 2-bit weights          -> bitplane_2x2_conv_speedup_vs_torch_fp32
Speedup = torch time / kernel time, each the minimum over repetitions (the least noisy statistic on
a shared machine); medians are written too. The packed binary kernel's assembly is checked for
``vpopcntq`` (AVX-512 VPOPCNTDQ) in a subprocess with an empty numba cache, because numba cannot
show the assembly of cached code.

Threading: torch.set_num_threads(2) and numba.set_num_threads(2). numba's threading layer defaults
to ``workqueue`` here (``--threading-layer``): on an oversubscribed machine the OpenMP layer's
sleep/wake-up latency adds ~15 ms per parallel call, which would measure the scheduler, not the
kernel. The layer used is printed and written.

Model-level keys (``model_metrics``; FCN width 32 depth 4 on a 512x512 synthetic gland image):
  - model_speedup_vs_torch_fp32           BinaryNet-middle .slq vs the float FCN in torch eager  (>= 3)
  - int8_model_time_ratio_vs_onnxruntime  IAO .slq time / ONNX Runtime on its QDQ export         (<= 1)
  - model_size_ratio_vs_fp32              fp32 state-dict bytes / binary .slq bytes               (>= 20)
  - mask_agreement                        runtime vs torch fake-quant foreground, min over models
"""

from __future__ import annotations

import os
import sys

# bench/ holds select.py, which would shadow the standard-library ``select`` module (used by
# subprocess) when this file runs as a script: drop the script's own folder from the import path.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np

H = W = 128
CIN = COUT = 64
K = 3

ASM_SCRIPT = """
import numpy as np
from seglearn.runtime import bitpack, ops_fast_binary as ofb
x = bitpack.pack_signs(np.ones((5, 5, 64), np.int8))
w = bitpack.pack_signs(np.ones((64, 3, 3, 64), np.int8))
ofb.bconv2d(x, w, 64, 1, 1)
asm = "".join(a for f in (ofb._bconv, ofb._bconv_pixel) for a in f.inspect_asm().values())
print("VPOPCNTQ" if "vpopcntq" in asm else ("POPCNT" if "popcnt" in asm else "NONE"))
"""


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="few repetitions (about a minute in all)")
    p.add_argument("--json", metavar="OUT", help="write the results as JSON")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--train-steps", type=int, default=None,
                   help="Adam steps per model before export (default 50 with --quick, 100 otherwise)")
    p.add_argument("--threading-layer", default=os.environ.get("NUMBA_THREADING_LAYER", "workqueue"),
                   choices=["workqueue", "omp", "tbb", "default"])
    return p.parse_args(argv)


def time_fn(fn, reps: int, warmup: int = 2) -> dict:
    """Wall time of ``fn()`` in milliseconds: min and median over ``reps`` calls after ``warmup``."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    return {"min_ms": float(np.min(ts)), "median_ms": float(np.median(ts))}


def torch_fp32(reps: int) -> dict:
    import torch

    x = torch.randn(1, CIN, H, W)
    w = torch.randn(COUT, CIN, K, K)
    with torch.inference_mode():
        return time_fn(lambda: torch.nn.functional.conv2d(x, w, padding=1), reps)


def binary_conv(rng, reps: int) -> dict:
    from seglearn.runtime import bitpack, ops_fast

    xp = bitpack.pack_signs(np.where(rng.random((H, W, CIN)) < 0.5, -1, 1))
    wp = bitpack.pack_signs(np.where(rng.random((COUT, K, K, CIN)) < 0.5, -1, 1))
    return time_fn(lambda: ops_fast.bconv2d(xp, wp, CIN, 1, 1), reps)


def int8_conv(rng, reps: int) -> dict:
    from seglearn.runtime import ops_fast

    x = rng.integers(0, 256, (H, W, CIN), dtype=np.uint8)
    w = rng.integers(-127, 128, (COUT, K, K, CIN)).astype(np.int8)
    b = rng.integers(-1000, 1000, COUT).astype(np.int32)
    return time_fn(lambda: ops_fast.conv2d_int8(x, 128, w, b, 1, 1), reps)


def bitplane_conv(rng, reps: int) -> dict:
    from seglearn.runtime import bitpack, ops_fast

    xpl = bitpack.bitplanes(rng.integers(0, 4, (H, W, CIN)), 2)
    wpl = bitpack.bitplanes(rng.integers(0, 4, (COUT, K, K, CIN)), 2)
    return time_fn(lambda: ops_fast.bitplane_conv2d_offset(xpl, wpl, 1, 1), reps)


def vpopcntq_check() -> str:
    """'VPOPCNTQ', 'POPCNT' or 'NONE': which popcount the binary conv compiles to on this CPU."""
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        r = subprocess.run([sys.executable, "-c", ASM_SCRIPT], capture_output=True, text=True, env=env, timeout=300)
    return r.stdout.strip() if r.returncode == 0 else f"ERROR: {r.stderr.strip()[-200:]}"


def cpu_has_vpopcntdq() -> bool:
    from llvmlite import binding

    return "+avx512vpopcntdq" in binding.get_host_cpu_features().flatten()


MODEL_WIDTH, MODEL_DEPTH, MODEL_SIZE = 32, 4, 512
BINARY_SCHEME = {"weight": "binarynet", "act": "binarynet", "first_last": "iao8"}
IAO_SCHEME = {"weight": "iao", "act": "iao"}


def train_on_glands(model, steps: int, seed: int = 0):
    """A brief Adam/BCE fit on 128x128 synthetic glands (``seglearn.data.synthetic.synth_image``),
    with the scheme's callbacks (BinaryNet weight clipping): non-trivial masks, BN statistics and
    IAO ranges. Timing does not depend on it; mask agreement means more with real masks."""
    import torch

    from seglearn.data.synthetic import synth_image
    from seglearn.quant.convert import scheme_callbacks

    rng = np.random.default_rng(seed)
    pairs = [synth_image(rng, (128, 128)) for _ in range(8)]
    x = torch.from_numpy(np.stack([p[0] for p in pairs]).transpose(0, 3, 1, 2).copy()).float() / 255
    y = torch.from_numpy(np.stack([p[1] > 0 for p in pairs])).float()[:, None]
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    cbs = scheme_callbacks(model)
    model.train()
    for step in range(steps):
        idx = torch.from_numpy(rng.choice(len(pairs), 4, replace=False))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        for cb in cbs:
            cb.after_step(model, step, steps)
    return model.eval()


def model_metrics(reps: int, threads: int, steps: int, workdir: str) -> dict:
    """Model-level keys, measured in this run on one 512x512 synthetic gland image per timing.

    Networks: FCN width 32, depth 4. ``binary``: BinaryNet middle layers, IAO 8-bit first conv and
    head (``BINARY_SCHEME``); ``int8``: IAO everywhere. Both briefly trained (``train_on_glands``),
    exported to .slq (and the int8 one to QDQ ONNX). Timed (min over reps after warm-up, 2 threads
    on every side): ``SlqModel.accumulators`` -- the network on the whole image, input preparation
    included, post-processing (thresholds, watershed) not -- vs the float FCN in torch eager fp32
    (``torch.inference_mode``) and vs ONNX Runtime (``intra_op_num_threads``, sequential) on the QDQ file.
    """
    import io

    import onnxruntime as ort
    import torch

    from seglearn.data.synthetic import synth_image
    from seglearn.export import export_model
    from seglearn.export.onnx_qdq import export_onnx
    from seglearn.models.fcn import FCN
    from seglearn.quant.convert import quantize_model
    from seglearn.runtime import load_model

    rng = np.random.default_rng(1)
    images = [synth_image(rng, (MODEL_SIZE, MODEL_SIZE))[0] for _ in range(2)]
    torch.manual_seed(0)
    fp32 = FCN(3, width=MODEL_WIDTH, depth=MODEL_DEPTH).eval()
    t0 = time.perf_counter()
    nets = {"binary": train_on_glands(quantize_model(fp32, BINARY_SCHEME), steps),
            "int8": train_on_glands(quantize_model(fp32, IAO_SCHEME), steps)}
    train_s = time.perf_counter() - t0
    slq = {}
    for name, net in nets.items():
        export_model(net, os.path.join(workdir, f"{name}.slq"))
        slq[name] = load_model(os.path.join(workdir, f"{name}.slq"))
    onnx_path = os.path.join(workdir, "int8.onnx")
    export_onnx(nets["int8"], onnx_path)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])

    img = images[0]
    x = torch.from_numpy(img.transpose(2, 0, 1).copy()).float()[None] / 255
    with torch.inference_mode():
        t_fp32 = time_fn(lambda: fp32(x), reps, warmup=1)
    t_bin = time_fn(lambda: slq["binary"].accumulators(img), reps, warmup=1)
    t_int8 = time_fn(lambda: slq["int8"].accumulators(img), reps, warmup=1)
    t_ort = time_fn(lambda: sess.run(None, {"image": x.numpy()}), reps, warmup=1)

    agree, fg = {}, {}
    for name, net in nets.items():
        vals = []
        for im in images:
            xi = torch.from_numpy(im.transpose(2, 0, 1).copy()).float()[None] / 255
            with torch.no_grad():
                want = net(xi)[0, 0].numpy() > 0
            vals.append(float(np.mean(slq[name].foreground(im) == want)))
            fg.setdefault(name, []).append(float(want.mean()))
        agree[name] = min(vals)
    buf = io.BytesIO()
    torch.save(fp32.state_dict(), buf)
    fp32_bytes = buf.getbuffer().nbytes
    slq_bytes = os.path.getsize(os.path.join(workdir, "binary.slq"))
    return {
        "model": f"FCN width {MODEL_WIDTH} depth {MODEL_DEPTH}, {MODEL_SIZE}x{MODEL_SIZE} image",
        "model_train_steps": steps, "model_train_s": train_s,
        "model_timing_scope": "SlqModel.accumulators (network, no post-processing) vs torch eager fp32 "
                              "forward vs onnxruntime session.run",
        "torch_fp32_model_ms": t_fp32, "binary_model_ms": t_bin, "int8_model_ms": t_int8,
        "onnxruntime_int8_model_ms": t_ort,
        "model_speedup_vs_torch_fp32": t_fp32["min_ms"] / t_bin["min_ms"],
        "int8_model_speedup_vs_torch_fp32": t_fp32["min_ms"] / t_int8["min_ms"],
        "int8_model_time_ratio_vs_onnxruntime": t_int8["min_ms"] / t_ort["min_ms"],
        "fp32_state_dict_bytes": fp32_bytes, "binary_slq_bytes": slq_bytes,
        "model_size_ratio_vs_fp32": fp32_bytes / slq_bytes,
        "mask_agreement": min(agree.values()),
        "mask_agreement_binary": agree["binary"], "mask_agreement_int8": agree["int8"],
        "torch_foreground_fraction": {k: float(np.mean(v)) for k, v in fg.items()},
    }


MODEL_TARGETS = (("model_speedup_vs_torch_fp32", ">=", 3.0), ("int8_model_time_ratio_vs_onnxruntime", "<=", 1.0),
                 ("model_size_ratio_vs_fp32", ">=", 20.0), ("mask_agreement", ">=", 0.99))


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.train_steps is None:
        args.train_steps = 50 if args.quick else 100
    if args.threading_layer != "default":
        os.environ["NUMBA_THREADING_LAYER"] = args.threading_layer  # before numba's first parallel call
    import numba
    import torch
    from rich.console import Console
    from rich.table import Table

    torch.set_num_threads(args.threads)
    numba.set_num_threads(args.threads)
    reps = 10 if args.quick else 50
    rng = np.random.default_rng(0)

    t_torch = torch_fp32(reps)
    t_bin = binary_conv(rng, reps)
    t_int8 = int8_conv(rng, max(3, reps // 3))
    t_bp = bitplane_conv(rng, reps)
    popcnt = vpopcntq_check()

    def speedup(t):
        return t_torch["min_ms"] / t["min_ms"]

    res = {
        "layer": f"conv {K}x{K} {CIN}->{COUT} {H}x{W} pad 1",
        "threads": args.threads,
        "numba_threading_layer": numba.threading_layer(),
        "quick": args.quick,
        "torch_fp32_ms": t_torch,
        "binary_conv_ms": t_bin,
        "int8_conv_ms": t_int8,
        "bitplane_2x2_conv_ms": t_bp,
        "binary_conv_speedup_vs_torch_fp32": speedup(t_bin),
        "int8_conv_speedup_vs_torch_fp32": speedup(t_int8),
        "bitplane_2x2_conv_speedup_vs_torch_fp32": speedup(t_bp),
        "binary_conv_popcount_instruction": popcnt,
        "binary_conv_uses_vpopcntq": popcnt == "VPOPCNTQ",
        "cpu_has_avx512_vpopcntdq": cpu_has_vpopcntdq(),
    }
    with tempfile.TemporaryDirectory() as workdir:
        res.update(model_metrics(3 if args.quick else 10, args.threads, args.train_steps, workdir))

    table = Table(title=f"runtime kernels vs torch fp32 conv2d ({res['layer']}, {args.threads} threads)")
    for col in ("kernel", "min ms", "median ms", "speedup vs torch fp32"):
        table.add_column(col, justify="right" if col != "kernel" else "left")
    for name, t in (("torch fp32 conv2d", t_torch), ("binary (xnor-popcount)", t_bin),
                    ("int8 (uint8 x int8)", t_int8), ("bit-plane 2-bit x 2-bit", t_bp)):
        table.add_row(name, f"{t['min_ms']:.2f}", f"{t['median_ms']:.2f}", f"{speedup(t):.1f}x")
    console = Console()
    console.print(table)
    console.print(f"binary conv popcount: {popcnt} (CPU AVX-512 VPOPCNTDQ: {res['cpu_has_avx512_vpopcntdq']}); "
                  f"numba threading layer: {res['numba_threading_layer']}")
    target = "met" if res["binary_conv_speedup_vs_torch_fp32"] >= 10 else "NOT met"
    console.print(f"binary conv speedup target >= 10: {target}")
    mt = Table(title=f"model level: {res['model']}, {args.threads} threads ({res['model_timing_scope']})")
    for col in ("key", "value", "target", "met"):
        mt.add_column(col, justify="left" if col == "key" else "right")
    for key, op, target in MODEL_TARGETS:
        v = res[key]
        met = v >= target if op == ">=" else v <= target
        mt.add_row(key, f"{v:.3f}", f"{op} {target:g}", "yes" if met else "NO")
    console.print(mt)
    console.print("model ms (min): torch fp32 {:.0f}, binary slq {:.0f}, int8 slq {:.0f}, onnxruntime int8 {:.0f}; "
                  "slq bytes {} vs fp32 {}; agreement binary {:.4f} int8 {:.4f}".format(
                      res["torch_fp32_model_ms"]["min_ms"], res["binary_model_ms"]["min_ms"],
                      res["int8_model_ms"]["min_ms"], res["onnxruntime_int8_model_ms"]["min_ms"],
                      res["binary_slq_bytes"], res["fp32_state_dict_bytes"],
                      res["mask_agreement_binary"], res["mask_agreement_int8"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    return res


if __name__ == "__main__":
    main()
