"""compute.backend=ray (issue 17), the cases that need a running cluster: members as Ray tasks and
the pool scored in chunks on Ray give what the local backend gives; a failed member task is retried
and resumes. A 2-CPU local Ray cluster, tiny synthetic data.

Not collected by the suite itself (the name does not start with ``test_``): ``test_ray.py`` runs
this file in a child pytest, because a Ray-internal failure (a raylet or agent that dies) ends
the driver process with ``_exit(1)``, which in the suite's own process would end the whole run
without a word (seen once in CI). Run it alone with ``pytest tests/compute/ray_cases.py``."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'seglearn[ray]')")

from seglearn.app.init import init_workspace  # noqa: E402
from seglearn.app.select import select_workspace  # noqa: E402
from seglearn.app.train import train_workspace  # noqa: E402
from seglearn.compute import RayBackend  # noqa: E402
from seglearn.config import load_config  # noqa: E402
from seglearn.store import Workspace  # noqa: E402

TINY = ["synthetic.size=32", "data.crop=32", "model.width=4", "model.depth=3",
        "train.steps=4", "ensemble.steps=4", "ensemble.members=2", "data.batch_size=2",
        "train.bf16=false", "active.budget=3", "active.candidates=6",
        "ensemble.quant.weight=null", "final.quant.weight=null", "train.checkpoint_every=2",
        "postprocess.tune=false", "compute.chunk=8"]
RAY = ["compute.backend=ray"]


@pytest.fixture(scope="module")
def cluster():
    # a short temp dir of the parent's choosing, so it can read Ray's logs when this process dies
    # (Ray's unix sockets live under it: the path must stay well under 107 characters)
    temp_dir = os.environ.get("SEGLEARN_TEST_RAY_TMP")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             **({"_temp_dir": temp_dir} if temp_dir else {}))
    yield
    ray.shutdown()


def _ws(path: Path, n: int, cfg, labeled: float = 0.5):
    return init_workspace(path, cfg, synthetic=n, seed=0, initial_labeled=labeled, progress=False)


def _sidecars(ws) -> list[dict]:
    return [json.loads(ws.resolve(m.path).with_suffix(".json").read_text())
            for m in sorted(ws.models(role="suggestive"), key=lambda m: m.member)]


def _weights(ws) -> list[dict]:
    import torch

    return [torch.load(ws.resolve(m.path), weights_only=True)["model"]
            for m in sorted(ws.models(role="suggestive"), key=lambda m: m.member)]


def test_ray_train_gives_the_local_members(cluster, tmp_path):
    local_cfg = load_config(None, TINY)
    ray_cfg = load_config(None, TINY + RAY)
    assert ray_cfg.hash() == local_cfg.hash()  # where the work runs is not part of the config
    a, b = _ws(tmp_path / "a", 12, local_cfg), _ws(tmp_path / "b", 12, ray_cfg)
    rows_a = train_workspace(a, local_cfg, progress=False)
    rows_b = train_workspace(b, ray_cfg, progress=False)
    assert [r["member"] for r in rows_b] == [0, 1]
    sa, sb = _sidecars(a), _sidecars(b)
    # the same seeds and the same bootstrap resamples, member by member
    rnd = rows_b[0]["round"]  # seed = train.seed * 1000 + round * 100 + member
    assert [s["seed"] for s in sa] == [s["seed"] for s in sb] == [rnd * 100, rnd * 100 + 1]
    assert [s["train_items"] for s in sa] == [s["train_items"] for s in sb]
    assert sa[0]["train_items"] != sa[1]["train_items"]  # really two resamples
    for wa, wb in zip(_weights(a), _weights(b)):
        for key in wa:
            assert np.allclose(wa[key].float(), wb[key].float(), atol=1e-4), key
    assert [r.finished is not None for r in b.rounds() if r.kind == "train-suggestive"] == [True]
    assert rows_a[0]["steps"] == rows_b[0]["steps"] == 4


def test_ray_select_stores_the_local_scores(cluster, tmp_path):
    cfg = load_config(None, TINY)
    with _ws(tmp_path / "a", 60, cfg, labeled=0.1) as ws:
        train_workspace(ws, cfg, progress=False)
        assert len(ws.unlabeled("pool")) >= 40
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    a, b = Workspace.open(tmp_path / "a"), Workspace.open(tmp_path / "b")
    res_a = select_workspace(a, cfg, progress=False)
    res_b = select_workspace(b, load_config(None, TINY + RAY), progress=False)
    (version,) = a.score_versions()
    assert b.score_versions() == [version]
    sa, sb = a.scores(version), b.scores(version)
    assert sorted(sa) == sorted(sb) and len(sa) == len(a.unlabeled("pool"))
    for iid in sa:
        for name, value in sa[iid][0].items():
            assert sb[iid][0][name] == pytest.approx(value, rel=1e-4, abs=1e-6), (iid, name)
        assert np.allclose(sa[iid][1], sb[iid][1], rtol=1e-4, atol=1e-6)
    # the streamed max-cover (descriptors on disk, in blocks) picks what the in-memory one picks
    assert [r["item"] for r in res_a.rows] == [r["item"] for r in res_b.rows]
    assert np.allclose([r["coverage_gain"] for r in res_a.rows],
                       [r["coverage_gain"] for r in res_b.rows], rtol=1e-6)
    assert not list((tmp_path / "b" / "cache").glob("descriptors-*"))  # the memmap is removed


def test_member_task_that_raises_once_is_retried_and_resumes(cluster, tmp_path):
    cfg = load_config(None, TINY + RAY)
    ws = _ws(tmp_path / "ws", 12, cfg)
    marks = tmp_path / "attempts"
    marks.mkdir()

    def flaky(samples, spec, job):  # pickled by value: a nested function
        from seglearn.compute.members import remote_member

        attempts = len(list(marks.glob(f"member{job.member}-*")))
        (marks / f"member{job.member}-{attempts}").touch()
        if job.member == 0 and attempts == 0:
            # half the steps (a checkpoint at step 2), then a transient error
            remote_member(samples, dataclasses.replace(spec, steps=2), job)
            raise RuntimeError("worker lost its scratch disk")
        return remote_member(samples, spec, job)

    rows = train_workspace(ws, cfg, progress=False, backend=RayBackend(cfg, member_fn=flaky))
    assert sorted(p.name for p in marks.iterdir()) == ["member0-0", "member0-1", "member1-0"]
    assert [r["member"] for r in rows] == [0, 1]
    assert rows[0]["resumed_from"] == 2 and rows[1]["resumed_from"] == 0  # from its checkpoint
    assert rows[0]["steps"] == 4
    (rnd,) = [r for r in ws.rounds() if r.kind == "train-suggestive"]
    assert rnd.finished is not None and len(ws.models(role="suggestive", round_id=rnd.id)) == 2


def test_member_task_with_a_value_error_is_not_retried(cluster, tmp_path):
    cfg = load_config(None, TINY + RAY)
    ws = _ws(tmp_path / "ws", 12, cfg)
    calls = tmp_path / "calls"
    calls.mkdir()

    def bad(samples, spec, job):
        (calls / f"{job.member}-{time.monotonic_ns()}").touch()
        raise ValueError(f"member {job.member}: labels do not fit")

    with pytest.raises(ValueError, match="labels do not fit"):
        train_workspace(ws, cfg, progress=False, backend=RayBackend(cfg, member_fn=bad))
    # bad input fails the same way again: no member is retried. (Which member fails first is up to
    # the scheduler; the other may be cancelled before it starts, so "at most once" per member.)
    runs = [len(list(calls.glob(f"{m}-*"))) for m in (0, 1)]
    assert max(runs) == 1 and sum(runs) >= 1, runs
    assert all(r.finished is None for r in ws.rounds() if r.kind == "train-suggestive")
