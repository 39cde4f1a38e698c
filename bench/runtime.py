"""Benchmark of the integer-only runtime against torch fp32 and ONNX Runtime, all on 2 threads.

    python bench/runtime.py --quick --json OUT.json

Layer: 3x3 conv, 64 -> 64 channels, 128x128 pixels, padding 1 (one image, as the runtime runs).
Measured (fast kernels through their public wrappers, after warm-up):
  - binary XNOR-popcount conv on packed +-1 codes      -> binary_conv_speedup_vs_torch_fp32 (target >= 10)
  - int8 conv (uint8 codes x int8 weights, int32 acc)   -> int8_conv_speedup_vs_torch_fp32   (float32 GEMM)
  - power-of-two conv (INQ-7-projected Gaussian weights) -> pow2_conv_speedup_vs_torch_fp32 (VNNI digits, else split sgemm)
  - bit-plane conv, 2-bit codes x 2-bit weights          -> bitplane_2x2_conv_speedup_vs_torch_fp32
Speedup = torch time / kernel time, each the minimum over repetitions (the least noisy statistic on
a shared machine); medians are written too. The binary kernel's assembly is read with numba's
``inspect_asm`` in subprocesses with an empty numba cache (numba cannot show the assembly of cached
code), once for this CPU and once compiled for an AVX2-only target (``AVX2_TARGET_ENV``, no AVX-512):
``binary_conv_instructions`` / ``binary_conv_instructions_avx2`` list the popcount-related
instructions found (``vpopcntq``: AVX-512 VPOPCNTDQ; ``vpshufb`` + ``vpsadbw``: the nibble-lookup
popcount of Mula, Kurz and Lemire, arXiv 1611.07612; ``popcnt``: scalar).

Threading: torch.set_num_threads, numba.set_num_threads, OpenBLAS (threadpoolctl, the runtime's
GEMM kernels) and ONNX Runtime's intra-op pool all get ``--threads``. numba's threading layer
defaults to ``workqueue`` here (``--threading-layer``): on an oversubscribed machine the OpenMP
layer's sleep/wake-up latency adds ~15 ms per parallel call, which would measure the scheduler, not
the kernel. The layer used is printed and written.

Model-level keys (``model_metrics``; FCN width 32 depth 4 on a 512x512 synthetic gland image), one
run, every exported kind: ``inq`` (the default QuantConfig: INQ 7-bit weights, calibrated 8-bit
activations -- what ``seglearn demo`` exports), ``int8`` (IAO), ``binary`` (BinaryNet middle, IAO
first/last), ``ternary`` (TWN weights, DoReFa 4-bit activations, IAO first/last). Peers: the float
FCN in torch eager fp32 and in ONNX Runtime fp32, and ONNX Runtime int8 on the IAO model's QDQ export.
  - model_speedup_vs_torch_fp32               binary .slq vs torch eager fp32              (>= 5)
  - binary_model_speedup_vs_onnxruntime_fp32  binary .slq vs ONNX Runtime fp32             (reported)
  - int8_model_time_ratio_vs_onnxruntime      IAO .slq time / ONNX Runtime int8 QDQ         (<= 1)
  - inq_model_time_ratio_vs_onnxruntime_fp32  INQ .slq time / ONNX Runtime fp32             (<= 1)
  - model_size_ratio_vs_fp32                  fp32 state-dict bytes / binary .slq bytes     (>= 20)
  - mask_agreement                            runtime vs torch fake-quant foreground, min over models (>= 0.995)
``--models inq,ternary`` builds and times only those kinds (keys of the others are left out),
``--models-only`` skips the single-layer kernels, ``--profile`` adds ``model_layer_profile``: every step
of each graph as ``graph.run`` executes it, fused ops as one (kind, shapes, ms), and a per-kind summary.
``*_model_ms`` time the network alone (``SlqModel.accumulators``, input preparation included);
``*_model_predict_ms`` include post-processing (integer margins -> instance labels for the runtime;
sigmoid + ``instances_from_probs`` for the float peers).
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

from seglearn.runtime.simd import AVX2_TARGET_ENV  # noqa: E402

H = W = 128
CIN = COUT = 64
K = 3

ASM_SCRIPT = """
import re
import numpy as np
from seglearn.runtime import bitpack, ops_fast_binary as ofb
x = bitpack.pack_signs(np.ones((5, 5, 64), np.int8))
w = bitpack.pack_signs(np.ones((64, 3, 3, 64), np.int8))
ofb.bconv2d(x, w, 64, 1, 1)
asm = "".join(a for f in (ofb._bconv, ofb._bconv_row) for a in f.inspect_asm().values())
print(" ".join(sorted(set(re.findall(r"\\b(vpopcnt[bwdq]|popcnt[lq]?|vpshufb|vpsadbw|vpaddb|vpternlogq)\\b", asm)))))
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
    p.add_argument("--models", default=",".join(MODEL_KINDS),
                   help=f"comma-separated model kinds to build and time (default all: {','.join(MODEL_KINDS)}); "
                        "keys of the others are left out")
    p.add_argument("--models-only", action="store_true",
                   help="only the model rows: skip the single-layer kernels and the assembly inspection")
    p.add_argument("--profile", action="store_true",
                   help="also time every op of each .slq graph (op kind, shapes, ms): model_layer_profile")
    args = p.parse_args(argv)
    kinds = [k for k in args.models.split(",") if k]
    bad = sorted(set(kinds) - set(MODEL_KINDS))
    if bad or not kinds:
        p.error(f"--models: unknown kind(s) {', '.join(bad) or '(none given)'}; choose from {', '.join(MODEL_KINDS)}")
    args.models = [k for k in MODEL_KINDS if k in kinds]
    return args


