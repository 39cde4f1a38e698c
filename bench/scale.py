"""Past one machine (issue 17): the Ray backend against the local one, a streamed pool of 10^5
images, and killed work that is retried or resumed.

    python bench/scale.py [--sizes 10000 50000 100000] [--json bench/results/scale.json]

1. equal_to_local: one tiny synthetic workspace (copied so both start equal), its suggestive
   ensemble trained with compute.backend=local and =ray (a local 2-CPU Ray cluster), then
   ``select`` with each: the same member seeds and bootstrap samples, weights and stored scores
   equal to float tolerance, the same picks. The wall time of both; the overhead of one Ray task
   (a no-op task's round trip, warm workers).
2. rss_mb: select's streamed path (``app.select._select_streamed``: chunks scored by Ray actors,
   each chunk stored in one transaction, descriptors to a memory-mapped file, max-cover in
   blocks) over a pool of N synthetic images (64 distinct 32x32 images cycled, so the pool costs
   no disk to speak of), each N in a fresh process; peak RSS of the driver (VmHWM) and the
   images per second; the rate per core projects 10^6 images.
3. killed: a member task's worker is SIGKILLed after its first checkpoint: Ray reruns it, the
   member resumes from that checkpoint and the round lands with every member. A ``select``
   process killed mid-pool, rerun: only the images not stored yet are scored again.
"""

from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.getcwd()) != _HERE]

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import sqlite3  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(_HERE).parent
TINY = ["synthetic.size=32", "data.crop=32", "model.width=4", "model.depth=3",
        "ensemble.steps=40", "ensemble.members=2", "data.batch_size=2", "train.bf16=false",
        "active.budget=4", "active.candidates=12", "ensemble.quant.weight=null",
        "final.quant.weight=null", "train.checkpoint_every=10", "postprocess.tune=false"]
RAY = ["compute.backend=ray", "compute.chunk=256"]
NUM_CPUS = 2


def _cfg(extra=()):
    from seglearn.config import load_config

    return load_config(None, TINY + list(extra))


def _ray_init():
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=NUM_CPUS, include_dashboard=False, log_to_driver=False,
                 logging_level="WARNING")
    return ray


def _template(root: Path, n: int = 60):
    """A workspace of ``n`` synthetic images, 10% labeled, untrained."""
    from seglearn.app.init import init_workspace

    init_workspace(root, _cfg(), synthetic=n, seed=0, initial_labeled=0.1, progress=False).close()
    return root


def _copy(src: Path, dst: Path):
    from seglearn.store import Workspace

    shutil.copytree(src, dst)
    return Workspace.open(dst)


def _models(ws):
    import torch

    out = []
    for m in sorted(ws.models(role="suggestive"), key=lambda m: m.member):
        side = json.loads(ws.resolve(m.path).with_suffix(".json").read_text())
        out.append((side["seed"], side["train_items"],
                    torch.load(ws.resolve(m.path), weights_only=True)["model"]))
    return out


def task_overhead_ms(n: int = 200) -> float:
    """Median round trip of a no-op Ray task on warm workers, in ms."""
    ray = _ray_init()
    noop = ray.remote(lambda: None).options(num_cpus=1)
    ray.get([noop.remote() for _ in range(8)])  # start the workers
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        ray.get(noop.remote())
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000)


