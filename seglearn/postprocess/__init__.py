"""Post-processing: probability maps -> gland instances, and its tuning on a validation split.

numpy, scipy.ndimage and numba only: the integer-only runtime imports this package without torch
or scikit-image.
"""

from seglearn.postprocess.instances import (
    PostprocessConfig,
    PostprocessParams,
    fill_holes,
    instances_from_probs,
    relabel,
    remove_small,
)
from seglearn.postprocess.tuning import DEFAULT_GRID, tune_postprocess

__all__ = [
    "DEFAULT_GRID",
    "PostprocessConfig",
    "PostprocessParams",
    "fill_holes",
    "instances_from_probs",
    "relabel",
    "remove_small",
    "tune_postprocess",
]