def time_interleaved(fns: dict, reps: int, warmup: int = 1, gap_s: float = 0.25) -> dict:
    """Wall time of each ``fns[name]()`` in ms, min and median over ``reps`` calls after ``warmup``,
    interleaved: each round runs every function once
    (the order rotating by one each round), so a slow phase of a shared machine (other tenants,
    frequency changes) costs every function alike instead of whichever ran during it. Measured why:
    timed one after the other, two runs minutes apart gave the INQ model 0.33x and 0.45x of ORT
    fp32, and one model's network alone took longer than its network plus post-processing.
    ``gap_s`` of sleep before every timed call: thread pools spin-wait after their work (OpenMP in
    torch, ONNX Runtime's intra-op pool, OpenBLAS's threads for a fraction of a second), and
    without the gap that spinning would steal a core from whichever function runs next (measured:
    torch fp32's network alone 1054 ms but 857 ms with post-processing, in one interleaved run)."""
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            fns[name]()
    ts: dict = {name: [] for name in names}
    for rep in range(reps):
        for j in range(len(names)):
            name = names[(j + rep) % len(names)]
            time.sleep(gap_s)
            t0 = time.perf_counter()
            fns[name]()
            ts[name].append((time.perf_counter() - t0) * 1e3)
    return {name: {"min_ms": float(np.min(v)), "median_ms": float(np.median(v))} for name, v in ts.items()}


def torch_fp32():
    import torch

    x = torch.randn(1, CIN, H, W)
    w = torch.randn(COUT, CIN, K, K)

    def run():
        with torch.inference_mode():
            return torch.nn.functional.conv2d(x, w, padding=1)
    return run


def binary_conv(rng):
    from seglearn.runtime import bitpack, ops_fast

    xp = bitpack.pack_signs(np.where(rng.random((H, W, CIN)) < 0.5, -1, 1))
    wp = bitpack.pack_signs(np.where(rng.random((COUT, K, K, CIN)) < 0.5, -1, 1))
    return lambda: ops_fast.bconv2d(xp, wp, CIN, 1, 1)


