"""Load a workspace's images and visible labels into training samples, and make batch iterables.

Only visible labels are ever read here: the hidden oracle masks of unlabeled pool items are not
(they are the simulation's oracle, see app.label).
"""

from __future__ import annotations

import monai
import numpy as np
import torch
from torch.utils.data import DataLoader

from seglearn.app.images import item_image
from seglearn.config import Config
from seglearn.data import SegDataset, train_transforms


def load_samples(ws, items) -> list[dict]:
    """dict(name, image uint8 (H, W, 3), label int32 instances (H, W)) for labeled items."""
    out = []
    for it in items:
        if it.label is None:
            raise ValueError(f"item {it.name} has no visible label; it cannot be used for training")
        out.append({"name": it.name, "image": item_image(ws, it),
                    "label": ws.read_label(it).astype(np.int32)})
    return out


def bootstrap(samples: list[dict], rng: np.random.Generator) -> list[dict]:
    """A bootstrap resample (n draws with replacement), as each suggestive FCN gets (Yang 2017)."""
    idx = rng.integers(0, len(samples), size=len(samples))
    return [samples[i] for i in idx]


def make_batches(samples: list[dict], cfg: Config, seed: int,
                 scale: float | None = None) -> DataLoader:
    """An infinite-friendly DataLoader of dict(image (B,3,h,w), target (B,C,h,w)) random crops.

    Images are resized by ``scale`` (default ``data.scale``; the suggestive ensemble's is
    ``config.role_scale(cfg, "suggestive")``) before crops of ``fitted_crop`` px are taken:
    ``data.crop``, or less where the resized images are smaller.
    """
    # Plain tensors instead of MetaTensors: the metadata is unused here and its bookkeeping cost
    # more than the augmentations themselves (about 2x per batch measured on 128x128 crops).
    monai.data.set_track_meta(False)
    targets = ("fg", "contour") if cfg.model.contour_head else ("fg",)
    scale = cfg.data.scale if scale is None else scale
    crop = fitted_crop(cfg.data.crop, samples, scale, 2 ** max(cfg.model.depth - 1, 0))
    tf = train_transforms(crop, scale=scale, targets=targets,
                          contour_width=cfg.data.contour_width, augment=cfg.data.augment)
    tf.set_random_state(seed)
    ds = SegDataset([{"image": s["image"], "label": s["label"]} for s in samples], tf,
                    cache=cfg.data.cache)
    g = torch.Generator()
    g.manual_seed(seed)
    bs = min(cfg.data.batch_size, max(1, len(samples)))
    workers = cfg.data.workers
    return DataLoader(ds, batch_size=bs, shuffle=True, drop_last=len(samples) >= bs,
                      num_workers=workers, generator=g, collate_fn=_collate,
                      persistent_workers=workers > 0)


def fitted_crop(crop: int, samples: list[dict], scale: float, multiple: int) -> int:
    """The training crop side: ``crop``, or the smallest resized image side ``floor(scale *
    min(h, w))`` rounded down to a multiple of ``multiple`` (the network's input multiple) where
    that is smaller, and not below ``multiple``.

    Why: a crop larger than an image is filled with zeros (``train_transforms`` pads), so 128 px
    crops of the suggestive ensemble's 64 px images at ``ensemble.scale`` 0.5 were three
    quarters padding: four times the compute of the image, spent teaching the members that black
    borders are background. ``min(h, w)`` because the crops are taken after a random 90-degree
    rotation. Images of one pool smaller than ``multiple`` are still padded to it."""
    if not samples:
        return int(crop)
    side = min(min(np.asarray(s["image"]).shape[:2]) for s in samples)
    fit = int(np.floor(side * float(scale) + 1e-9)) // multiple * multiple
    return int(min(int(crop), max(fit, multiple)))


def _collate(items: list[dict]) -> dict:
    image = torch.stack([torch.as_tensor(np.asarray(i["image"])) for i in items]).float()
    target = torch.stack([torch.as_tensor(np.asarray(i["label"])) for i in items]).float()
    return {"image": image, "target": target}