def equal_to_local(tmp: Path) -> dict:
    from seglearn.app.select import select_workspace
    from seglearn.app.train import train_workspace

    _ray_init()
    tpl = _template(tmp / "template")
    out, res = {}, {}
    for name, extra in (("local", []), ("ray", RAY)):
        cfg = _cfg(extra)
        with _copy(tpl, tmp / name) as ws:
            t0 = time.perf_counter()
            train_workspace(ws, cfg, progress=False)
            t1 = time.perf_counter()
            sel = select_workspace(ws, cfg, progress=False)
            t2 = time.perf_counter()
            (version,) = ws.score_versions()
            res[name] = (_models(ws), ws.scores(version), [r["item"] for r in sel.rows],
                         [r["coverage_gain"] for r in sel.rows])
            out[f"{name}_train_s"], out[f"{name}_select_s"] = t1 - t0, t2 - t1
            out["pool"] = len(ws.unlabeled("pool"))
    (ml, sl, pl, gl), (mr, sr, pr, gr) = res["local"], res["ray"]
    same_members = all(a[0] == b[0] and a[1] == b[1] for a, b in zip(ml, mr)) and len(ml) == 2
    w_diff = max(float((a[2][k].float() - b[2][k].float()).abs().max())
                 for a, b in zip(ml, mr) for k in a[2])
    s_diff = max(abs(sl[i][0][n] - sr[i][0][n]) for i in sl for n in sl[i][0])
    d_diff = max(float(np.abs(sl[i][1] - sr[i][1]).max()) for i in sl)
    out.update({"same_seeds_and_samples": bool(same_members), "max_weight_diff": w_diff,
                "max_score_diff": s_diff, "max_descriptor_diff": d_diff,
                "same_picks": pl == pr, "max_gain_diff": float(np.max(np.abs(np.subtract(gl, gr)))),
                "scored_items_equal": sorted(sl) == sorted(sr)})
    out["equal"] = bool(same_members and w_diff < 1e-3 and s_diff < 1e-4 and d_diff < 1e-4
                        and pl == pr and out["scored_items_equal"])
    return out


def _big_workspace(root: Path, n: int, seed: int = 0):
    """A workspace whose pool is ``n`` items over 64 distinct 32x32 images (cycled)."""
    from PIL import Image

    from seglearn.store import ItemRecord, Workspace
    from seglearn.store.digest import file_digest

    ws = Workspace.create(root)
    rng = np.random.default_rng(seed)
    files = []
    for i in range(64):
        p = root / "images" / f"im{i:02d}.png"
        p.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(p)
        files.append((p, file_digest(p)))
    recs = []
    for i in range(n):
        p, dg = files[i % 64]
        recs.append(ItemRecord(f"tile{i:07d}", str(p), "pool", 32, 32, dg.sha256,
                               image_size=dg.size, image_mtime_ns=dg.mtime_ns))
    ws.add_items(recs)
    return ws


