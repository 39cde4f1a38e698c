"""Instance labels from the head's int32 accumulators, without going back to probabilities.

The head's real logit is ``A acc + B``; ``sigmoid`` is monotone, so ``prob > p`` is exactly
``acc > T`` (A > 0) or ``acc < T`` (A < 0) for the integer T stored at export (``decisions`` in
the graph). With ``d = direction``, the integer *margin* ``m = d (acc - T)`` is positive exactly
where the probability passes its threshold, and it increases with the probability.

``seglearn.postprocess.instances_from_probs`` only ever thresholds its maps and floods the contour
map in watershed order, and both are invariant under an increasing map. So it is called with the
foreground map ``1{m_fg > 0}`` and the contour map ``m_contour + 1/2`` (integer values held exactly
in float64) and both thresholds at 1/2: the same decisions as on probabilities, computed from
integers (ties of equal probability may be flooded in a different order; nothing else differs).
"""

from __future__ import annotations

import numpy as np

from seglearn.postprocess import PostprocessConfig, instances_from_probs


def margin(acc: np.ndarray, decision: dict) -> np.ndarray:
    """``direction * (acc - t)`` as int64: > 0 exactly where the probability passes its threshold."""
    c = int(decision["channel"])
    return int(decision["direction"]) * (acc[..., c].astype(np.int64) - int(decision["t"]))


def margins(acc: np.ndarray, decisions: dict) -> dict[str, np.ndarray]:
    """The int64 margin map of every decision ("fg", and "contour" where the head has one)."""
    return {name: margin(acc, d) for name, d in decisions.items()}


def labels_from_margins(fg: np.ndarray, contour: np.ndarray | None, params: dict) -> np.ndarray:
    """Instance labels (H, W) int32 from integer margin maps (> 0: the probability passes).

    The margins may be scaled by any positive integer (``resample.bilinear_scaled``): only their
    signs and order are used. Contour margins below 2^53 are held exactly in float64.
    """
    p = PostprocessConfig.from_dict(dict(params, fg_threshold=0.5, contour_threshold=0.5))
    fg_map = (fg > 0).astype(np.float64)
    contour_map = None
    if contour is not None and p.use_contour:
        contour_map = contour.astype(np.float64) + 0.5
    return instances_from_probs(fg_map, contour_map, p)
