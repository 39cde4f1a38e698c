"""Memory of a whole-slide pool: peak RSS of `init --slides` and of reading every tile once.

    python bench/slides.py --json bench/results/slides.json [--size 20000] [--tile 512]

A synthetic 20,000 x 20,000 px RGB slide (1.2 GB of pixels at level 0; tissue rectangles on
white, ``seglearn.data.slides.write_synthetic_slide``) is written to a temp folder as a tiled
(512 px), zlib-compressed pyramidal TIFF, tile by tile from an iterator, so it never exists in
memory. A 2,048 px slide of the same layout is the baseline: the same code and imports (init
loads torch through the config's scheme checks), 1% of the pixels. Each step runs in a fresh child
process (``ru_maxrss`` is per process):

  write            writing both slides
  init, init_small ``seglearn.app.init.init_workspace(WS, slides=DIR, tile=512)`` (tissue mask
                   from the lowest level, the slide hashed, one item per tissue tile)
  read_all, ...    every pool item's image read once through ``app.images.item_image``

The claim checked: neither step holds the slide (1.2 GB) in memory: the big slide's peak RSS is
within a few tens of MB of the small one's.
"""

from __future__ import annotations

import os
import sys

# First: bench/select.py would shadow the standard library's `select` (which subprocess imports).
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402


SMALL = 2048  # px a side of the baseline slide


def rects(size: int) -> list[tuple[int, int, int, int]]:
    """Tissue: a 10 x 10 grid of blocks, each 60% of its cell a side (about a third tissue)."""
    cell = size // 10
    side = int(cell * 0.6)
    return [(i * cell + cell // 5, j * cell + cell // 5, i * cell + cell // 5 + side,
             j * cell + cell // 5 + side) for j in range(10) for i in range(10)]


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def child(step: str, slide_dir: str, ws: str, size: int, tile: int) -> dict:
    """One measured step, run in this (fresh) process."""
    t0 = time.perf_counter()
    from seglearn.app.images import item_image
    from seglearn.app.init import init_workspace
    from seglearn.config import load_config
    from seglearn.data import slides as S
    from seglearn.store import Workspace

    # What init and the reads load anyway (tiffslide + zarr, scikit-image's Otsu, rich), so the
    # baseline holds them too and the steps' excess is the data.
    import rich.progress  # noqa: F401
    import skimage.filters  # noqa: F401
    import tiffslide  # noqa: F401

    out: dict = {}
    small = step.endswith("_small")
    folder, ws = (Path(slide_dir) / "small", ws + "-small") if small else (Path(slide_dir) / "big", ws)
    if step == "write":
        for name, px in (("big", size), ("small", SMALL)):
            (Path(slide_dir) / name).mkdir()
            path = S.write_synthetic_slide(Path(slide_dir) / name / f"{name}.tif", px, px,
                                           rects(px), levels=6 if px >= 8192 else 3, tile=512)
            out[f"{name}_file_mb"] = round(path.stat().st_size / 2**20, 1)
    elif step.startswith("init"):
        ws_ = init_workspace(ws, load_config(None, []), slides=folder, tile=tile,
                             progress=False)
        out["items"] = len(ws_.items())
        out["slide"] = ws_.meta("slides")
        ws_.close()
    elif step.startswith("read_all"):
        with Workspace.open(ws) as w:
            n, checksum = 0, 0
            for it in w.items():
                img = item_image(w, it)
                n += 1
                checksum += int(img[::64, ::64].sum())
        out["tiles_read"], out["checksum"] = n, checksum
    out["seconds"] = round(time.perf_counter() - t0, 2)
    out["peak_rss_mb"] = round(_peak_mb(), 1)
    return out


def run_child(step: str, slide_dir: Path, ws: Path, size: int, tile: int) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", step, "--slide-dir",
           str(slide_dir), "--ws", str(ws), "--size", str(size), "--tile", str(tile)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise SystemExit(f"step {step} failed:\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=20000)
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--child", default=None)
    ap.add_argument("--slide-dir", default=None)
    ap.add_argument("--ws", default=None)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.slide_dir, args.ws, args.size, args.tile)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        slide_dir, ws = Path(tmp) / "slides", Path(tmp) / "ws"
        slide_dir.mkdir()
        steps = {s: run_child(s, slide_dir, ws, args.size, args.tile)
                 for s in ("write", "init_small", "init", "read_all_small", "read_all")}
    result = {
        "bench": "slides", "slide_px": [args.size, args.size], "tile": args.tile,
        "level0_pixels_mb": round(args.size * args.size * 3 / 2**20, 1), "small_px": SMALL,
        "excess_rss_mb": {k: round(steps[k]["peak_rss_mb"] - steps[f"{k}_small"]["peak_rss_mb"], 1)
                          for k in ("init", "read_all")},
        "steps": steps, "python": platform.python_version(), "machine": platform.machine(),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
