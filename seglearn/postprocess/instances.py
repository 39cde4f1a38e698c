"""Instance-aware segmentation: probability maps -> an instance-label image.

Contour-aware route (DCAN, Chen et al. CVPR 2016; the suggestive-annotation FCN of Yang et al.
MICCAI 2017 predicts glands and their contours the same way), for ``fg_prob`` and ``contour_prob``:

1. foreground ``F = fg > fg_threshold``;
2. seeds = 8-connected components of ``F & ~(contour > contour_threshold)``: cutting the contour band
   out of the foreground separates touching glands; seeds under ``seed_min_area`` pixels are dropped
   (noise, slivers of the band);
3. seeds grow back into ``F``: by marker watershed on the contour probability (the split between two
   glands follows the contour ridge), or, with ``watershed=False``, by geodesic dilation (3x3 steps
   inside ``F``, contested pixels take the larger label); foreground components that hold no seed at
   all (a gland covered entirely by its contour band) are kept whole as their own object;
4. objects under ``min_area`` pixels are removed, then each object's holes are filled (background
   pixels enclosed by that object only, so a nested object is never overwritten);
5. labels are renumbered 1..N (int32).

Without a contour map (or ``use_contour=False``) step 2-3 become the 8-connected components of F,
optionally split by a distance-transform watershed (``split_touching``): markers are the h-maxima
(height ``split_h`` pixels) of the Euclidean distance to the background, flooding ``-distance``.

Foreground only, ``mode="semantic"`` (thin structures: vessels, neurites, whose "objects" are
trees and whose holes, the background between vessels, are background; DRIVE, Staal et al. 2004):

1. foreground ``F = fg > fg_threshold``;
2. objects = the 8-connected components of F (no contour cut, no splitting: the contour map,
   ``split_touching`` and the seed and growth settings are ignored);
3. components under ``min_area`` pixels are removed (no hole filling: ``fill_holes`` is ignored);
4. labels are renumbered 1..N (int32).

numpy, scipy.ndimage and numba only (``flood``): the integer runtime reuses this module without
torch or scikit-image.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

# scikit-image's watershed and h_maxima, ported to numba (equal results): the runtime post-processes
# with this module and installs without scikit-image
from seglearn.postprocess.flood import enclosed as _enclosed
from seglearn.postprocess.flood import fill_enclosed as _fill_enclosed
from seglearn.postprocess.flood import h_maxima
from seglearn.postprocess.flood import watershed as _watershed

from seglearn.config import PostprocessConfig

__all__ = ["PostprocessConfig", "PostprocessParams", "instances_from_probs", "remove_small",
           "fill_holes", "relabel"]

_EIGHT = np.ones((3, 3), bool)


# The one post-processing parameter type is the config's section (one set of defaults and checks);
# PostprocessParams stays importable under its old name, as the same class.
PostprocessParams = PostprocessConfig


# ----------------------------------------------------------------------------- label helpers


def relabel(labels: np.ndarray) -> np.ndarray:
    """Renumber the positive labels present to 1..N, keeping their order; int32."""
    labels = np.asarray(labels)
    top = int(labels.max()) if labels.size else 0
    if top == 0:
        return np.zeros(labels.shape, np.int32)
    present = np.bincount(labels.ravel(), minlength=top + 1) > 0
    present[0] = False
    lut = np.zeros(top + 1, np.int32)
    lut[present] = np.arange(1, int(present.sum()) + 1, dtype=np.int32)
    return lut[labels]


def remove_small(labels: np.ndarray, min_area: int) -> np.ndarray:
    """Zero every object with fewer than ``min_area`` pixels (returns a new array)."""
    labels = np.asarray(labels)
    if min_area <= 0 or labels.size == 0:
        return labels.copy()
    small = np.bincount(labels.ravel()) < min_area
    small[0] = False
    return np.where(small[labels], 0, labels)


def fill_holes(labels: np.ndarray) -> np.ndarray:
    """Fill each object's holes (background enclosed by it) with its label; other objects untouched.

    Object k's holes are the pixels outside k whose 4-connected component of ``labels != k`` does
    not reach the image border (``scipy.ndimage.binary_fill_holes``'s definition); of those, the
    background ones take label k. Objects are visited in label order, so a background pixel
    enclosed by several objects (nested rings) takes the smallest label.

    Only background enclosed by *something* can be a hole, so the work is limited to the objects
    whose bounding box holds a background component that does not reach the border (most objects
    of a segmentation have none), and each hole test is one flood from the box's edge
    (``flood.fill_enclosed``, numba) instead of ``binary_fill_holes``' iterated dilation (the same
    pixels: ``tests/postprocess``).
    """
    out = np.array(labels, copy=True)
    if out.size == 0 or not out.any():
        return out
    if out.min() < 0:
        raise ValueError("fill_holes needs non-negative labels")
    return _fill_holes_in(out, _enclosed(out == 0))


def _fill_holes_in(out: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """:func:`fill_holes` of ``out`` in place, given ``inner = _enclosed(out == 0)`` (the background
    pixels enclosed by some objects; the tuning search computes it anyway)."""
    if not inner.any():
        return out
    return _fill_enclosed(out, inner)


# ----------------------------------------------------------------------------- the pipeline


def _check_prob(a, what: str, shape: tuple | None = None) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 2:
        raise ValueError(f"{what} must be a 2D (H, W) probability map, got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"{what} must be a float probability map, got dtype {a.dtype}")
    if shape is not None and a.shape != shape:
        raise ValueError(f"{what} shape {a.shape} != fg_prob shape {shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{what} contains NaN or inf")
    return a


def _components(mask: np.ndarray) -> np.ndarray:
    return ndimage.label(mask, structure=_EIGHT)[0]


def _geodesic_grow(seeds: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Grow seed labels into ``mask`` one 3x3 step at a time until nothing changes."""
    lab = seeds.copy()
    while True:
        grown = ndimage.grey_dilation(lab, footprint=_EIGHT)
        new = (lab == 0) & mask & (grown > 0)
        if not new.any():
            return lab
        lab[new] = grown[new]