def _status_mb(field: str) -> float:
    """``VmHWM`` (peak) or ``VmRSS`` (now) of this process in MiB, from /proc/self/status. Not
    ru_maxrss: across fork + exec Linux keeps the parent's peak in it (this bench's own 500+ MB
    would read as the child's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def stream_child(n: int, ens_ws: Path, out: Path) -> None:
    """(in a fresh process) the streamed select over a pool of ``n``: peak RSS and rate."""
    from seglearn.app.select import _select_streamed
    from seglearn.models.ensemble import load_ensemble
    from seglearn.compute import RayBackend
    from seglearn.store import Workspace

    cfg = _cfg(RAY)
    _ray_init()
    with Workspace.open(ens_ws) as src:
        ens = load_ensemble(src, "suggestive", cfg)
    tmp = Path(tempfile.mkdtemp(prefix="seglearn-scale-"))
    try:
        t0 = time.perf_counter()
        ws = _big_workspace(tmp / "ws", n)
        t_make = time.perf_counter() - t0
        rss_before = _status_mb("VmHWM")
        backend = RayBackend(cfg)
        pool = ws.unlabeled("pool")
        ids = [it.id for it in pool]
        t0 = time.perf_counter()
        picks = _select_streamed(ws, ens, pool, ids, cfg.active.budget, cfg, False, backend)
        seconds = time.perf_counter() - t0
        rss, rss_now = _status_mb("VmHWM"), _status_mb("VmRSS")
        stored = len(ws.scored_ids(ens.version))
        ws.close()
        out.write_text(json.dumps({"n": n, "seconds": seconds, "peak_rss_mb": rss,
                                   "peak_rss_before_select_mb": rss_before,
                                   "rss_after_select_mb": rss_now, "stored": stored,
                                   "picks": len(picks), "make_workspace_s": t_make}))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def stream(sizes: list[int], tmp: Path) -> dict:
    from seglearn.app.train import train_workspace
    from seglearn.store import Workspace

    ens_ws = tmp / "ens"
    if not ens_ws.exists():
        shutil.copytree(tmp / "template", ens_ws)
        with Workspace.open(ens_ws) as ws:
            train_workspace(ws, _cfg(), progress=False)
    rows = {}
    for n in sizes:
        out = tmp / f"stream_{n}.json"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        subprocess.run([sys.executable, __file__, "--child", str(n), str(ens_ws), str(out)],
                       check=True, env=env)
        rows[n] = json.loads(out.read_text())
        print(f"  streamed pool {n}: {rows[n]}", flush=True)
    return rows


def killed_member(tmp: Path) -> dict:
    """SIGKILL member 0's worker after its first checkpoint; the round must land."""
    from seglearn.app.train import train_workspace
    from seglearn.compute import RayBackend

    _ray_init()
    cfg = _cfg(RAY)
    pids = tmp / "pids"
    pids.mkdir()
    ws = _copy(tmp / "template", tmp / "killed")

    def member(samples, spec, job):  # pickled by value (defined in __main__)
        import os as _os

        from seglearn.compute.members import remote_member

        (pids / f"{job.member}-{_os.getpid()}").write_text(str(_os.getpid()))
        return remote_member(samples, spec, job)

    state = {"killed": None}

    def killer():
        ckpt = ws.root / "models"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and state["killed"] is None:
            found = list(ckpt.glob("round_*/suggestive/member_0.pt"))
            mine = list(pids.glob("0-*"))
            if found and mine:
                pid = int(mine[0].read_text())
                os.kill(pid, signal.SIGKILL)
                state["killed"] = pid
            time.sleep(0.02)

    th = threading.Thread(target=killer, daemon=True)
    th.start()
    rows = train_workspace(ws, cfg, progress=False, backend=RayBackend(cfg, member_fn=member))
    th.join(timeout=1)
    (rnd,) = [r for r in ws.rounds() if r.kind == "train-suggestive"]
    out = {"killed_pid": state["killed"], "attempts_member_0": len(list(pids.glob("0-*"))),
           "round_finished": rnd.finished is not None,
           "members_in": len(ws.models(role="suggestive", round_id=rnd.id)),
           "resumed_from_step": rows[0].get("resumed_from"), "steps": rows[0]["steps"]}
    ws.close()
    return out


