"""`seglearn train`: the round's suggestive ensemble (QSA) or the final segmenter (QNT).

Each suggestive member trains on a bootstrap resample of the labeled set (Yang et al. 2017); the
final segmenter is one model or an ensemble of N whose probabilities are averaged (Xu et al. 2018).
Each role trains at its own resolution, ``config.role_scale``: the final segmenter at ``data.scale``,
the suggestive ensemble at ``data.scale * ensemble.scale`` (it only ranks images; at half
resolution its training and its pool inference are about 4x cheaper). The factor is written to
every member's sidecar, and ``select`` runs the members at that same factor.
Members checkpoint as they train; ``resume=True`` continues the newest unfinished round: finished
members are kept and an interrupted member continues from its last checkpoint. With no unfinished
round of the role, ``resume=True`` refuses (ValueError) rather than start a new one.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from seglearn.app.samples import load_samples, make_batches
from seglearn.app.tune import tune_final
from seglearn.compute import get_backend
from seglearn.compute.members import MemberJob, MemberSpec, write_state
from seglearn.config import Config, role_key, role_scale, role_train
from seglearn.models.checkpoint import (_materialize_lazy, make_model, models_dir, save_sidecar,
                                        scheme_dict, scheme_name)
from seglearn.models.ensemble import finished_rounds, load_ensemble
from seglearn.quant.convert import scheme_callbacks
from seglearn.train.engine import fit, load_checkpoint, load_model_state


def train_member(samples: list[dict], cfg: Config, scheme: dict | None, seed: int, steps: int,
                 checkpoint: Path, resume: bool = False, progress: bool = True,
                 description: str = "training", scale: float | None = None,
                 minutes: float | None = None, init_from: Path | None = None,
                 role: str | None = None):
    """Train one (quantized) FCN on ``samples`` resized by ``scale`` (default ``data.scale``) for
    ``steps``, or for ``minutes`` of wall time when given; returns (model, FitResult).
    ``role``: the optimizer settings of that role (``config.role_train``: the final segmenter's
    ``final.lr``/``final.warmup``); None trains with ``train`` as it is.
    ``init_from``: a checkpoint whose model state the training starts from (a continued round);
    a resumed member's own checkpoint, when there is one, still wins (``fit`` loads it)."""
    torch.manual_seed(seed)
    model = make_model(cfg.model, scheme)
    if init_from is not None:
        state = load_checkpoint(init_from)["model"]
        _materialize_lazy(model, state)
        load_model_state(model, state, init_from)
    callbacks = []
    if scheme:
        callbacks = scheme_callbacks(model, scheme, cfg)
    batches = make_batches(samples, cfg, seed, scale=scale)
    result = fit(model, batches, role_train(cfg, role), steps=steps, callbacks=callbacks,
                 checkpoint=checkpoint, resume=resume, contour_weight=cfg.model.contour_weight,
                 progress=progress, description=description, minutes=minutes,
                 lr_key=role_key(cfg, role, "train.lr"))
    return model, result


def _finished(checkpoint: Path, steps: int) -> bool:
    if not checkpoint.is_file() or not checkpoint.with_suffix(".json").is_file():
        return False
    try:
        state = load_checkpoint(checkpoint)
        # a time-budgeted member planned its own total (stored in the checkpoint)
        return int(state.get("step", 0)) >= int(state.get("total") or steps)
    except ValueError:
        return False