def int8_conv(rng):
    from seglearn.runtime import ops_fast

    x = rng.integers(0, 256, (H, W, CIN), dtype=np.uint8)
    w = rng.integers(-127, 128, (COUT, K, K, CIN)).astype(np.int8)
    b = rng.integers(-1000, 1000, COUT).astype(np.int32)
    return lambda: ops_fast.conv2d_int8(x, 128, w, b, 1, 1)


def bitplane_conv(rng):
    from seglearn.runtime import bitpack, ops_fast

    xpl = bitpack.bitplanes(rng.integers(0, 4, (H, W, CIN)), 2)
    wpl = bitpack.bitplanes(rng.integers(0, 4, (COUT, K, K, CIN)), 2)
    return lambda: ops_fast.bitplane_conv2d_offset(xpl, wpl, 1, 1)


def inq7_weights(rng, shape) -> tuple[np.ndarray, np.ndarray]:
    """(sign int8, shift uint8) of Gaussian weights projected onto INQ-7's levels as
    ``quant.inq.inq_project`` does (``n = floor(log2(4|w|/3))`` clamped to ``[n2, n1]`` from
    max|w|), shifts counted from the smallest one used, as the exporter writes them. Like a
    trained layer, most exponents lie in the top 14 levels and a few dozen in a long tail below."""
    from seglearn.quant.inq import inq_exponents

    w = rng.standard_normal(shape)
    n1, n2 = inq_exponents(float(np.abs(w).max()), 7)
    a = np.abs(w)
    n = np.clip(np.floor(np.log2(np.maximum(a, 1e-300) * 4 / 3)), n2, n1)
    sign = (np.sign(w) * (a >= 2.0 ** (n2 - 1))).astype(np.int8)
    shift = np.where(sign != 0, n - n[sign != 0].min(), 0).astype(np.uint8)
    return sign, shift


def pow2_conv(rng):
    from seglearn.runtime import ops_fast

    x = rng.integers(0, 256, (H, W, CIN), dtype=np.uint8)
    sign, shift = exported_pow2(*inq7_weights(rng, (COUT, K, K, CIN)))
    return lambda: ops_fast.pow2_conv2d(x, 0, sign, shift, None, 1, 1)


