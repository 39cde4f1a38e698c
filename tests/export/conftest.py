"""Shared tiny models and synthetic discs for the export tests (module-scoped: numba compiles once)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

# 2 shared cores: torch's default 2 intra-op threads oversubscribe them (5x slower here)
torch.set_num_threads(1)


def discs(n: int, h: int = 32, w: int = 48, seed: int = 0):
    """uint8 (H, W, 3) images of bright discs on a noisy background, and their boolean masks."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    imgs, masks = [], []
    for _ in range(n):
        m = np.zeros((h, w), bool)
        for _ in range(3):
            cy, cx, r = rng.integers(4, h - 4), rng.integers(4, w - 4), rng.integers(3, 8)
            m |= (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        img = rng.normal(60, 20, (h, w, 3)) + m[..., None] * np.array([120, 60, 90])
        imgs.append(img.clip(0, 255).astype(np.uint8))
        masks.append(m)
    return imgs, masks


def to_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float()[None] / 255.0


def train_briefly(model: torch.nn.Module, imgs, masks, steps: int = 12, seed: int = 0,
                  callbacks=()) -> torch.nn.Module:
    """A few Adam steps of BCE on the discs: non-trivial BN statistics and quantizer state.
    ``callbacks`` (seglearn.train.callbacks protocol, e.g. a scheme's schedule) run as in ``fit``."""
    torch.manual_seed(seed)
    x = torch.cat([to_tensor(i) for i in imgs])
    y = torch.from_numpy(np.stack(masks)).float()[:, None]
    y = y.expand(-1, getattr(model, "out_channels", 1), -1, -1)  # contour head: same target, fine
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], 1e-2)
    for cb in callbacks:
        cb.on_train_start(model, steps)
    model.train()
    for step in range(steps):
        for cb in callbacks:
            cb.before_step(model, step, steps)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        for cb in callbacks:
            cb.after_step(model, step, steps)
    for cb in callbacks:
        cb.on_train_end(model)
    return model.eval()


def torch_foreground(model, img: np.ndarray) -> np.ndarray:
    """The fake-quant model's foreground (sigmoid > 0.5, i.e. logit > 0), eval mode, float32."""
    with torch.no_grad():
        return model(to_tensor(img))[0, 0].numpy() > 0


@pytest.fixture(scope="module")
def data():
    return discs(8, seed=1)
