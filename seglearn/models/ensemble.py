"""Ensemble inference (torch): every member's probabilities and the averaged descriptor for one image.

The descriptor is the spatial mean of each member's bottleneck feature map, averaged over members
(Yang et al. 2017); the final segmenter of Xu et al. 2018 averages the members' probabilities.
Scoring and selecting on these outputs is numpy only (``seglearn.active``).

An ensemble knows the resize factor its members were trained at (``scale``, from their sidecars):
the suggestive ensemble may train below the final segmenter's resolution (``ensemble.scale``) and
must then score the pool at that same factor. The factor is part of the model version scores are
stored under, so scores computed at one resolution are never read back as another's.
:func:`load_ensemble` resolves the factor and the device (``train.device``) once; ``predict``
runs at both unless told otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from seglearn.config import config_from_dict, role_scale
from seglearn.models.checkpoint import load_trained
from seglearn.models.device import config_device
from seglearn.models.fused import fuse_for_inference
from seglearn.models.infer import predict_prepared_batch, prepare_input

# Small images go through the members together, up to BATCH_IMAGES at a time: at 128^2, batches
# of 8 measured 1.30x faster per image than one at a time (bench/select.py --with-inference
# --scale 0.5: the deep layers' 16^2 maps are too small to keep two cores busy alone). At 256^2,
# batches of 2 to 8 measured 10-35% slower (a 16-channel 256^2 map is 4 MB, past the caches), so
# larger inputs run one at a time.
BATCH_MAX_PIXELS = 2**15  # network-input h * w (~181^2) up to which images are batched
BATCH_IMAGES = 8


@dataclass
class Ensemble:
    members: list[nn.Module]
    paths: list[Path]
    round_id: int
    role: str
    scale: float | None = None  # the factor the members were trained at; None = not recorded
    fuse: bool = True  # run fused, frozen inference copies (seglearn.models.fused): same outputs
    device: str = "cpu"  # where the members are and ``predict`` runs (load_ensemble: train.device)
    _inference: list[nn.Module] | None = field(default=None, init=False, repr=False, compare=False)

    def inference_members(self) -> list[nn.Module]:
        """The modules ``predict`` runs: with ``fuse``, eval-mode snapshots of the members with
        the quantized weights computed once, batch norm and the decoder's upsampling folded into
        the convolutions, traced and frozen where that is safe
        (:func:`seglearn.models.fused.fuse_for_inference` with ``freeze``; made on first use, so
        members changed afterwards need a new Ensemble); else the members themselves."""
        if not self.fuse:
            return self.members
        if self._inference is None:
            self._inference = [fuse_for_inference(m, freeze=True) for m in self.members]
        return self._inference

    @property
    def version(self) -> str:
        """The model version that scores are stored under: role, round and (unless 1) scale."""
        base = f"{self.role}-round{self.round_id:02d}"
        return base if self.scale in (None, 1.0) else f"{base}-x{self.scale:g}"

    def predict(self, image: np.ndarray, scale: float | None = None, tile: int = 512,
                device: str | None = None, bf16: bool = False, flips: bool = False
                ) -> tuple[np.ndarray, np.ndarray]:
        """(N, C, H, W) member probabilities and the (F,) member-averaged descriptor.

        The image is resized once for all members (by ``scale``; default: the ensemble's own
        factor, 1 when not recorded) and goes to ``device`` (default: the ensemble's); each
        member then runs its inference copy (:meth:`inference_members`). ``flips``: each member's
        logits averaged over the image's flips (``postprocess.tta``, ``infer.predict_prepared_batch``).
        """
        return self.predict_many([image], scale=scale, tile=tile, device=device, bf16=bf16,
                                 flips=flips)[0]

    def predict_many(self, images: list[np.ndarray], scale: float | None = None, tile: int = 512,
                     device: str | None = None, bf16: bool = False, flips: bool = False
                     ) -> list[tuple[np.ndarray, np.ndarray]]:
        """:meth:`predict` for each of ``images``, in order. Runs of consecutive images of one
        size whose network input is small (at most ``BATCH_MAX_PIXELS``) go through each member
        as one batch of up to ``BATCH_IMAGES``; the results equal one-at-a-time ``predict`` up
        to float rounding."""
        scale = (1.0 if self.scale is None else self.scale) if scale is None else scale
        device = self.device if device is None else device
        out: list[tuple[np.ndarray, np.ndarray]] = []
        prepared = [prepare_input(im, scale, device=device) for im in images]
        i = 0
        while i < len(prepared):
            x, size = prepared[i]
            j = i + 1
            if x.shape[-2] * x.shape[-1] <= BATCH_MAX_PIXELS and max(x.shape[-2:]) <= tile:
                while (j < len(prepared) and j - i < BATCH_IMAGES and prepared[j][1] == size
                       and prepared[j][0].shape == x.shape):
                    j += 1
            batch = torch.cat([p[0] for p in prepared[i:j]]) if j - i > 1 else x
            runs = [predict_prepared_batch(m, batch, size, tile=tile, bf16=bf16, flips=flips)
                    for m in self.inference_members()]
            probs = np.stack([p for p, _ in runs], axis=1)                    # (B, N, C, H, W)
            descs = np.mean(np.stack([d for _, d in runs], axis=1), axis=1,   # (B, F)
                            dtype=np.float32)
            out.extend((probs[b], descs[b]) for b in range(j - i))
            i = j
        return out

    def predict_mean(self, image: np.ndarray, **kw) -> np.ndarray:
        """(C, H, W) probabilities averaged over members."""
        return self.predict(image, **kw)[0].mean(axis=0)


def trained_scale(ens, cfg) -> float:
    """The resize factor ``ens``'s members were trained at (their sidecars), else the config's
    factor for its role (``config.role_scale``; ``"final"`` for objects without a role), for
    members saved before the factor was recorded and for in-memory ensembles. Inference runs at
    this factor whatever the config says now: a model fed images at another resolution than it
    learned at sees glands of another size."""
    scale = getattr(ens, "scale", None)
    return float(role_scale(cfg, getattr(ens, "role", "final")) if scale is None else scale)


def finished_rounds(ws, role: str) -> list[int]:
    """Ids of the finished rounds that trained ``role`` models, oldest first."""
    finished = {r.id for r in ws.rounds() if r.finished}
    return sorted({m.round_id for m in ws.models(role=role) if m.round_id in finished})


def load_ensemble(ws, role: str = "suggestive", cfg=None, round_id: int | None = None) -> Ensemble:
    """The newest finished ensemble of ``role`` (or that of ``round_id``) from the datastore,
    ready to run: its ``scale`` is the members' trained factor (:func:`trained_scale`: the
    sidecars', else ``cfg``'s for the role) and its members are on ``cfg``'s ``train.device``
    (:func:`seglearn.models.device.config_device`). ``cfg``: the Config of the command (its
    ``--set`` overrides included); None: the workspace's stored config."""
    if cfg is None:
        cfg = config_from_dict(ws.meta("config"), where=f"{ws.root} config")
    rows = ws.models(role=role)
    if round_id is None:
        rounds = finished_rounds(ws, role)
        if not rounds:
            cmd = "seglearn train --final" if role == "final" else "seglearn train"
            raise ValueError(f"workspace {ws.root} has no trained {role} models yet; run `{cmd}`")
        round_id = rounds[-1]
    rows = sorted((r for r in rows if r.round_id == round_id), key=lambda r: r.member)
    paths = [ws.resolve(r.path) for r in rows]
    loaded = [load_trained(p) for p in paths]
    scales = {meta.get("scale") for _, meta in loaded}
    if len(scales) > 1:
        raise ValueError(f"the {role} models of round {round_id} were trained at different "
                         f"scales {sorted(scales, key=str)}; retrain the round (seglearn train)")
    device = config_device(cfg)
    members = [m.to(device) for m, _ in loaded]
    ens = Ensemble(members, paths, round_id, role, scales.pop() if scales else None, device=device)
    ens.scale = trained_scale(ens, cfg)
    return ens