def exported_pow2(sign: np.ndarray, shift: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (sign, shift) the exporter writes for these powers of two: ``export.encode.pow2_floor``
    raises the exponent floor until uint8 codes times sum|w| fit int32 (the kernel's bound)."""
    from seglearn.export.encode import pow2_floor

    w, _, _ = pow2_floor(sign.astype(np.int64) << shift.astype(np.int64), np.ones(len(sign)), 255)
    nz = w != 0
    shift = np.zeros(w.shape, np.uint8)
    shift[nz] = np.log2(np.abs(w[nz])).astype(np.uint8)
    return np.sign(w).astype(np.int8), shift


KERNEL_ROWS = (("binary (xnor-popcount)", "binary_conv", binary_conv),
               ("int8 (uint8 x int8: VNNI, else sgemm)", "int8_conv", int8_conv),
               ("pow2 (INQ-7 shifts: VNNI top-window digits + sparse tail, else split sgemm)", "pow2_conv", pow2_conv),
               ("bit-plane 2-bit x 2-bit", "bitplane_2x2_conv", bitplane_conv))


def popcount_instructions(target_env: dict | None = None) -> list[str]:
    """Popcount-related instructions in the binary conv's assembly (fresh numba cache, subprocess)."""
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache, **(target_env or {}))
        r = subprocess.run([sys.executable, "-c", ASM_SCRIPT], capture_output=True, text=True, env=env, timeout=300)
    return r.stdout.split() if r.returncode == 0 else [f"ERROR: {r.stderr.strip()[-200:]}"]


AVX2_TIMING_SCRIPT = """
import json, sys, time
import numba, numpy as np, torch
from seglearn.runtime import bitpack, ops_fast_binary as ofb
threads, reps = int(sys.argv[1]), int(sys.argv[2])
torch.set_num_threads(threads); numba.set_num_threads(threads)
rng = np.random.default_rng(0)
xp = bitpack.pack_signs(np.where(rng.random((%(h)d, %(w)d, %(cin)d)) < 0.5, -1, 1).astype(np.int8))
wp = bitpack.pack_signs(np.where(rng.random((%(cout)d, %(k)d, %(k)d, %(cin)d)) < 0.5, -1, 1).astype(np.int8))
wp.flags.writeable = False  # a loaded model's weights: the padded transpose is cached
xt, wt = torch.randn(1, %(cin)d, %(h)d, %(w)d), torch.randn(%(cout)d, %(cin)d, %(k)d, %(k)d)
fns = {"torch": lambda: torch.nn.functional.conv2d(xt, wt, padding=1),
       "binary": lambda: ofb.bconv2d(xp, wp, %(cin)d, 1, 1)}
ts = {n: [] for n in fns}
for n in fns:
    fns[n](); fns[n]()
for r in range(reps):
    for n in (list(fns) if r %% 2 else list(fns)[::-1]):
        time.sleep(0.05)
        t = time.perf_counter(); fns[n](); ts[n].append((time.perf_counter() - t) * 1e3)
print(json.dumps({"block": [ofb.PB, ofb.VC], **{n: min(v) for n, v in ts.items()}}))
""" % {"h": H, "w": W, "cin": CIN, "cout": COUT, "k": K}


def avx2_build_timing(threads: int, reps: int) -> dict:
    """The binary conv compiled for AVX2 only (``AVX2_TARGET_ENV``, fresh numba cache, child process)
    against torch fp32 in the same process: the deployment target's ratio on an AVX-512 host."""
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache, **AVX2_TARGET_ENV)
        r = subprocess.run([sys.executable, "-c", AVX2_TIMING_SCRIPT, str(threads), str(reps)],
                           capture_output=True, text=True, env=env, timeout=600)
    if r.returncode != 0:
        return {"binary_conv_avx2_build_error": r.stderr.strip()[-300:]}
    got = json.loads(r.stdout.strip().splitlines()[-1])
    return {"binary_conv_avx2_build_block": got["block"],
            "binary_conv_avx2_build_ms": got["binary"],
            "binary_conv_avx2_build_torch_fp32_ms": got["torch"],
            "binary_conv_speedup_vs_torch_fp32_avx2_build": got["torch"] / got["binary"]}


def cpu_has_vpopcntdq() -> bool:
    from llvmlite import binding

    return "+avx512vpopcntdq" in binding.get_host_cpu_features().flatten()


MODEL_WIDTH, MODEL_DEPTH, MODEL_SIZE = 32, 4, 512
BINARY_SCHEME = {"weight": "binarynet", "act": "binarynet", "first_last": "iao8"}
IAO_SCHEME = {"weight": "iao", "act": "iao"}
TWN_SCHEME = {"weight": "twn", "act": "dorefa", "a_bits": 4, "first_last": "iao8"}
MODEL_KINDS = ("inq", "int8", "binary", "ternary")


def model_schemes() -> dict:
    """The four exported kinds; ``inq`` is the default QuantConfig (what ``seglearn demo`` exports)."""
    from seglearn.config import QuantConfig
    from seglearn.models.checkpoint import scheme_dict

    return {"inq": scheme_dict(QuantConfig()), "int8": IAO_SCHEME, "binary": BINARY_SCHEME, "ternary": TWN_SCHEME}


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