def killed_select(tmp: Path) -> dict:
    """A select process SIGKILLed mid-pool, then rerun: it scores only what was not stored."""
    from seglearn.models.ensemble import load_ensemble
    from seglearn.app.select import select_workspace
    from seglearn.compute import RayBackend

    src = tmp / "ens"
    ws_path = tmp / "kill_select"
    big = _big_workspace(tmp / "kill_big", 3000)
    big.close()
    # the trained ensemble workspace, with its pool grown to 3000 items (the big one's images)
    ws = _copy(src, ws_path)
    from seglearn.store import ItemRecord
    from seglearn.store.digest import file_digest

    recs = []
    for i in range(3000):
        p = tmp / "kill_big" / "images" / f"im{i % 64:02d}.png"
        dg = file_digest(p)
        recs.append(ItemRecord(f"tile{i:07d}", str(p), "pool", 32, 32, dg.sha256,
                               image_size=dg.size, image_mtime_ns=dg.mtime_ns))
    ws.add_items(recs)
    pool_n = len(ws.unlabeled("pool"))
    version = load_ensemble(ws, "suggestive").version
    ws.close()
    args = [sys.executable, "-m", "seglearn.cli.app", "select", str(ws_path), "--no-progress",
            *[a for s in TINY + RAY for a in ("--set", s)]]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen(args, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    db = ws_path / "seglearn.db"

    def stored() -> int:
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as c:
                return c.execute("SELECT COUNT(*) FROM scores WHERE model_version = ?",
                                 (version,)).fetchone()[0]
        except sqlite3.Error:
            return 0

    deadline = time.monotonic() + 300
    while stored() < 2 * 256 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    at_kill = stored()

    class Counting(RayBackend):
        scored = 0

        def score(self, ens, items, *a, **kw):
            Counting.scored += len(items)
            yield from super().score(ens, items, *a, **kw)

    from seglearn.store import Workspace

    _ray_init()
    cfg = _cfg(RAY)
    with Workspace.open(ws_path) as w:
        res = select_workspace(w, cfg, progress=False, backend=Counting(cfg))
        final = len(w.scored_ids(version))
    return {"pool": pool_n, "stored_when_killed": at_kill, "scored_by_rerun": Counting.scored,
            "stored_after_rerun": final, "picks": len(res.rows),
            "no_rescoring": Counting.scored == pool_n - at_kill and final == pool_n}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[10000, 50000, 100000])
    ap.add_argument("--json", default=str(ROOT / "bench" / "results" / "scale.json"))
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        return stream_child(int(a.child[0]), Path(a.child[1]), Path(a.child[2]))
    import ray
    import torch

    tmp = Path(tempfile.mkdtemp(prefix="seglearn-bench-scale-"))
    try:
        eq = equal_to_local(tmp)
        print("equal_to_local:", eq, flush=True)
        overhead = task_overhead_ms()
        print(f"task overhead: {overhead:.2f} ms", flush=True)
        km = killed_member(tmp)
        print("killed member:", km, flush=True)
        ray.shutdown()  # the streamed pools and the killed select start their own clusters
        rows = stream(a.sizes, tmp)
        ks = killed_select(tmp)
        print("killed select:", ks, flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    big, small = rows[max(rows)], rows[min(rows)]
    # steady-state rate: the largest pool's extra images over the smallest's extra seconds (the
    # actors' start, loading torch and the ensemble, is paid once per select, not per image)
    per_core = (big["n"] - small["n"]) / (big["seconds"] - small["seconds"]) / NUM_CPUS
    result = {
        "equal_to_local": eq["equal"],
        "rss_mb": {str(n): round(r["peak_rss_mb"], 1) for n, r in rows.items()},
        "images_per_s_per_core": round(per_core, 1),
        "projected_1m_hours": round(1e6 / per_core / 3600, 3),
        "task_overhead_ms": round(overhead, 2),
        "rss_bound_mb": 2048,
        "rss_under_bound": all(r["peak_rss_mb"] < 2048 for r in rows.values()),
        "equal_detail": eq,
        "stream_detail": {str(n): r for n, r in rows.items()},
        "killed_member": km,
        "killed_select": ks,
        "conditions": {
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores "
                       "shared with other jobs",
            "ray": ray.__version__, "torch": torch.__version__,
            "cluster": f"local Ray cluster, num_cpus={NUM_CPUS}, compute.cpus_per_task=1",
            "model": "2 float members, FCN width 4 depth 3, ensemble.steps 40",
            "equal_to_local": "60 synthetic 32x32 images, 10% labeled; same seeds and bootstrap "
                              "samples, weights < 1e-3, scores and descriptors < 1e-4, same picks",
            "stream": "pool of N items cycling 64 distinct 32x32 PNGs; compute.chunk=256; "
                      "peak RSS = the driver's VmHWM in a fresh process per N (torch and ray "
                      "imported: the base cost), Ray workers not counted",
            "images_per_s_per_core": f"({big['n']} - {small['n']}) images / the difference of "
                                     f"their streamed select seconds / {NUM_CPUS} CPUs (the "
                                     "driver reads and stores on the same 2 cores)",
            "projected_1m_hours": "10^6 images on one core at that rate; divide by the cores",
            "task_overhead_ms": "median round trip of a no-op Ray task, warm workers",
        },
    }
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in list(result)[:7]}, indent=2))


if __name__ == "__main__":
    main()
