"""One ensemble member's training as a self-contained job, run in-process or as a Ray task.

A job is everything that makes the member what it is: its seed (``train.seed * 1000 + round *
100 + member``, set by app.train), its bootstrap resample of the labeled samples drawn from that
seed (Yang et al. 2017: each suggestive FCN sees n draws with replacement; the final segmenter's
members see all samples) and its checkpoint path. The same job gives the same member wherever it
runs, so the local and the Ray backend train the same ensemble.

On Ray the task checkpoints as it trains (``fit``'s checkpoint every ``train.checkpoint_every``
steps) and always resumes: a retried task (its worker died, or it raised a transient error) starts
from the last checkpoint its earlier attempt left instead of from step 0. The finished checkpoint
comes back to the driver as bytes (a ``torch.save`` state dict, read back with
``weights_only=True``), and the driver writes it and the workspace rows as the local path does.
"""

from __future__ import annotations

import hashlib
import io
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from seglearn import atomic
from seglearn.config import Config


@dataclass(frozen=True)
class MemberSpec:
    """What every member of one training round shares."""

    cfg: Config
    role: str                  # "suggestive" | "final"
    scheme: dict | None
    steps: int
    scale: float
    minutes: float | None
    members: int               # the round's number of members (for the description)
    resume: bool = False
    progress: bool = True


@dataclass(frozen=True)
class MemberJob:
    member: int
    seed: int
    checkpoint: Path
    # a continued round (``*.continue_fraction``): the previous round's checkpoint of this member,
    # which the training starts from, and the member's shorter budget (None: the spec's)
    init_from: Path | None = None
    steps: int | None = None
    minutes: float | None = None

    def budget(self, spec: "MemberSpec") -> tuple[int, float | None]:
        """(steps, minutes) this member trains: its own when it carries one, else the spec's."""
        return (spec.steps, spec.minutes) if self.steps is None else (self.steps, self.minutes)


@dataclass
class MemberOutcome:
    member: int
    seed: int
    result: object                         # train.engine.FitResult
    train_items: list[str] = field(default_factory=list)  # names of the (resampled) samples
    state: bytes | None = None             # the final checkpoint (Ray); None: written in place


def member_samples(samples: list[dict], spec: MemberSpec, seed: int) -> list[dict]:
    """The member's training set: a bootstrap resample drawn with ``seed`` for a suggestive
    member (``ensemble.bootstrap``), else all samples."""
    from seglearn.app.samples import bootstrap  # lazy: torch and MONAI (compute imports numpy only)

    if spec.role == "suggestive" and spec.cfg.ensemble.bootstrap:
        return bootstrap(samples, np.random.default_rng(seed))
    return samples


def run_member(samples: list[dict], spec: MemberSpec, job: MemberJob,
               checkpoint: Path | None = None, resume: bool | None = None,
               progress: bool | None = None) -> MemberOutcome:
    """Train one member (``app.train.train_member``) on its samples; ``checkpoint``, ``resume``
    and ``progress`` default to the job's path and the spec's flags."""
    from seglearn.app.train import train_member  # lazy: cycle (app.train imports compute)

    data = member_samples(samples, spec, job.seed)
    steps, minutes = job.budget(spec)
    _, res = train_member(data, spec.cfg, spec.scheme, job.seed, steps,
                          job.checkpoint if checkpoint is None else checkpoint,
                          resume=spec.resume if resume is None else resume,
                          progress=spec.progress if progress is None else progress,
                          description=f"{spec.role} {job.member + 1}/{spec.members}",
                          scale=spec.scale,
                          minutes=minutes,
                          init_from=job.init_from, role=spec.role)
    return MemberOutcome(job.member, job.seed, res, [s["name"] for s in data])


def task_checkpoint(job: MemberJob) -> Path:
    """Where a Ray task checkpoints: the workspace's own path when this node sees the workspace
    (a shared filesystem, or the driver's machine), else a node-local folder keyed by that path
    (a retry on the same node resumes from it; on another node it starts again)."""
    if job.checkpoint.parent.is_dir():
        return job.checkpoint
    key = hashlib.sha256(str(job.checkpoint).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / "seglearn-members" / key / job.checkpoint.name


def remote_member(samples: list[dict], spec: MemberSpec, job: MemberJob) -> MemberOutcome:
    """The body of a member's Ray task: threads set to the task's CPU share, no progress bars,
    always resuming from an earlier attempt's checkpoint (a fresh round's path is new, so the
    first attempt finds none), and the finished checkpoint returned as bytes."""
    from seglearn.compute.backend import set_task_threads  # lazy: cycle (backend imports members)

    set_task_threads(spec.cfg.compute.cpus_per_task)
    ckpt = task_checkpoint(job)
    out = run_member(samples, spec, job, checkpoint=ckpt, resume=True, progress=False)
    out.state = ckpt.read_bytes()
    return out


def write_state(path: Path, state: bytes) -> None:
    """Write a checkpoint that came back from a task, after reading it as the driver reads every
    checkpoint (``torch.load(weights_only=True)``: tensors and plain values only, no code)."""
    # lazy: torch (seglearn.compute itself imports with numpy only)
    import torch

    from seglearn.train.engine import CheckpointError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(io.BytesIO(state), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises several types for bad bytes
        raise CheckpointError(f"the checkpoint of {path} returned by its task cannot be read "
                              f"as a state dict: {str(e).splitlines()[0] if str(e) else e}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("model"), dict):
        raise CheckpointError(f"the checkpoint of {path} returned by its task is not a seglearn "
                              "checkpoint (expected a dict with a 'model' state dict)")
    path.parent.mkdir(parents=True, exist_ok=True)
    if not (path.is_file() and path.read_bytes() == state):  # a shared filesystem: already there
        atomic.write_bytes(path, state)