def layer_profile(model, image, reps: int) -> list[dict]:
    """The steps of ``model``'s graph as ``graph.run`` executes them on ``image`` (one tile, fast
    kernels: fused convs and a conv with its requants are one step each, ``graph.run(profile=)``):
    op kinds, input and output shapes, min ms over ``reps`` runs of the whole graph (after one
    warm-up run). Until 2026-12-07 every op ran alone here, unfused, so the profile showed requant
    passes and int32 maps that the model never makes."""
    from seglearn.runtime import graph as G

    a = model._prepare(image)
    rows = None
    for rep in range(reps + 1):
        steps: list = []
        G.run(model.graph, model.arrays, a, model.kernels, profile=steps)
        if rep == 1:
            rows = steps
        elif rep > 1:
            for r, t in zip(rows, steps):
                r["ms"] = min(r["ms"], t["ms"])
    return rows


def model_metrics(reps: int, threads: int, steps: int, workdir: str, kinds=MODEL_KINDS,
                  profile: bool = False) -> dict:
    """Model-level keys, measured in this run on one 512x512 synthetic gland image per timing.

    Networks: FCN width 32, depth 4, one per kind of ``model_schemes`` (briefly trained,
    ``train_on_glands``), exported to .slq (calibrated on two synthetic images where the scheme has
    float activations, as ``seglearn export`` does); the float FCN to fp32 ONNX and the IAO one to
    QDQ ONNX. Timed (min over reps after warm-up, ``threads`` on every side): ``SlqModel.accumulators``
    (network, input preparation included) and ``SlqModel.predict`` (+ post-processing) vs the float
    FCN in torch eager fp32 (``torch.inference_mode``) and in ONNX Runtime fp32 (+ sigmoid and
    ``instances_from_probs`` for the predict rows), and ONNX Runtime int8 on the QDQ file.
    """
    import io

    import onnxruntime as ort
    import torch

    from seglearn.data.synthetic import synth_image
    from seglearn.export import export_model
    from seglearn.export.onnx_qdq import export_onnx
    from seglearn.models.fcn import FCN
    from seglearn.postprocess.instances import instances_from_probs
    from seglearn.quant.convert import quantize_model
    from seglearn.runtime import load_model

    rng = np.random.default_rng(1)
    images = [synth_image(rng, (MODEL_SIZE, MODEL_SIZE))[0] for _ in range(2)]
    calib = [synth_image(rng, (128, 128))[0] for _ in range(2)]
    torch.manual_seed(0)
    fp32 = FCN(3, width=MODEL_WIDTH, depth=MODEL_DEPTH).eval()
    t0 = time.perf_counter()
    nets = {k: train_on_glands(quantize_model(fp32, sc), steps) for k, sc in model_schemes().items() if k in kinds}
    train_s = time.perf_counter() - t0
    slq, ops = {}, {}
    for name, net in nets.items():
        info = export_model(net, os.path.join(workdir, f"{name}.slq"), calib=calib)
        slq[name] = load_model(os.path.join(workdir, f"{name}.slq"))
        ops[name] = info["ops"]

    def session(path):
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])

    export_onnx(fp32, os.path.join(workdir, "fp32.onnx"))
    ort_fp32 = session(os.path.join(workdir, "fp32.onnx"))
    if "int8" in nets:
        export_onnx(nets["int8"], os.path.join(workdir, "int8.onnx"))
        ort_int8 = session(os.path.join(workdir, "int8.onnx"))

    img = images[0]
    x = torch.from_numpy(img.transpose(2, 0, 1).copy()).float()[None] / 255

    def post(logits):  # the float route's post-processing on the foreground probability
        return instances_from_probs(1 / (1 + np.exp(-np.asarray(logits, np.float64)[0, 0])))

    def torch_run(f):
        def run():
            with torch.inference_mode():
                return f()
        return run

    fns = {"torch_fp32": torch_run(lambda: fp32(x)),
           "torch_fp32_predict": torch_run(lambda: post(fp32(x).numpy())),
           "onnxruntime_fp32": lambda: ort_fp32.run(None, {"image": x.numpy()}),
           "onnxruntime_fp32_predict": lambda: post(ort_fp32.run(None, {"image": x.numpy()})[0])}
    if "int8" in nets:
        fns["onnxruntime_int8"] = lambda: ort_int8.run(None, {"image": x.numpy()})
    for name in nets:
        fns[name] = lambda m=slq[name]: m.accumulators(img)
        fns[f"{name}_predict"] = lambda m=slq[name]: m.predict(img)
    t = time_interleaved(fns, reps)  # every peer and model in each round: see time_interleaved

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
    slq_bytes = os.path.getsize(os.path.join(workdir, "binary.slq")) if "binary" in nets else None

    def ms(key):
        return t[key]["min_ms"]

    res = {
        "model": f"FCN width {MODEL_WIDTH} depth {MODEL_DEPTH}, {MODEL_SIZE}x{MODEL_SIZE} image",
        "model_schemes": model_schemes(), "model_ops": ops,
        "model_train_steps": steps, "model_train_s": train_s,
        "model_timing_scope": "*_model_ms: SlqModel.accumulators (network, no post-processing) vs torch eager "
                              "fp32 forward vs onnxruntime session.run; *_model_predict_ms: + post-processing",
        "torch_fp32_model_ms": t["torch_fp32"], "onnxruntime_fp32_model_ms": t["onnxruntime_fp32"],
        "torch_fp32_model_predict_ms": t["torch_fp32_predict"],
        "onnxruntime_fp32_model_predict_ms": t["onnxruntime_fp32_predict"],
    }
    if "int8" in nets:
        res["onnxruntime_int8_model_ms"] = t["onnxruntime_int8"]
    for name in nets:
        res[f"{name}_model_ms"] = t[name]
        res[f"{name}_model_predict_ms"] = t[f"{name}_predict"]
        res[f"{name}_model_speedup_vs_torch_fp32"] = ms("torch_fp32") / ms(name)
        res[f"{name}_model_speedup_vs_onnxruntime_fp32"] = ms("onnxruntime_fp32") / ms(name)
        res[f"{name}_model_predict_speedup_vs_onnxruntime_fp32"] = ms("onnxruntime_fp32_predict") / ms(f"{name}_predict")
        res[f"mask_agreement_{name}"] = agree[name]
    if "binary" in nets:
        res.update({"model_speedup_vs_torch_fp32": ms("torch_fp32") / ms("binary"),
                    "binary_model_speedup_vs_onnxruntime_fp32": ms("onnxruntime_fp32") / ms("binary"),
                    "binary_slq_bytes": slq_bytes, "model_size_ratio_vs_fp32": fp32_bytes / slq_bytes})
    if "int8" in nets:
        res["int8_model_time_ratio_vs_onnxruntime"] = ms("int8") / ms("onnxruntime_int8")
    if "inq" in nets:
        res["inq_model_time_ratio_vs_onnxruntime_fp32"] = ms("inq") / ms("onnxruntime_fp32")
    res.update({
        "fp32_state_dict_bytes": fp32_bytes,
        "mask_agreement": min(agree.values()),
        "torch_foreground_fraction": {k: float(np.mean(v)) for k, v in fg.items()},
    })
    if profile:
        res["model_layer_profile"] = {name: layer_profile(slq[name], img, min(reps, 2)) for name in nets}
    return res