def _grow(seeds: np.ndarray, mask: np.ndarray, elevation: np.ndarray, use_watershed: bool) -> np.ndarray:
    """Seeds -> objects covering ``mask``; seedless components of ``mask`` become objects of their own."""
    if seeds.any():
        if use_watershed:
            lab = _watershed(elevation, markers=seeds, mask=mask)
        else:
            lab = _geodesic_grow(seeds, mask)
    else:
        lab = np.zeros(mask.shape, np.int64)
    lab = lab.astype(np.int64)
    orphan = mask & (lab == 0)
    if orphan.any():
        # Pixels the seeds could not reach form their own components; keep them as objects.
        comp = _components(orphan)
        lab[orphan] = comp[orphan] + int(lab.max())
    return lab


def _raw_instances(fg: np.ndarray, contour: np.ndarray | None, p: PostprocessConfig) -> np.ndarray:
    """Steps 1-3 (everything before the min-area filter, hole filling and relabelling)."""
    fg_mask = fg > p.fg_threshold
    if p.mode == "semantic":  # foreground only: its components, nothing cut or split
        return _components(fg_mask)
    if contour is not None and p.use_contour:
        core = fg_mask & ~(contour > p.contour_threshold)
        seeds = remove_small(_components(core), p.seed_min_area)
        return _grow(seeds, fg_mask, contour, p.watershed)
    lab = _components(fg_mask)
    if p.split_touching and fg_mask.any():
        dist = ndimage.distance_transform_edt(fg_mask)
        markers = _components(h_maxima(dist, p.split_h).astype(bool) & fg_mask)
        lab = _grow(markers, fg_mask, -dist, p.watershed)
    return lab


def _finish(lab: np.ndarray, p: PostprocessConfig) -> np.ndarray:
    """Steps 4-5: min-area filter, hole filling (instances mode only), renumbering."""
    lab = remove_small(lab, p.min_area)
    if p.fill_holes and p.mode != "semantic":
        lab = fill_holes(lab)
    return relabel(lab)


def instances_from_probs(
    fg_prob: np.ndarray,
    contour_prob: np.ndarray | None = None,
    params: PostprocessConfig | None = None,
) -> np.ndarray:
    """Instance labels (H, W) int32, 0 = background, objects 1..N, from probability maps.

    ``fg_prob``: (H, W) float foreground probability; ``contour_prob``: (H, W) float contour
    probability or None; ``params``: :class:`seglearn.config.PostprocessConfig` (defaults if None). See the module
    docstring for the steps.
    """
    p = PostprocessConfig() if params is None else params
    if not isinstance(p, PostprocessConfig):
        raise ValueError(f"params must be a PostprocessConfig (PostprocessParams), got "
                         f"{type(p).__name__}")
    fg = _check_prob(fg_prob, "fg_prob")
    contour = None if contour_prob is None else _check_prob(contour_prob, "contour_prob", fg.shape)
    return _finish(_raw_instances(fg, contour, p), p)
