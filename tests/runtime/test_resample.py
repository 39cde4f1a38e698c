"""The runtime's integer resampling equals training's and torch's resize (oracles: MONAI, torch,
numpy loops with exact fractions)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.transforms import Zoom

from seglearn.runtime.resample import (
    area_downsample_uint8,
    bilinear_scaled,
    bilinear_uint8,
    resize_image_uint8,
    scaled_shape,
)

SHAPES = [((775, 522), 0.5), ((101, 77), 0.3), ((31, 20), 1.7), ((9, 7), 0.5), ((5, 3), 2.0),
          ((64, 48), 0.25), ((3, 5), 0.5)]


@pytest.mark.parametrize("shape, s", SHAPES)
def test_scaled_shape_is_the_training_resize(shape, s):
    x = torch.zeros((1,) + shape)
    z = Zoom(zoom=s, mode="area" if s < 1 else "bilinear", keep_size=False)(x)
    assert tuple(z.shape[1:]) == scaled_shape(*shape, s)


def test_scaled_shape_keeps_one_pixel():
    # MONAI would return a 0-row image here; the runtime keeps at least one row
    assert scaled_shape(1, 3, 0.5) == (1, 1)


def _area_oracle(a: np.ndarray, h: int, w: int) -> np.ndarray:
    """Per-pixel loops: mean of the window [floor(iH/h), ceil((i+1)H/h)), rounded half up."""
    H, W = a.shape[:2]
    out = np.zeros((h, w) + a.shape[2:], np.uint8)
    for i in range(h):
        y0, y1 = (i * H) // h, -(-((i + 1) * H) // h)
        for j in range(w):
            x0, x1 = (j * W) // w, -(-((j + 1) * W) // w)
            win = a[y0:y1, x0:x1].astype(np.int64)
            n = win.shape[0] * win.shape[1]
            out[i, j] = np.floor(win.sum(axis=(0, 1)) / n + 0.5)
    return out


@pytest.mark.parametrize("shape, s", [x for x in SHAPES if x[1] < 1 and x[0][0] < 200])
def test_area_downsample_matches_loops_and_torch(shape, s):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, shape + (3,), dtype=np.uint8)
    h, w = scaled_shape(*shape, s)
    got = area_downsample_uint8(a, h, w)
    np.testing.assert_array_equal(got, _area_oracle(a, h, w))
    t = F.interpolate(torch.from_numpy(a).double().permute(2, 0, 1)[None], size=(h, w), mode="area")
    # torch keeps the exact mean; ours rounds it to uint8
    assert np.abs(got - t[0].permute(1, 2, 0).numpy()).max() <= 0.5 + 1e-9
    # grayscale (2D) arrays work too
    np.testing.assert_array_equal(area_downsample_uint8(a[..., 0], h, w), got[..., 0])


def test_bilinear_scaled_is_exact_on_a_hand_case():
    # 2 -> 4 samples: sources -0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped to index 1)
    v, d = bilinear_scaled(np.array([[0], [8]], np.int32), 4, 1)
    assert d == 8 * 2
    np.testing.assert_array_equal(v[:, 0] * Fraction(1, d), [0, 2, 6, 8])


@pytest.mark.parametrize("src, dst", [((13, 9), (26, 18)), ((13, 9), (40, 11)), ((30, 20), (7, 5)),
                                      ((1, 4), (3, 9))])
def test_bilinear_scaled_matches_torch(src, dst):
    rng = np.random.default_rng(1)
    a = rng.integers(-(2**20), 2**20, src + (2,)).astype(np.int64)
    v, d = bilinear_scaled(a, *dst)
    want = F.interpolate(torch.from_numpy(a).double().permute(2, 0, 1)[None], size=dst,
                         mode="bilinear", align_corners=False)[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(v / d, want, rtol=0, atol=1e-6)
    # the sign (the runtime's decision) is that of the interpolated value
    np.testing.assert_array_equal(v > 0, want > 0)


def test_bilinear_uint8_rounds_torch_bilinear():
    rng = np.random.default_rng(2)
    a = rng.integers(0, 256, (11, 7, 3), dtype=np.uint8)
    got = bilinear_uint8(a, 18, 12)
    want = F.interpolate(torch.from_numpy(a).double().permute(2, 0, 1)[None], size=(18, 12),
                         mode="bilinear", align_corners=False)[0].permute(1, 2, 0).numpy()
    assert np.abs(got - want).max() <= 0.5 + 1e-9


def test_resize_image_dispatch_and_errors():
    a = np.arange(48, dtype=np.uint8).reshape(6, 8)
    assert resize_image_uint8(a, 1.0) is a
    np.testing.assert_array_equal(resize_image_uint8(a, 0.5), area_downsample_uint8(a, 3, 4))
    np.testing.assert_array_equal(resize_image_uint8(a, 1.5), bilinear_uint8(a, 9, 12))
    with pytest.raises(ValueError, match="overflow"):
        bilinear_scaled(np.array([[2**62]], np.int64), 4, 4)
    with pytest.raises(ValueError, match="integer"):
        bilinear_scaled(np.zeros((2, 2)), 4, 4)
    with pytest.raises(ValueError, match="uint8"):
        area_downsample_uint8(np.zeros((4, 4), np.int32), 2, 2)
