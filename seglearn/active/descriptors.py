"""Image descriptors for the max-cover similarity step (Yang et al. 2017, METHODS.md section 2).

d(I) = (1/N) sum_n (1/(h w)) sum_{i,j} f_n[:, i, j]

where f_n is the (F, h, w) bottleneck ("last encoder") feature map of ensemble member n on image I:
the spatial mean per member, averaged over the N members, as float32 of shape (F,).

Because every member sees the same pixels, d(I) = (sum over members and pixels) / (N * pixels), so a
tiled pass can stream it: :class:`DescriptorAccumulator` keeps a float64 per-member sum and a pixel
count and gives the same descriptor as the whole map (tiles must not overlap -- crop overlaps away
before adding them, the way tiled inference stitches outputs).

Pool transforms (``active.descriptor``, registry ``DESCRIPTORS``), applied at selection time by
:func:`pool_descriptors` just before the strategies read the descriptors (stored d(I) never change):

    yang      d(I) as above (Yang et al. 2017).
    centered  z(I)_f = (d(I)_f - mu_f) / sigma_f, mu and sigma the mean and (population) standard
              deviation of channel f over the unlabeled pool U being covered; a channel whose sigma
              is <= 1e-6 * max_f sigma_f (dead ReLU channels, float noise) becomes 0.

Why: ReLU spatial means are non-negative and dominated by the channels every image shares, so the
raw d(I) are nearly collinear and cos ~ 1 for every pair -- max-cover's first pick covers the whole
pool and the later coverage gains are ~0.3% of the first. Subtracting the pool mean removes that
shared component (cosines of centred vectors spread around 0) and the per-channel scale keeps a
few large-valued channels from deciding every cosine. Measured by ``bench/descriptors.py``
(bench/results/descriptors.json; median pairwise cosine, and mean(gain 2..8) / gain 1 of the
suggestive greedy with k = 8):

    demo pool (32 images)   yang 0.984, 0.001    centered -0.079, 0.252    mean only -0.058, 0.201
    GlaS train (76 images)  yang 0.904, 0.006    centered -0.051, 0.233    mean only -0.053, 0.240

Centring alone does most of it; the per-channel scale is kept because it is the better of the two
on the demo and costs nothing. A pool of one image centres to the zero vector (cosine 0, no cover).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from seglearn.registry import Registry

__all__ = [
    "descriptor_from_features",
    "descriptors_from_batch",
    "DescriptorAccumulator",
    "DESCRIPTORS",
    "pool_descriptors",
]

#: A channel is constant over the pool when its std is at most this fraction of the largest std.
_CONSTANT_STD = 1e-6

#: name -> fn(pool (U, D) float64) returning (shift (D,), scale (D,)): z = (d - shift) * scale.
PoolTransform = Callable[[np.ndarray], "tuple[np.ndarray, np.ndarray]"]
DESCRIPTORS: Registry[PoolTransform] = Registry("descriptor")


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


@DESCRIPTORS.register("yang")
def _yang(pool: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    width = pool.shape[1]
    return np.zeros(width), np.ones(width)


@DESCRIPTORS.register("centered")
def _centered(pool: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu = pool.mean(axis=0)
    sigma = pool.std(axis=0)
    tol = _CONSTANT_STD * (sigma.max() if sigma.size else 0.0)
    # 1/sigma where the channel varies; 0 where it is constant (it carries no information, and
    # dividing float noise by a tiny sigma would let it decide the cosines).
    inv = np.divide(1.0, sigma, out=np.zeros_like(sigma), where=sigma > tol)
    return mu, inv


def pool_descriptors(
    name: str, pool: np.ndarray, *others: np.ndarray | None
) -> tuple[np.ndarray | None, ...]:
    """The ``name`` transform of the (U, D) unlabeled ``pool`` descriptors, with its statistics
    (computed on ``pool`` only) applied to each of ``others`` (e.g. the labeled set's, for
    coreset) as well; None stays None. Returns float64 arrays: (pool', *others')."""
    fn = DESCRIPTORS.get(name)
    p = np.asarray(pool, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] == 0:
        raise ValueError(f"pool descriptors must be a non-empty (U, D) array, got shape {p.shape}")
    shift, scale = fn(p)
    out = [(p - shift) * scale]
    for o in others:
        if o is None:
            out.append(None)
            continue
        a = np.asarray(o, dtype=np.float64)
        if a.ndim != 2 or a.shape[1] != p.shape[1]:
            raise ValueError(
                f"descriptors of shape {a.shape} do not match the pool's {p.shape[1]} features"
            )
        out.append((a - shift) * scale)
    return tuple(out)
