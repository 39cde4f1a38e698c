"""Resource bounds of `select`: a large image is scored tile by tile with bounded memory, and a
large pool is scored in batches committed as they go, so a killed `select` loses at most one
batch and its re-run does not recompute what is stored."""

from __future__ import annotations

import inspect
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np

from .helpers import TINY, scalar, spy_events, write_png

MEASURE = """
import json, resource, sys
import numpy as np, torch
torch.set_num_threads(1)
from seglearn.config import ModelConfig
from seglearn.models.checkpoint import make_model
from seglearn.models.ensemble import Ensemble

def peak():  # bytes; ru_maxrss is in KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

torch.manual_seed(0)
model = make_model(ModelConfig(width=8, depth=3), None)
ens = Ensemble([model], [], 1, "suggestive")
image = np.random.default_rng(0).integers(0, 256, (1200, 900, 3), dtype=np.uint8)

# What a whole-image forward would hold: every layer's output at full size (hooks on a small
# input, scaled by area), the naive activation size the tiles must stay well below.
sizes = []
leaves = [m for m in model.modules() if not list(m.children())]
hooks = [m.register_forward_hook(lambda m, i, o: sizes.append(o.numel() * o.element_size()))
         for m in leaves]
with torch.no_grad():
    model.forward_features(torch.zeros(1, 3, 120, 96))
for h in hooks:
    h.remove()
naive = sum(sizes) * (1200 * 900) / (120 * 96)

shapes = []
run = ens.inference_members()[0]  # the (fused, frozen) module predict runs, once per tile
real_features = run.forward_features
def spy(x):
    shapes.append(list(x.shape[-2:]))
    return real_features(x)
run.forward_features = spy
ens.predict(image[:64, :64])  # one-off allocations (thread pools, kernels) before measuring
shapes.clear()
base = peak()
probs, desc = ens.predict(image)  # as `select` calls it: the default tile
print(json.dumps({"delta": peak() - base, "naive": naive, "shapes": shapes,
                  "probs": list(probs.shape), "finite": bool(np.isfinite(probs).all()),
                  "desc": list(desc.shape)}))
"""


def test_large_image_is_scored_in_tiles_with_bounded_memory():
    # A fixed mmap threshold makes freed large buffers go back to the OS at once, so the peak RSS
    # reflects the memory live at one time rather than glibc's caching.
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(MEASURE)], env=env, text=True,
                         capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.strip().splitlines()[-1])
    from seglearn.models.infer import predict_image

    tile = inspect.signature(predict_image).parameters["tile"].default
    assert r["probs"] == [1, 1, 1200, 900] and r["finite"]
    assert len(r["shapes"]) > 1 and max(max(s) for s in r["shapes"]) <= tile  # really in tiles
    assert r["naive"] > 500e6  # ~0.8 GB: what a whole-image forward of this model would hold
    assert r["delta"] < r["naive"] / 3, r


def test_pool_scores_are_committed_in_batches_and_reused(zygote, tmp_path):
    from seglearn.app.select import score_items

    batch = inspect.signature(score_items).parameters["batch"].default
    rng = np.random.default_rng(0)
    for i in range(300):
        write_png(tmp_path / "im" / f"im{i:03d}.png",
                  rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    for i in range(4):
        m = np.zeros((32, 32), np.uint8)
        m[8:20, 6 + i:18 + i] = 255
        write_png(tmp_path / "mk" / f"im{i:03d}.png", m)
    ws = tmp_path / "ws"
    for argv in (["init", ws, "--images", tmp_path / "im", "--masks", tmp_path / "mk", *TINY],
                 ["train", ws, "--no-progress"]):
        status, _ = zygote.run(argv, tmp_path / "setup.log")
        assert status == 0, (tmp_path / "setup.log").read_text()
    pool = scalar(ws, "SELECT COUNT(*) FROM items WHERE split = 'pool'")
    assert pool == 296

    def stored() -> int:
        return scalar(ws, "SELECT COUNT(*) FROM scores")

    select = ["select", ws, "--budget", 2, "--no-progress"]
    pid = zygote.start(select, tmp_path / "a.log")
    seen = set()
    deadline = time.monotonic() + 60
    while stored() < 5 * batch and time.monotonic() < deadline:
        seen.add(stored())
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    assert zygote.wait(pid) == -signal.SIGKILL, (tmp_path / "a.log").read_text()
    done = stored()
    seen.add(done)
    assert 0 < done < pool, done  # killed in the middle, with batches already committed
    assert all(n % batch == 0 for n in seen), seen  # whole batches, one transaction each
    assert len(seen - {0}) >= 2  # they appeared one after another, not all at the end
    spy = tmp_path / "b.spy"
    status, _ = zygote.run(select, tmp_path / "b.log", spy)
    assert status == 0, (tmp_path / "b.log").read_text()
    # inference only for the unscored items, plus the suggestion sheet's 2 pictures
    assert len(spy_events(spy, "predict")) == pool - done + 2
    assert stored() == pool
