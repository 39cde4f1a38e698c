"""Are the ground truth's instances blob-like (glands, nuclei) or thin (vessels, fibres)?

Object metrics (GlaS F1, object Dice, object Hausdorff; Sirinukunwattana et al. 2017) match
predicted and true *objects*; for a vessel tree, one connected component across the image, that
matching says nothing, and thin structures are scored per pixel (DRIVE: Staal et al. 2004).
``evaluate.metrics: auto`` picks between the two from the masks with one scale-free number per
instance, its elongation:

    elongation = A / (2 r)^2

with A the instance's area and r the radius of the largest disc inside it (the maximum of the
Euclidean distance transform, scipy.ndimage.distance_transform_edt). A disc gives pi/4 = 0.785, a
square 1, a ribbon of length l and width w about l / w (its aspect ratio), and a branching tree
adds all its branches to A while r stays half the widest vessel. The summary is the area-weighted
median over all instances of all masks (the elongation of the instance holding the median
foreground pixel), so a vessel mask's many small fragments do not outvote its tree.

Threshold ``THIN_ELONGATION = 10``: thin = the typical instance is ten times longer than wide.
Measured (seglearn 2026-12): GlaS annotations per image 0.93-5.95 (85 train + 60 testA images;
median 1.7; pooled 1.9), seglearn's synthetic glands < 1.5; 128 x 128 synthetic vessel trees with
vessels 3-7 px wide 29-67, and a DRIVE-like retinal tree is above that. A skeleton-length measure
(L^2 / A) was tried first and rejected: the spurs of irregular malignant glands made single GlaS
images reach 68.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

THIN_ELONGATION = 10.0
KINDS = ("auto", "objects", "pixels")


def elongations(instances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(elongation A / (2 r)^2, area A) of every instance of an int (H, W) label image."""
    # lazy: scikit-image, only when shapes are measured (seglearn.metrics imports without it)
    from skimage.measure import regionprops

    el, area = [], []
    for r in regionprops(np.asarray(instances, dtype=np.int64)):
        # padded: the instance's bounding box edge is not its boundary unless the image ends there
        radius = float(ndi.distance_transform_edt(np.pad(r.image, 1)).max())
        el.append(r.area / (2.0 * radius) ** 2)
        area.append(r.area)
    return np.asarray(el, float), np.asarray(area, float)


def median_elongation(masks: list[np.ndarray]) -> float:
    """The area-weighted median elongation over every instance of ``masks`` (0.0 if none)."""
    pairs = [elongations(m) for m in masks]
    el = np.concatenate([p[0] for p in pairs]) if pairs else np.zeros(0)
    area = np.concatenate([p[1] for p in pairs]) if pairs else np.zeros(0)
    if el.size == 0:
        return 0.0
    order = np.argsort(el, kind="stable")
    cum = np.cumsum(area[order])
    return float(el[order][np.searchsorted(cum, cum[-1] / 2.0)])


def metrics_kind(setting: str, masks: list[np.ndarray]) -> tuple[str, float | None]:
    """("objects" | "pixels", the median elongation when ``setting`` is "auto", else None)."""
    if setting not in KINDS:
        raise ValueError(f"evaluate.metrics must be one of {', '.join(KINDS)}, not {setting!r}")
    if setting != "auto":
        return setting, None
    med = median_elongation(masks)
    return ("pixels" if med > THIN_ELONGATION else "objects"), med
