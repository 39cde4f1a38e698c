"""A tiny exported .slq and a PNG for the deploy-path tests, made in the test process (which has
torch): a width-4 FCN with a contour head, INQ power-of-two weights and SYQ activations, trained
a few steps on bright discs so that it finds objects, then exported."""

from __future__ import annotations

from pathlib import Path

import numpy as np

BLOCKED = ("torch", "skimage", "monai", "sklearn", "yaml")  # none is a runtime requirement

# A meta-path finder that refuses the packages the runtime must not need (source for subprocesses).
BLOCKER = f"""
import importlib.abc, sys

class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ImportError(name + " is blocked: the runtime must not need it")
        return None

sys.meta_path.insert(0, _Block())
"""


def discs(h: int = 40, w: int = 56, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A uint8 (H, W, 3) image of bright discs on a noisy background and its boolean mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    m = np.zeros((h, w), bool)
    for _ in range(4):
        cy, cx, r = rng.integers(6, h - 6), rng.integers(6, w - 6), rng.integers(4, 8)
        m |= (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
    img = rng.normal(60, 20, (h, w, 3)) + m[..., None] * np.array([120, 60, 90])
    return img.clip(0, 255).astype(np.uint8), m


def write_tiny_slq(path: Path, steps: int = 30) -> Path:
    """Train and export the tiny model to ``path`` (a few seconds on one thread)."""
    import torch

    from seglearn.export import export_model
    from seglearn.postprocess import PostprocessParams
    from seglearn.models.fcn import FCN
    from seglearn.quant.convert import quantize_model

    torch.set_num_threads(1)
    torch.manual_seed(0)
    data = [discs(seed=s) for s in range(4)]
    x = torch.from_numpy(np.stack([i for i, _ in data]).transpose(0, 3, 1, 2).copy()).float() / 255.0
    y = torch.from_numpy(np.stack([m for _, m in data])).float()[:, None].expand(-1, 2, -1, -1)
    model = quantize_model(FCN(3, width=4, depth=2, contour_head=True), {"weight": "inq", "act": "syq"})
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], 1e-2)
    model.train()
    for _ in range(steps):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    export_model(model.eval(), path, postprocess=PostprocessParams(min_area=5, seed_min_area=2))
    return path


def write_png(path: Path, seed: int = 7) -> np.ndarray:
    """An RGB PNG of discs (odd sides: the runtime pads and crops); returns its pixels."""
    from PIL import Image

    img = discs(45, 61, seed)[0]
    Image.fromarray(img).save(path)
    return img
