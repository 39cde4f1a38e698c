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

Model-level keys (model_speedup_vs_torch_fp32, int8_model_time_ratio_vs_onnxruntime,
model_size_ratio_vs_fp32, mask_agreement) need an exported model: see ``model_metrics``.
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


def model_metrics() -> dict:
    """Model-level comparisons; added once ``seglearn.export`` and the graph interpreter exist.

    Planned keys (measured on one exported FCN, never estimated):
      model_speedup_vs_torch_fp32           runtime ``load_model(...).predict`` vs the torch fp32 model
      int8_model_time_ratio_vs_onnxruntime  int8 runtime time / onnxruntime time of the same int8 model
      model_size_ratio_vs_fp32              exported .slq bytes / fp32 state-dict bytes
      mask_agreement                        pixel agreement of runtime masks with the torch quantized model
    Returns {} until then, so nothing is reported that was not measured.
    """
    return {}


def main(argv=None) -> dict:
    args = parse_args(argv)
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
    res.update(model_metrics())

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
    console.print("model-level keys: not measured yet (need seglearn.export); see model_metrics()")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    return res


if __name__ == "__main__":
    main()
