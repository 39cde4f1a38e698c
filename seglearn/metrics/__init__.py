"""Evaluation metrics: GlaS object metrics (F1, Dice, Hausdorff) and pixel metrics.

numpy/scipy only (no torch), so the integer runtime and post-processing can use them.
"""

from seglearn.metrics.glas import (
    glas_metrics,
    hausdorff_distance,
    object_dice,
    object_f1,
    object_hausdorff,
)
from seglearn.metrics.pixel import (
    pixel_counts,
    pixel_dice,
    pixel_dice_pooled,
    pixel_iou,
    pixel_iou_pooled,
    pixel_metrics,
)

__all__ = [
    "glas_metrics",
    "hausdorff_distance",
    "object_dice",
    "object_f1",
    "object_hausdorff",
    "pixel_counts",
    "pixel_dice",
    "pixel_dice_pooled",
    "pixel_iou",
    "pixel_iou_pooled",
    "pixel_metrics",
]
