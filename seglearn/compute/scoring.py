"""Pool scoring in chunks: the per-image work of ``select`` for a list of images, and the
ensemble packed so that a Ray worker can rebuild it once and score many chunks with it.

The per-image work is ``app.select.image_scores_many`` (the ensemble's probabilities at its
trained scale, every score of ``SCORE_NAMES``, the member-averaged descriptor). A chunk is cut
into runs of ``batch`` images (``BATCH_IMAGES``), the same runs the local ``select`` feeds it,
so a Ray worker batches images exactly as the local path does and returns the same numbers up to
float rounding of the thread count.

The ensemble travels as its members' files (checkpoint bytes + JSON sidecar), put into Ray's
object store once (``ray.put``); each worker writes them to a temporary folder and loads them
with ``models.checkpoint.load_trained`` (``weights_only`` reading), as ``load_ensemble`` does.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class PackedEnsemble:
    """An ensemble as bytes: per member (checkpoint, sidecar text), plus round, role, scale."""

    members: list[tuple[bytes, str]]
    round_id: int
    role: str
    scale: float | None


def pack_ensemble(ens) -> PackedEnsemble:
    members = [(Path(p).read_bytes(), Path(p).with_suffix(".json").read_text()) for p in ens.paths]
    return PackedEnsemble(members, ens.round_id, ens.role, ens.scale)


def unpack_ensemble(packed: PackedEnsemble):
    """The :class:`~seglearn.models.ensemble.Ensemble` of ``packed`` (members in eval mode)."""
    # lazy: torch (seglearn.compute itself imports with numpy only)
    from seglearn.models.checkpoint import load_trained
    from seglearn.models.ensemble import Ensemble

    models, paths = [], []
    with tempfile.TemporaryDirectory(prefix="seglearn-ens-") as tmp:
        for i, (state, sidecar) in enumerate(packed.members):
            path = Path(tmp) / f"member_{i}.pt"
            path.write_bytes(state)
            path.with_suffix(".json").write_text(sidecar)
            models.append(load_trained(path)[0])
            paths.append(path)
    return Ensemble(models, paths, packed.round_id, packed.role, packed.scale)


def score_images(ens, images: list[np.ndarray], reduction: str, device: str,
                 batch: int) -> list[tuple[dict[str, float], np.ndarray]]:
    """(scores, descriptor) per image, in order: ``image_scores_many`` over runs of ``batch``."""
    from seglearn.app.select import image_scores_many  # lazy: cycle (app.select imports compute)

    out: list[tuple[dict[str, float], np.ndarray]] = []
    for start in range(0, len(images), batch):
        out.extend(image_scores_many(ens, images[start:start + batch], reduction, device))
    return out


class ChunkScorer:
    """A Ray actor's state: the ensemble loaded (and fused) once, then any number of chunks."""

    def __init__(self, packed: PackedEnsemble, reduction: str, device: str, batch: int,
                 threads: int):
        # lazy: cycle (backend imports scoring when it scores); torch
        from seglearn.compute.backend import set_task_threads
        from seglearn.models.device import resolve_device

        set_task_threads(threads)
        self.ens = unpack_ensemble(packed)
        self.reduction, self.batch = reduction, batch
        self.device = str(resolve_device(device))

    def score(self, images: list[np.ndarray]) -> list[tuple[dict[str, float], np.ndarray]]:
        return score_images(self.ens, images, self.reduction, self.device, self.batch)