MODEL_TARGETS = (("model_speedup_vs_torch_fp32", ">=", 5.0), ("int8_model_time_ratio_vs_onnxruntime", "<=", 1.0),
                 ("inq_model_time_ratio_vs_onnxruntime_fp32", "<=", 1.0),
                 ("model_size_ratio_vs_fp32", ">=", 20.0), ("mask_agreement", ">=", 0.995))


def popcount_kind(ins: list[str]) -> str:
    """The vector popcount method the instructions show: VPOPCNTQ, VPSHUFB+VPSADBW (Mula), POPCNT or NONE."""
    if "vpopcntq" in ins:
        return "VPOPCNTQ"
    if "vpshufb" in ins and "vpsadbw" in ins:
        return "VPSHUFB+VPSADBW"
    return "POPCNT" if any(i.startswith("popcnt") for i in ins) else "NONE"


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.train_steps is None:
        args.train_steps = 50 if args.quick else 100
    if args.threading_layer != "default":
        os.environ["NUMBA_THREADING_LAYER"] = args.threading_layer  # before numba's first parallel call
    import numba
    import torch
    from rich.console import Console
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    numba.set_num_threads(args.threads)
    threadpool_limits(args.threads, user_api="blas")  # OpenBLAS under the runtime's GEMM kernels
    reps = 10 if args.quick else 50
    rng = np.random.default_rng(0)

    res = {"threads": args.threads, "quick": args.quick}
    console = Console()
    if not args.models_only:
        res.update(kernel_metrics(rng, reps))
    with tempfile.TemporaryDirectory() as workdir:
        res.update(model_metrics(3 if args.quick else 10, args.threads, args.train_steps, workdir, args.models,
                                 args.profile))
    res["numba_threading_layer"] = numba.threading_layer()  # after the first parallel call
    if not args.models_only:
        print_kernels(console, res, args.threads)
    print_models(console, res, args.threads, args.models)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    return res


