"""Image descriptors for the max-cover similarity step (Yang et al. 2017, METHODS.md section 2).

d(I) = (1/N) sum_n (1/(h w)) sum_{i,j} f_n[:, i, j]

where f_n is the (F, h, w) bottleneck ("last encoder") feature map of ensemble member n on image I:
the spatial mean per member, averaged over the N members, as float32 of shape (F,).

Because every member sees the same pixels, d(I) = (sum over members and pixels) / (N * pixels), so a
tiled pass can stream it: :class:`DescriptorAccumulator` keeps a float64 per-member sum and a pixel
count and gives the same descriptor as the whole map (tiles must not overlap -- crop overlaps away
before adding them, the way tiled inference stitches outputs).
"""

from __future__ import annotations

import numpy as np

__all__ = ["descriptor_from_features", "descriptors_from_batch", "DescriptorAccumulator"]


def _as_features(feats: np.ndarray, ndim: int, what: str) -> np.ndarray:
    f = np.asarray(feats)
    if f.ndim != ndim:
        raise ValueError(f"features must have shape {what}, got {f.shape}")
    if not np.issubdtype(f.dtype, np.number) or np.iscomplexobj(f):
        raise ValueError(f"features must be real numbers, got dtype {f.dtype}")
    if 0 in f.shape:
        raise ValueError(f"features must not be empty, got shape {f.shape}")
    if not np.all(np.isfinite(f)):
        raise ValueError("features contain NaN or infinite values")
    return f


def descriptor_from_features(feats: np.ndarray) -> np.ndarray:
    """(N, F, h, w) bottleneck maps of N members for one image -> (F,) float32 descriptor."""
    f = _as_features(feats, 4, "(N, F, h, w)")
    return f.mean(axis=(2, 3), dtype=np.float64).mean(axis=0).astype(np.float32)


def descriptors_from_batch(feats: np.ndarray) -> np.ndarray:
    """(B, N, F, h, w) -> (B, F) float32: :func:`descriptor_from_features` per image, vectorised."""
    f = _as_features(feats, 5, "(B, N, F, h, w)")
    return f.mean(axis=(3, 4), dtype=np.float64).mean(axis=1).astype(np.float32)


class DescriptorAccumulator:
    """Streaming descriptor for tiled inference: ``add`` each (N, F, th, tw) tile, then ``result``.

    Keeps sum[n, f] (float64) and the pixel count; result = mean_n(sum[n] / count).
    """

    def __init__(self) -> None:
        self._sum: np.ndarray | None = None
        self._count = 0

    def add(self, tile: np.ndarray) -> None:
        """Add one non-overlapping tile of the features, shape (N, F, th, tw)."""
        t = _as_features(tile, 4, "(N, F, th, tw)")
        s = t.sum(axis=(2, 3), dtype=np.float64)
        if self._sum is None:
            self._sum = s
        elif s.shape != self._sum.shape:
            raise ValueError(
                f"tile has (members, features) = {s.shape}, earlier tiles had {self._sum.shape}"
            )
        else:
            self._sum += s
        self._count += t.shape[2] * t.shape[3]

    @property
    def pixels(self) -> int:
        """Pixels (per member) added so far."""
        return self._count

    def result(self) -> np.ndarray:
        """The (F,) float32 descriptor of everything added so far."""
        if self._sum is None:
            raise ValueError("no tiles were added to the descriptor accumulator")
        return (self._sum / self._count).mean(axis=0).astype(np.float32)
