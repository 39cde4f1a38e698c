"""Training crops fit the resized images: no crop larger than the images it is cut from (those
were zero-padded: three quarters of a 128 px crop of a 64 px image), and data.crop elsewhere."""

import numpy as np
import pytest

from seglearn.app.samples import fitted_crop, make_batches
from seglearn.config import load_config


def _samples(shapes):
    return [{"image": np.zeros(s + (3,), np.uint8), "label": np.zeros(s, np.int32)} for s in shapes]


@pytest.mark.parametrize("crop,shapes,scale,multiple,want", [
    (128, [(128, 128)], 1.0, 8, 128),             # fits: data.crop
    (128, [(128, 128)], 0.5, 8, 64),              # the demo's ensemble at 0.5
    (128, [(300, 140), (200, 500)], 0.5, 8, 64),  # the smallest side over the pool: 140 -> 70 -> 64
    (128, [(522, 775)], 0.5, 8, 128),             # GlaS at half resolution keeps the crop
    (96, [(131, 131)], 0.5, 16, 64),              # 65 px: down to the network's multiple
    (64, [(20, 20)], 0.5, 16, 16),                # never below the multiple (padded to it)
])
def test_fitted_crop_against_hand_computed_sides(crop, shapes, scale, multiple, want):
    assert fitted_crop(crop, _samples(shapes), scale, multiple) == want


def test_batches_of_small_images_are_cut_at_their_size_not_padded():
    """64 px images at scale 0.5 with data.crop 64: 32 px crops of 32 px images, every pixel
    an image pixel (the images are all white: a padded crop would hold zeros)."""
    cfg = load_config(None, ["data.crop=64", "data.batch_size=2", "model.depth=3"])
    samples = [{"image": np.full((64, 64, 3), 255, np.uint8), "label": np.ones((64, 64), np.int32)}
               for _ in range(3)]
    batch = next(iter(make_batches(samples, cfg, seed=0, scale=0.5)))
    assert tuple(batch["image"].shape) == (2, 3, 32, 32)
    assert float(batch["image"].min()) > 0.5       # colour jitter moves white, never to padding 0
    full = next(iter(make_batches(samples, cfg, seed=0, scale=1.0)))
    assert tuple(full["image"].shape) == (2, 3, 64, 64)