def kernel_metrics(rng, reps: int) -> dict:
    """Single-layer kernel rows vs torch fp32 conv2d, and the binary conv's popcount instructions."""
    import torch

    fns = {"torch": torch_fp32(), **{key: fn(rng) for _, key, fn in KERNEL_ROWS}}
    t = time_interleaved(fns, reps, warmup=2)  # interleaved, as the model rows
    t_torch = t["torch"]
    kernels = {name: (key, t[key]) for name, key, _ in KERNEL_ROWS}
    ins, ins_avx2 = popcount_instructions(), popcount_instructions(AVX2_TARGET_ENV)
    res = {"layer": f"conv {K}x{K} {CIN}->{COUT} {H}x{W} pad 1", "torch_fp32_ms": t_torch}
    for key, t in kernels.values():
        res[f"{key}_ms"] = t
        res[f"{key}_speedup_vs_torch_fp32"] = t_torch["min_ms"] / t["min_ms"]
    res.update({
        "binary_conv_instructions": ins,
        "binary_conv_instructions_avx2": ins_avx2,
        "binary_conv_popcount_instruction": popcount_kind(ins),
        "binary_conv_popcount_instruction_avx2": popcount_kind(ins_avx2),
        "binary_conv_uses_vpopcntq": "vpopcntq" in ins,
        "cpu_has_avx512_vpopcntdq": cpu_has_vpopcntdq(),
    })
    res.update(avx2_build_timing(torch.get_num_threads(), reps))
    return res


def print_kernels(console, res: dict, threads: int) -> None:
    from rich.table import Table

    def speedup(t):
        return res["torch_fp32_ms"]["min_ms"] / t["min_ms"]

    ins, ins_avx2 = res["binary_conv_instructions"], res["binary_conv_instructions_avx2"]
    kernels = {name: (key, res[f"{key}_ms"]) for name, key, _ in KERNEL_ROWS}
    t_torch = res["torch_fp32_ms"]
    table = Table(title=f"runtime kernels vs torch fp32 conv2d ({res['layer']}, {threads} threads)")
    for col in ("kernel", "min ms", "median ms", "speedup vs torch fp32"):
        table.add_column(col, justify="right" if col != "kernel" else "left")
    for name, t in [("torch fp32 conv2d", t_torch)] + [(n, t) for n, (_, t) in kernels.items()]:
        table.add_row(name, f"{t['min_ms']:.2f}", f"{t['median_ms']:.2f}", f"{speedup(t):.1f}x")
    console.print(table)
    console.print(f"binary conv instructions: {' '.join(ins)} (this CPU, AVX-512 VPOPCNTDQ: "
                  f"{res['cpu_has_avx512_vpopcntdq']}); compiled for AVX2 only: {' '.join(ins_avx2)}; "
                  f"numba threading layer: {res['numba_threading_layer']}")
    target = "met" if res["binary_conv_speedup_vs_torch_fp32"] >= 10 else "NOT met"
    console.print(f"binary conv speedup target >= 10: {target}")
    if "binary_conv_speedup_vs_torch_fp32_avx2_build" in res:
        console.print(f"compiled for AVX2 only (block {res['binary_conv_avx2_build_block']}): "
                      f"{res['binary_conv_avx2_build_ms']:.2f} ms, "
                      f"{res['binary_conv_speedup_vs_torch_fp32_avx2_build']:.1f}x torch fp32")


