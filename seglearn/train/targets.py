"""Training targets from instance labels: foreground and instance-contour maps (numpy/scipy only).

The contour-aware FCN (DCAN, Chen et al. CVPR 2016; used by Yang et al. MICCAI 2017 for GlaS)
learns a second map, each gland's boundary, so touching glands can be separated at inference
(see seglearn.postprocess). The contour target of instance k is its *inner* boundary band:

    band_k = { p in instance k : EDT_k(p) <= width },

``EDT_k(p)`` the Euclidean distance from p to the nearest pixel *not* labelled k (background or
another instance). A pixel 4-adjacent to the outside has distance 1, so ``width=1`` is the one-pixel
inner boundary and ``width=w`` a band w pixels deep. Where two instances touch, both inner bands are
marked, so the shared border is a band 2*width wide that cuts one object from the other. The image
border is not a boundary (a gland cut by the field of view has no contour there): pixels outside the
image are not "outside the instance".
"""

from __future__ import annotations

import numbers

import numpy as np
from scipy import ndimage

__all__ = ["contour_targets", "fg_targets"]


def _check_instances(instances) -> np.ndarray:
    a = np.asarray(instances)
    if a.ndim != 2:
        raise ValueError(f"instances must be a 2D label array, got shape {a.shape}")
    if a.dtype == bool:
        return a.astype(np.uint8)
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"instances must have an integer dtype (instance labels), got {a.dtype}")
    if a.size and a.min() < 0:
        raise ValueError("instances has negative labels; 0 is background and objects are 1..N")
    return a


def fg_targets(instances) -> np.ndarray:
    """Binary foreground target: uint8 (H, W), 1 where ``instances > 0``."""
    return (_check_instances(instances) > 0).astype(np.uint8)


def contour_targets(instances, width: int = 3) -> np.ndarray:
    """Inner contour band of every instance (see module doc): uint8 (H, W) of 0/1."""
    a = _check_instances(instances)
    if isinstance(width, bool) or not isinstance(width, numbers.Integral) or width < 1:
        raise ValueError(f"width must be a positive integer, got {width!r}")
    out = np.zeros(a.shape, np.uint8)
    h, w = a.shape
    for k, box in enumerate(ndimage.find_objects(a), start=1):
        if box is None:
            continue
        # Pad the box by one pixel where the image allows: that ring holds only non-k pixels, and
        # the nearest non-k pixel of any pixel of k is never farther than the ring, so a cropped EDT
        # equals the full-image one. At the image border no padding: the border is not a boundary.
        r0, r1 = max(box[0].start - 1, 0), min(box[0].stop + 1, h)
        c0, c1 = max(box[1].start - 1, 0), min(box[1].stop + 1, w)
        obj = a[r0:r1, c0:c1] == k
        if obj.all():
            continue  # only possible when the instance covers the whole image: it has no boundary
        band = obj & (ndimage.distance_transform_edt(obj) <= width)
        out[r0:r1, c0:c1] |= band.astype(np.uint8)
    return out
