"""One resampling rule for training, torch inference and the integer runtime (numpy only).

A model trained at ``data.scale`` s sees images resized to ``scaled_shape(H, W, s)``
``= (max(1, floor(H s)), max(1, floor(W s)))`` (what MONAI's ``Zoom(keep_size=False)`` produces):

* down (s < 1) by **area averaging**, torch's ``interpolate(mode="area")`` = adaptive average
  pooling: output row i averages input rows ``[floor(i H / h), ceil((i + 1) H / h))`` (columns
  likewise). Training uses it (``seglearn.data.transforms``); so do ``seglearn.models.infer`` and the
  runtime, which computes the window sums in int64 and rounds the mean to uint8,
  ``(2 sum + n) // (2 n)``;
* up (s > 1), and the way back from the network's resolution to the image's, by **bilinear
  interpolation** with ``align_corners=False``: the source coordinate of output i is
  ``max(0, (i + 1/2) n_in / n_out - 1/2) = max(0, (2 i + 1) n_in - n_out) / (2 n_out)``, a rational
  number, so ``bilinear_scaled`` returns the interpolated values times the common denominator
  ``D = (2 h_out)(2 w_out)`` exactly, in int64.

Why the runtime upsamples *accumulators*, not labels: torch's route upsamples the logits
bilinearly and post-processes at the image's resolution. The head's logit is affine in the int32
accumulator (``A acc + B``) and bilinear weights sum to one, so thresholding the interpolated
logit equals comparing the interpolated margin ``d (acc - T)`` with 0, which ``bilinear_scaled``
gives exactly (its sign does not depend on D). Both routes then post-process the same map at the
same resolution with the same areas.
"""

from __future__ import annotations

import math

import numpy as np


def scaled_shape(h: int, w: int, scale: float) -> tuple[int, int]:
    """``(max(1, floor(h s)), max(1, floor(w s)))``: the network's input size at ``data.scale`` s."""
    s = float(scale)
    return max(1, int(math.floor(h * s))), max(1, int(math.floor(w * s)))


def _area_windows(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray]:
    i = np.arange(n_out, dtype=np.int64)
    return (i * n_in) // n_out, -((-(i + 1) * n_in) // n_out)  # floor, ceil


def area_downsample_uint8(a: np.ndarray, h: int, w: int) -> np.ndarray:
    """Area (adaptive-average) resize of a uint8 (H, W[, C]) array to (h, w), integer arithmetic."""
    if a.dtype != np.uint8:
        raise ValueError(f"area_downsample_uint8 needs uint8, got {a.dtype}")
    H, W = a.shape[:2]
    # integral image with a zero row/column in front: window sums are four lookups
    ii = np.zeros((H + 1, W + 1) + a.shape[2:], np.int64)
    ii[1:, 1:] = a.astype(np.int64).cumsum(0).cumsum(1)
    y0, y1 = _area_windows(h, H)
    x0, x1 = _area_windows(w, W)
    s = (ii[y1][:, x1] - ii[y0][:, x1] - ii[y1][:, x0] + ii[y0][:, x0])
    n = ((y1 - y0)[:, None] * (x1 - x0)[None, :]).reshape((h, w) + (1,) * (a.ndim - 2))
    return ((2 * s + n) // (2 * n)).astype(np.uint8)


def _bilinear_taps(n_out: int, n_in: int):
    """Source indices i0, i1 and integer weights (den - f, f) over ``den = 2 n_out`` per output."""
    num = np.maximum((2 * np.arange(n_out, dtype=np.int64) + 1) * n_in - n_out, 0)
    den = 2 * n_out
    i0 = num // den
    f = num - i0 * den
    return i0, np.minimum(i0 + 1, n_in - 1), den - f, f, den


def bilinear_scaled(a: np.ndarray, h: int, w: int) -> tuple[np.ndarray, int]:
    """Bilinear resize (align_corners=False) of an integer (H, W[, C]) array to (h, w).

    Returns ``(v, D)`` with ``v`` int64 equal to ``D`` times the interpolated values, exactly.
    """
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"bilinear_scaled needs an integer array, got {a.dtype}")
    H, W = a.shape[:2]
    yi0, yi1, wy0, wy1, dy = _bilinear_taps(h, H)
    xi0, xi1, wx0, wx1, dx = _bilinear_taps(w, W)
    big = int(np.abs(a).max(initial=0)) * dy * dx
    if big >= 2**62:
        raise ValueError(f"bilinear_scaled: values up to {big} overflow int64")
    a = a.astype(np.int64)
    extra = (1,) * (a.ndim - 2)
    t = a[yi0] * wy0.reshape((h, 1) + extra) + a[yi1] * wy1.reshape((h, 1) + extra)
    v = t[:, xi0] * wx0.reshape((1, w) + extra) + t[:, xi1] * wx1.reshape((1, w) + extra)
    return v, dy * dx


def bilinear_uint8(a: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear resize of a uint8 array, rounded half up to uint8 (the runtime's upscaling input)."""
    v, d = bilinear_scaled(a, h, w)
    return ((2 * v + d) // (2 * d)).astype(np.uint8)


def resize_image_uint8(a: np.ndarray, scale: float) -> np.ndarray:
    """A uint8 (H, W[, C]) image at ``data.scale``: area down, bilinear up, unchanged at 1."""
    h, w = scaled_shape(a.shape[0], a.shape[1], scale)
    if (h, w) == a.shape[:2]:
        return a
    return area_downsample_uint8(a, h, w) if scale < 1 else bilinear_uint8(a, h, w)
