"""Label files: lossless uint16 instance PNGs written atomically and durably.

Durable write = write a temp file in the target folder, ``fsync`` it, ``os.replace`` it onto the
final name (atomic on POSIX: readers see the old file or the new one, never half of one), then
``fsync`` the folder so the rename itself survives a power cut. A crash at any point leaves either
nothing or a complete file.
"""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np

from seglearn import atomic

from .digest import bytes_sha256, file_sha256  # noqa: F401 - re-exported: labelio.bytes_sha256
from .errors import WorkspaceError

MAX_LABEL = np.iinfo(np.uint16).max


def check_mask(mask: object, what: str) -> np.ndarray:
    """Validate an instance-label mask; returns it as uint16 (values 0..65535, 0 = background)."""
    if not isinstance(mask, np.ndarray):
        raise WorkspaceError(f"mask for {what} must be a numpy array, got {type(mask).__name__}")
    if mask.ndim != 2:
        raise WorkspaceError(f"mask for {what} must be 2-D (H, W) instance labels, got shape {mask.shape}")
    if mask.dtype == np.bool_:
        return mask.astype(np.uint16)
    if not np.issubdtype(mask.dtype, np.integer):
        raise WorkspaceError(f"mask for {what} must hold integer instance labels, got dtype {mask.dtype}")
    if mask.size:
        lo, hi = int(mask.min()), int(mask.max())
        if lo < 0 or hi > MAX_LABEL:
            raise WorkspaceError(f"mask for {what} has labels in [{lo}, {hi}]; "
                                 f"instance labels must lie in [0, {MAX_LABEL}]")
    return mask.astype(np.uint16)


def encode_mask(mask16: np.ndarray, what: str) -> bytes:
    """uint16 (H, W) -> PNG bytes, decoded again and compared so a bad encoder never loses a label."""
    data = iio.imwrite("<bytes>", np.ascontiguousarray(mask16), extension=".png")
    back = iio.imread(data, extension=".png")
    if back.shape != mask16.shape or not np.array_equal(back, mask16):
        raise WorkspaceError(f"PNG encoding of the mask for {what} did not round-trip; label not stored")
    return data


def decode_mask(data: bytes, what: str) -> np.ndarray:
    """PNG/TIFF/... bytes of an instance-label image -> int32 (H, W).

    Grayscale uint8/uint16 is taken as is; an RGB(A) image whose colour channels are identical is
    taken as grayscale. Anything else (colour masks, binary masks needing connected components) must
    be converted first, e.g. with ``seglearn.data.read_mask``.
    """
    try:
        arr = iio.imread(data)
    except Exception as exc:  # imageio raises many types for unreadable bytes
        raise WorkspaceError(f"cannot decode mask {what}: {exc}") from exc
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        rgb = arr[..., :3]
        if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
            raise WorkspaceError(f"mask {what} is a colour image; convert it to instance labels first")
        arr = rgb[..., 0]
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
        raise WorkspaceError(f"mask {what} is not a 2-D integer label image (shape {arr.shape}, "
                             f"dtype {arr.dtype})")
    return arr.astype(np.int32)


fsync_dir = atomic.fsync_dir  # the one implementation; kept here for the store's callers


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via temp file + fsync + os.replace (the caller fsyncs the folder)."""
    atomic.write_bytes(path, data, sync_dir=False)
