"""Data: image/mask IO, importers (GlaS, folders), the synthetic gland generator, MONAI pipelines.

Transforms and SegDataset import torch/MONAI; they load lazily so that ``seglearn.data`` itself (IO,
importers, synthetic data) stays importable where only numpy is needed.
"""

import importlib

from seglearn.data.errors import DataError, display_name, display_path
from seglearn.data.importers import IMAGE_SUFFIXES, SourceImage, scan_folders, scan_glas
from seglearn.data.io import instances_from_mask, read_image, read_image_info, read_mask, write_mask
from seglearn.data.synthetic import SYNTHETIC_KINDS, make_synthetic, synth_image, synth_vessels

_LAZY = {
    "SegDataset": "seglearn.data.dataset",
    "train_transforms": "seglearn.data.transforms",
    "eval_transforms": "seglearn.data.transforms",
    "contour_band": "seglearn.data.transforms",
    "pad_to_multiple": "seglearn.data.transforms",
    "crop_to": "seglearn.data.transforms",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'seglearn.data' has no attribute {name!r}")


__all__ = [
    "DataError", "display_name", "display_path", "IMAGE_SUFFIXES", "SourceImage", "scan_folders", "scan_glas",
    "instances_from_mask", "read_image", "read_image_info", "read_mask", "write_mask", "make_synthetic",
    "synth_image", "synth_vessels", "SYNTHETIC_KINDS", *_LAZY,
]
