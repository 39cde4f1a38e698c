"""``load_model(path)`` and the loaded model's ``predict(image)``: numpy + numba only.

Preparation of the input (all integer): grayscale is repeated to 3 channels (an alpha channel is
dropped); with an export ``scale`` s != 1 the image is resized as in training
(``resample.resize_image_uint8``: area averaging down, bilinear up, to ``scaled_shape``); the image
is padded to the network's multiple by reflection (as ``seglearn.models.infer``), run in tiles with
a halo (``tiling``), and cropped. The head's decision margins are then interpolated bilinearly back
to the image's size (exact integers, ``resample.bilinear_scaled``) and post-processed there with
the configured areas: the decisions torch's route makes on its upsampled probabilities.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from seglearn.runtime import graph as G
from seglearn.runtime.postprocess_int import labels_from_margins, margins
from seglearn.runtime.resample import bilinear_scaled, resize_image_uint8
from seglearn.runtime.slq import SlqFormatError, read_slq
from seglearn.runtime.tiling import plan_tiles

FLIPS = ((1,), (0,), (0, 1))  # (H, W, C) axes: width, height, both, as models.infer.FLIPS

DEFAULT_TILE = 512


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
        self.decisions = dict(graph.get("decisions", {}))  # "fg" present: checked by validate

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
            a = resize_image_uint8(np.ascontiguousarray(a), self.scale)
        return np.ascontiguousarray(a)

    def accumulators(self, image, tile: int | None = None) -> np.ndarray:
        """Head int32 accumulators (h, w, C) of the prepared (scaled) image, computed in tiles."""
        return self._accumulators(self._prepare(image), tile)

    def _accumulators(self, a: np.ndarray, tile: int | None) -> np.ndarray:
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

    def margins(self, image, tile: int | None = None) -> dict[str, np.ndarray]:
        """Decision margins at the image's size: int64, > 0 where the probability passes.

        At the network's resolution a margin is ``d (acc - T)``; with ``scale`` != 1 it is the
        bilinear interpolation of that map times a positive integer (exact, see ``resample``).

        With ``postprocess.tta`` the margin is the sum over the prepared image and its flips
        (width, height, both; each flipped back) of theirs, ``d (sum_f acc_f - 4 T)``: positive
        where the mean accumulator, and with it the mean logit (an increasing affine map of it),
        passes, the torch route's ``sigmoid(mean_f logit_f)`` (``models.infer``), up to the
        integer rounding of T (at most one accumulator unit of the mean).
        """
        shape = np.asarray(image).shape[:2]
        a = self._prepare(image)
        out = margins(self._accumulators(a, tile), self.decisions)
        if self.postprocess.get("tta"):
            for axes in FLIPS:
                flipped = margins(self._accumulators(np.ascontiguousarray(np.flip(a, axes)), tile),
                                  self.decisions)
                out = {k: v + np.flip(flipped[k], axes) for k, v in out.items()}
        if next(iter(out.values())).shape != shape:
            out = {k: bilinear_scaled(v, *shape)[0] for k, v in out.items()}
        return out

    def foreground(self, image, tile: int | None = None) -> np.ndarray:
        """Boolean foreground mask at the image's size (probability > fg_threshold)."""
        return self.margins(image, tile)["fg"] > 0

    def predict(self, image, tile: int | None = None) -> np.ndarray:
        """Instance labels (H, W) int32 of a uint8 (H, W, 3) or (H, W) image; 0 = background."""
        m = self.margins(image, tile)
        return labels_from_margins(m["fg"], m.get("contour"), self.postprocess).astype(np.int32)


def model_from_parts(graph: dict, arrays: dict, kernels: str = "fast", path: str | Path = "") -> SlqModel:
    """``SlqModel`` of a read graph and arrays; a graph that fails its schema is a SlqFormatError
    naming ``path`` and the field (``graph.json ops[3].attrs.zp must be ...``)."""
    try:
        return SlqModel(graph, arrays, kernels, str(path))
    except G.GraphError as e:
        raise SlqFormatError(f"{path}: graph.json {e}") from None


def load_model(path: str | Path, kernels: str = "fast") -> SlqModel:
    """Load and validate a .slq file; ``kernels="fast"`` (numba) or ``"ref"`` (numpy reference)."""
    graph, arrays = read_slq(path)
    return model_from_parts(graph, arrays, kernels, path)
