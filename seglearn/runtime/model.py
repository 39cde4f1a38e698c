"""``load_model(path)`` and the loaded model's ``predict(image)``: numpy + numba only.

Preparation of the input (all integer): grayscale is repeated to 3 channels (an alpha channel is
dropped); with an export ``scale`` s != 1 the image is resized by nearest neighbour,
``src = floor((2 i + 1) H / (2 h))`` for output row i of h = round(s H) (likewise columns), and the
labels are resized back by the same rule; the image is padded to the network's multiple by
reflection (as ``seglearn.models.infer``), run in tiles with a halo (``tiling``), and cropped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from seglearn.runtime import graph as G
from seglearn.runtime.postprocess_int import foreground, labels_from_acc
from seglearn.runtime.slq import SlqFormatError, read_slq
from seglearn.runtime.tiling import plan_tiles

DEFAULT_TILE = 512


def _nearest_index(n_out: int, n_in: int) -> np.ndarray:
    return np.minimum((2 * np.arange(n_out) + 1) * n_in // (2 * n_out), n_in - 1)


def resize_nearest(a: np.ndarray, h: int, w: int) -> np.ndarray:
    """Nearest-neighbour resize of the first two axes with integer index arithmetic."""
    return a[_nearest_index(h, a.shape[0])][:, _nearest_index(w, a.shape[1])]


class SlqModel:
    """A loaded integer graph. ``predict(image)`` -> (H, W) int32 instance labels."""

    def __init__(self, graph: dict, arrays: dict, kernels: str = "fast", path: str = ""):
        if kernels not in G.KERNELS:
            raise ValueError(f"kernels must be one of {G.KERNELS}, not {kernels!r}")
        G.validate(graph, arrays)
        self.graph, self.arrays, self.kernels, self.path = graph, arrays, kernels, path
        self.multiple = int(graph.get("multiple", 1))
        self.halo = int(graph.get("halo", 0))
        self.scale = float(graph.get("scale", 1.0))
        self.in_channels = int(graph.get("in_channels", 3))
        self.postprocess = dict(graph.get("postprocess", {}))
        self._postprocess_here = scaled_areas(self.postprocess, self.scale)
        self.decisions = dict(graph.get("decisions", {}))
        if "fg" not in self.decisions:
            raise SlqFormatError(f"{path}: graph has no foreground decision threshold")

    def _prepare(self, image) -> np.ndarray:
        a = np.asarray(image)
        if a.dtype != np.uint8:
            raise ValueError(f"predict needs a uint8 image, got dtype {a.dtype}")
        if a.ndim == 3 and a.shape[2] == 1:
            a = a[..., 0]
        if a.ndim == 2:
            a = np.repeat(a[..., None], 3, axis=2)
        if a.ndim != 3 or a.shape[2] not in (3, 4) or min(a.shape[:2]) < 1:
            raise ValueError(f"predict needs an (H, W) or (H, W, 3) image, got shape {a.shape}")
        a = a[..., :3]
        if self.in_channels != 3:
            raise ValueError(f"model expects {self.in_channels} input channels")
        if self.scale != 1.0:
            h = max(1, round(a.shape[0] * self.scale))
            w = max(1, round(a.shape[1] * self.scale))
            a = resize_nearest(a, h, w)
        return np.ascontiguousarray(a)

    def accumulators(self, image, tile: int | None = None) -> np.ndarray:
        """Head int32 accumulators (h, w, C) of the prepared (scaled) image, computed in tiles."""
        a = self._prepare(image)
        h, w = a.shape[:2]
        m = self.multiple
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            mode = "reflect" if ph < h and pw < w else "edge"
            a = np.pad(a, [(0, ph), (0, pw), (0, 0)], mode=mode)
        tiles = plan_tiles(a.shape[0], a.shape[1], tile or DEFAULT_TILE, self.halo, m)
        out = None
        for t in tiles:
            acc = G.run(self.graph, self.arrays, a[t.ry0:t.ry1, t.rx0:t.rx1], self.kernels)["logits"]
            if out is None:
                out = np.empty(a.shape[:2] + acc.shape[2:], np.int32)
            out[t.y0:t.y1, t.x0:t.x1] = acc[t.y0 - t.ry0:t.y1 - t.ry0, t.x0 - t.rx0:t.x1 - t.rx0]
        return out[:h, :w]

    def _to_input_size(self, a: np.ndarray, shape: tuple) -> np.ndarray:
        return a if a.shape[:2] == shape else resize_nearest(a, *shape)

    def foreground(self, image, tile: int | None = None) -> np.ndarray:
        """Boolean foreground mask at the image's size (probability > fg_threshold)."""
        shape = np.asarray(image).shape[:2]
        return self._to_input_size(foreground(self.accumulators(image, tile), self.decisions), shape)

    def predict(self, image, tile: int | None = None) -> np.ndarray:
        """Instance labels (H, W) int32 of a uint8 (H, W, 3) or (H, W) image; 0 = background."""
        shape = np.asarray(image).shape[:2]
        labels = labels_from_acc(self.accumulators(image, tile), self.decisions,
                                 self._postprocess_here)
        return self._to_input_size(labels.astype(np.int32), shape)


AREA_KEYS = ("min_area", "seed_min_area")


def scaled_areas(postprocess: dict, scale: float) -> dict:
    """Post-processing parameters for the network's resolution.

    Areas in the config are pixels of the *image* (torch's route post-processes probabilities
    upsampled to the image's size); the runtime post-processes at the network's resolution, where
    an object covers ``scale^2`` as many pixels, so ``min_area`` and ``seed_min_area`` become
    ``round(a scale^2)`` (at least 1 where ``a`` >= 1). A parameter conversion, done once at load
    time: the images themselves still see integer arithmetic only.
    """
    out = dict(postprocess)
    if scale != 1.0:
        for k in AREA_KEYS:
            if k in out and out[k] > 0:
                out[k] = max(1, int(round(out[k] * scale * scale)))
    return out


def load_model(path: str | Path, kernels: str = "fast") -> SlqModel:
    """Load and validate a .slq file; ``kernels="fast"`` (numba) or ``"ref"`` (numpy reference)."""
    graph, arrays = read_slq(path)
    try:
        return SlqModel(graph, arrays, kernels, str(path))
    except G.GraphError as e:
        raise SlqFormatError(f"{path}: {e}") from None