def print_models(console, res: dict, threads: int, kinds) -> None:
    from rich.table import Table

    mt = Table(title=f"model level: {res['model']}, {threads} threads ({res['model_timing_scope']})")
    for col in ("key", "value", "target", "met"):
        mt.add_column(col, justify="left" if col == "key" else "right")
    for key, op, target in MODEL_TARGETS:
        if key not in res:  # its model kind was not asked for (--models)
            continue
        v = res[key]
        met = v >= target if op == ">=" else v <= target
        mt.add_row(key, f"{v:.3f}", f"{op} {target:g}", "yes" if met else "NO")
    console.print(mt)
    rows = Table(title="model ms (min over reps)")
    for col in ("model", "network ms", "with post-processing ms", "vs torch fp32", "vs ORT fp32", "mask agreement"):
        rows.add_column(col, justify="left" if col == "model" else "right")
    for name, key in (("torch fp32", "torch_fp32"), ("ONNX Runtime fp32", "onnxruntime_fp32")):
        rows.add_row(name, f"{res[key + '_model_ms']['min_ms']:.0f}", f"{res[key + '_model_predict_ms']['min_ms']:.0f}",
                     "", "", "")
    if "onnxruntime_int8_model_ms" in res:
        rows.add_row("ONNX Runtime int8 (QDQ)", f"{res['onnxruntime_int8_model_ms']['min_ms']:.0f}", "", "", "", "")
    for name in kinds:
        rows.add_row(f"{name} .slq", f"{res[name + '_model_ms']['min_ms']:.0f}",
                     f"{res[name + '_model_predict_ms']['min_ms']:.0f}",
                     f"{res[name + '_model_speedup_vs_torch_fp32']:.2f}x",
                     f"{res[name + '_model_speedup_vs_onnxruntime_fp32']:.2f}x", f"{res['mask_agreement_' + name]:.4f}")
    console.print(rows)
    if "binary_slq_bytes" in res:
        console.print(f"slq bytes {res['binary_slq_bytes']} (binary) vs fp32 state dict {res['fp32_state_dict_bytes']}")
    for name, layers in res.get("model_layer_profile", {}).items():
        lt = Table(title=f"{name} .slq per op (one {MODEL_SIZE}x{MODEL_SIZE} tile, min ms)")
        for col in ("#", "op", "in", "out", "ms", "share"):
            lt.add_column(col, justify="left" if col in ("op", "in") else "right")
        total = sum(r["ms"] for r in layers)
        for i, r in enumerate(layers):
            lt.add_row(str(i), r["op"], " + ".join("x".join(map(str, x)) for x in r["in"]),
                       " + ".join("x".join(map(str, x)) for x in r["out"]), f"{r['ms']:.1f}",
                       f"{r['ms'] / total:.0%}")
        by_kind: dict = {}
        for r in layers:
            by_kind[r["op"]] = by_kind.get(r["op"], 0.0) + r["ms"]
        console.print(lt)
        console.print(f"{name}: {total:.0f} ms over ops; by kind: "
                      + ", ".join(f"{k} {v:.0f} ms ({v / total:.0%})" for k, v in
                                  sorted(by_kind.items(), key=lambda kv: -kv[1])))


if __name__ == "__main__":
    main()
