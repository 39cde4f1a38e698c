"""SegDataset: a list of image/label samples through a MONAI transform pipeline."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Callable, Sequence

import numpy as np
from monai.data import CacheDataset, Dataset
from torch.utils.data import Dataset as TorchDataset

from seglearn.data.errors import DataError
from seglearn.data.transforms import user_error


def _check_sample(i: int, s: object) -> dict:
    if not isinstance(s, dict) or "image" not in s:
        raise DataError(f"sample {i} must be a dict with an 'image' (array or path), got {type(s).__name__}")
    out = {k: v for k, v in s.items() if not (k == "label" and v is None)}
    img, lab = out["image"], out.get("label")
    if isinstance(img, np.ndarray) and isinstance(lab, np.ndarray) and lab.shape[:2] != img.shape[:2]:
        raise DataError(
            f"sample {i} ({out.get('name', 'unnamed')}): label is {lab.shape[0]}x{lab.shape[1]} but the image is "
            f"{img.shape[0]}x{img.shape[1]}"
        )
    if not isinstance(img, (np.ndarray, str, os.PathLike)):
        raise DataError(f"sample {i}: 'image' must be a uint8 (H, W, 3) array or a path, got {type(img).__name__}")
    return out


class SegDataset(TorchDataset):
    """``samples``: list of ``dict(image=uint8 (H, W, 3) array or path, label=int (H, W) instances,
    path or None)``; extra keys (e.g. ``name``) pass through. Items are the transformed dicts
    (see seglearn.data.transforms). ``cache=True`` keeps the output of the deterministic head of the
    pipeline (loading, targets, scaling) in memory via monai.data.CacheDataset, so random crops and
    flips are redrawn every epoch without re-reading files."""

    def __init__(self, samples: Sequence[dict], transforms: Callable, cache: bool = True):
        data = [_check_sample(i, s) for i, s in enumerate(samples)]
        with _user_errors():
            if cache:
                self._ds = CacheDataset(data, transform=transforms, progress=False, num_workers=0)
            else:
                self._ds = Dataset(data, transform=transforms)

    def __len__(self) -> int:
        return len(self._ds)

    def __getitem__(self, index: int) -> dict:
        with _user_errors():
            return self._ds[index]


@contextmanager
def _user_errors():
    """CacheDataset applies transforms one by one, each failure wrapped in MONAI's RuntimeError:
    surface the DataError naming the file instead."""
    try:
        yield
    except RuntimeError as exc:
        err = user_error(exc)
        if err is exc:
            raise
        raise err from None