def train_workspace(ws, cfg: Config, final: bool = False, resume: bool = False,
                    progress: bool = True, backend=None) -> list[dict]:
    """Train the suggestive ensemble (or the final segmenter) on every visible label, each member
    through ``backend`` (default ``compute.get_backend(cfg)``: local or Ray)."""
    role = "final" if final else "suggestive"
    section = cfg.final if final else cfg.ensemble
    scheme = scheme_dict(section.quant)
    steps = section.steps or cfg.train.steps
    # a time budget, shared by the role's members (train.minutes: the final segmenter)
    budget = cfg.train.minutes if final else cfg.ensemble.minutes
    minutes = budget / section.members if budget else None
    scale = role_scale(cfg, role)
    full_steps, full_minutes = steps, minutes
    items = ws.training_items()
    if not items:
        raise ValueError(f"workspace {ws.root} has no labeled images to train on; "
                         "label some first (seglearn label)")
    # Images (hash-checked) and labels are read before a round is opened, so a bad file leaves no
    # empty unfinished round behind for a later --resume to pick up.
    samples = load_samples(ws, items)
    backend = backend or get_backend(cfg)  # a Ray cluster that does not answer fails here
    with ws.writer():
        round_id = _round_for(ws, role, cfg, resume)
    out_dir = models_dir(ws.root, round_id, role)
    previous = _previous_members(ws, role, round_id, cfg, scheme) if section.continue_fraction \
        else {}
    rows = []
    jobs = []
    for member in range(section.members):
        ckpt = out_dir / f"member_{member}.pt"
        seed = cfg.train.seed * 1000 + round_id * 100 + member
        init_from = previous.get(member)
        steps, minutes = (full_steps, full_minutes) if init_from is None else \
            _continued_budget(section.continue_fraction, full_steps, full_minutes)
        if resume and _finished(ckpt, steps):
            if member not in {m.member for m in ws.models(role=role, round_id=round_id)}:
                # killed after the member's files were complete but before its row was written
                with ws.writer():
                    ws.add_model(round_id, role, member, str(ckpt.relative_to(ws.root)),
                                 cfg.hash(), scheme or {}, {"steps": steps, "recovered": True})
            rows.append({"round": round_id, "role": role, "member": member,
                         "scheme": scheme_name(scheme), "steps": steps, "path": str(ckpt),
                         "loss": float("nan"), "seconds": 0.0})
            continue
        # a continued member carries its own shorter budget; the others train the spec's
        jobs.append(MemberJob(member, seed, ckpt) if init_from is None else
                    MemberJob(member, seed, ckpt, init_from, steps, minutes))
    spec = MemberSpec(cfg, role, scheme, full_steps, scale, full_minutes, section.members, resume,
                      progress)
    # The backend trains the members (local: here, one after the other; ray: as tasks) and hands
    # each back as it finishes; its files and row are written here, as each arrives.
    by_member = {j.member: j for j in jobs}
    for out in backend.train_members(spec, jobs, samples):
        member, res, job = out.member, out.result, by_member[out.member]
        ckpt = out_dir / f"member_{member}.pt"
        if out.state is not None:
            write_state(ckpt, out.state)
        continued = None if job.init_from is None else str(job.init_from.relative_to(ws.root))
        save_sidecar(ckpt, cfg.model, scheme, {"round": round_id, "role": role, "member": member,
                                                "config_hash": cfg.hash(), "steps": res.steps,
                                                "scale": scale, "seed": out.seed,
                                                "continued_from": continued,
                                                "train_items": out.train_items})
        metrics = {"final_loss": res.final_loss, "seconds": res.seconds,
                   "data_seconds": res.data_seconds, "steps": res.steps, "scale": scale,
                   "minutes": job.budget(spec)[1],
                   "continued_from": continued,
                   "n_train": len(out.train_items)}
        with ws.writer():
            ws.add_model(round_id, role, member, str(ckpt.relative_to(ws.root)), cfg.hash(),
                         scheme or {}, metrics)
        rows.append({"round": round_id, "role": role, "member": member,
                     "scheme": scheme_name(scheme), "steps": res.steps, "loss": res.final_loss,
                     "seconds": res.seconds, "path": str(ckpt), "continued_from": continued,
                     "resumed_from": res.resumed_from})
    rows.sort(key=lambda r: r["member"])
    # The round is finished only when every member is in (a failed member raised above).
    with ws.writer():
        ws.finish_round(round_id, {"role": role, "members": section.members,
                                   "n_labeled": len(items)})
    if final and cfg.postprocess.tune:
        # one set of post-processing parameters per trained model, read by evaluate and export
        ens = load_ensemble(ws, "final", cfg, round_id=round_id)
        record = tune_final(ws, cfg, ens, progress, ens.device)
        for row in rows:
            row["postprocess"] = record["params"]
    return rows


def _arch(model: dict) -> tuple:
    """What make_model builds the network from (a loss weight does not change the weights' shapes)."""
    return tuple(model.get(k) for k in ("name", "width", "depth", "up", "contour_head"))


def _continued_budget(fraction: float, steps: int, minutes: float | None
                      ) -> tuple[int, float | None]:
    """A continued member's budget: ``fraction`` of the steps (at least 1) or of the minutes."""
    return max(1, math.ceil(fraction * steps - 1e-9)), (fraction * minutes if minutes else None)


def _previous_members(ws, role: str, round_id: int, cfg: Config, scheme: dict | None
                      ) -> dict[int, Path]:
    """member index -> checkpoint of the role's newest finished round before ``round_id``, for the
    members whose network (architecture and scheme, from the sidecar) is the one trained now; a
    member that does not fit is left out (it trains from scratch)."""
    earlier = [r for r in finished_rounds(ws, role) if r < round_id]
    if not earlier:
        return {}
    out = {}
    for row in ws.models(role=role, round_id=earlier[-1]):
        path = ws.resolve(row.path)
        try:
            meta = json.loads(path.with_suffix(".json").read_text())
        except (OSError, json.JSONDecodeError):
            continue  # no readable description: nothing to check it against, so start afresh
        if _arch(meta.get("model") or {}) == _arch(vars(cfg.model)) \
                and meta.get("scheme") == scheme and path.is_file():
            out[row.member] = path
    return out


def _round_for(ws, role: str, cfg: Config, resume: bool) -> int:
    """A new round id, or with resume the newest unfinished round of this role (ValueError when
    there is none: silently training a new round instead would hide that nothing was resumed)."""
    kind = f"train-{role}"
    if resume:
        ours = [r for r in ws.rounds() if r.kind == kind]
        for r in reversed(ours):
            if not r.finished:
                return r.id
        done = f" (all {len(ours)} finished)" if ours else ""
        final = " --final" if role == "final" else ""
        raise ValueError(f"nothing to resume: workspace {ws.root} has no unfinished {role} training "
                         f"round{done}; run `seglearn train {ws.root}{final}` without --resume to "
                         "train a new round")
    return ws.start_round(kind, cfg.hash())
