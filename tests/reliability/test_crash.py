"""Crash safety: `seglearn label`, `train` and `select` killed with SIGKILL at random moments.

After every kill: the database passes ``PRAGMA integrity_check``, a label import is all or nothing,
the same command then runs to completion without any manual repair, and an interrupted ``train``
continues with ``--resume`` from its last checkpoint (the resumed member starts at the checkpoint's
step, the finished round has every member). A few kills are placed exactly (inside the label
transaction, between a model file and its database row) where random delays would rarely land.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time

import numpy as np
import pytest

from .helpers import TINY, db, integrity, scalar, spy_events

STEPS = 16      # steps per member: long enough that random kills land mid-training
EVERY = 2       # train.checkpoint_every
MEMBERS = 2
BUDGET = 2
N_MASKS = 4
KILLED = -signal.SIGKILL
pytestmark = pytest.mark.slow  # still run by default: about half a minute


@pytest.fixture
def loop_ws(zygote, tmp_path):
    """A synthetic workspace (12 pool images, 2 labeled) plus a folder of 4 expert masks."""
    ws = tmp_path / "ws"
    status, _ = zygote.run(["init", ws, "--synthetic", 16, *TINY, "--set", f"train.steps={STEPS}",
                            "--set", f"train.checkpoint_every={EVERY}"], tmp_path / "init.log")
    assert status == 0, (tmp_path / "init.log").read_text()
    masks = tmp_path / "masks"
    masks.mkdir()
    con = db(ws)
    rows = con.execute("SELECT i.name, i.mask_path FROM items i WHERE i.split = 'pool' AND NOT "
                       "EXISTS (SELECT 1 FROM labels l WHERE l.item_id = i.id) ORDER BY i.id").fetchall()
    con.close()
    for name, mask_path in rows[:N_MASKS]:
        shutil.copy(ws / mask_path, masks / f"{name}.png")
    return ws, masks


def n_labels(ws) -> int:
    return scalar(ws, "SELECT COUNT(*) FROM labels")


def check_store(ws) -> dict:
    """Integrity ok and no committed label without its file; returns Workspace.check()."""
    from seglearn.store import Workspace

    assert integrity(ws) == "ok"
    with Workspace.open(ws) as w:
        report = w.check()
    assert report["integrity"] == "ok" and report["missing"] == [], report
    return report


def newest_round(ws, kind: str):
    con = db(ws)
    try:
        return con.execute("SELECT id, finished FROM rounds WHERE kind = ? ORDER BY id DESC LIMIT 1",
                           (kind,)).fetchone()
    finally:
        con.close()


def partial_checkpoints(ws) -> dict[str, int]:
    """member checkpoint path -> step, for members of the newest unfinished suggestive round that
    stopped in the middle (0 < step < STEPS)."""
    from seglearn.train.engine import load_checkpoint

    row = newest_round(ws, "train-suggestive")
    if row is None or row[1] is not None:
        return {}
    out = {}
    for p in sorted((ws / "models" / f"round_{row[0]:02d}" / "suggestive").glob("member_*.pt")):
        step = int(load_checkpoint(p)["step"])
        if 0 < step < STEPS:
            out[str(p)] = step
    return out


def check_round_complete(ws) -> None:
    rid, finished = newest_round(ws, "train-suggestive")
    assert finished is not None
    con = db(ws)
    members = sorted(r[0] for r in con.execute(
        "SELECT member FROM models WHERE round_id = ? AND role = 'suggestive'", (rid,)))
    con.close()
    assert members == list(range(MEMBERS)), f"round {rid} has members {members}"


def resume(zygote, ws, log, spy) -> list[dict]:
    """`train --resume` to completion; returns its fit events. Checks what it resumed from.
    With no unfinished round (killed before it started one, or after it finished) it must refuse."""
    partial = partial_checkpoints(ws)
    row = newest_round(ws, "train-suggestive")
    if row is None or row[1] is not None:
        rounds = scalar(ws, "SELECT COUNT(*) FROM rounds")
        status, _ = zygote.run(["train", ws, "--resume", "--no-progress"], log, spy)
        assert status == 2 and "nothing to resume" in log.read_text(), log.read_text()
        assert scalar(ws, "SELECT COUNT(*) FROM rounds") == rounds
        return []
    status, _ = zygote.run(["train", ws, "--resume", "--no-progress"], log, spy)
    assert status == 0, log.read_text()
    fits = spy_events(spy, "fit")
    for f in fits:
        if f["checkpoint"] in partial:
            assert f["resumed_from"] == partial[f["checkpoint"]] > 0, (f, partial)
    check_round_complete(ws)
    return [f for f in fits if f["resumed_from"] > 0]


def expected_predicts(ws) -> int:
    """Inference calls a full `select` needs now: unscored unlabeled pool items + the sheet's k."""
    con = db(ws)
    try:
        rid = con.execute("SELECT MAX(m.round_id) FROM models m JOIN rounds r ON r.id = m.round_id "
                          "WHERE m.role = 'suggestive' AND r.finished IS NOT NULL").fetchone()[0]
        pool = {r[0] for r in con.execute(
            "SELECT id FROM items i WHERE split = 'pool' AND NOT EXISTS "
            "(SELECT 1 FROM labels l WHERE l.item_id = i.id)")}
        # the key select stores scores under (Ensemble.version): role, round and, unless 1, the
        # scale the members were trained at (recorded in each model row's metrics)
        scale = json.loads(con.execute("SELECT metrics FROM models WHERE role = 'suggestive' AND "
                                       "round_id = ?", (rid,)).fetchone()[0] or "{}").get("scale")
        version = f"suggestive-round{rid:02d}"
        version = version if scale in (None, 1.0) else f"{version}-x{scale:g}"
        scored = {r[0] for r in con.execute("SELECT item_id FROM scores WHERE model_version = ?",
                                            (version,))}
    finally:
        con.close()
    return len(pool - scored) + min(BUDGET, len(pool))


def check_suggestions(ws) -> None:
    # a round's suggestions are written in one transaction: all k rows or none
    con = db(ws)
    counts = [r[0] for r in con.execute("SELECT COUNT(*) FROM suggestions GROUP BY round_id")]
    con.close()
    assert all(c == BUDGET for c in counts), counts


def test_random_sigkills(zygote, loop_ws, tmp_path):
    ws, masks = loop_ws
    cmds = {"label": ["label", ws, "--masks", masks],
            "train": ["train", ws, "--no-progress"],
            "select": ["select", ws, "--budget", BUDGET, "--no-progress"]}
    # One clean run of each measures how long it takes (and gives select an ensemble).
    duration = {}
    for name in ("label", "train", "select"):
        status, duration[name] = zygote.run(cmds[name], tmp_path / f"{name}.log")
        assert status == 0, (tmp_path / f"{name}.log").read_text()
    rng = np.random.default_rng(1234)
    plan = ["label"] * 10 + ["train"] * 6 + ["select"] * 8
    rng.shuffle(plan)
    kills = 0
    for i, name in enumerate(plan):
        log, spy = tmp_path / f"{i:02d}-{name}.log", tmp_path / f"{i:02d}-{name}.spy"
        labels_before = n_labels(ws)
        pid = zygote.start(cmds[name], log)
        time.sleep(rng.uniform(0.0, 0.8 * duration[name]))
        os.kill(pid, signal.SIGKILL)  # a finished child is a zombie until reaped: still fine
        status = zygote.wait(pid)
        assert status in (0, KILLED), log.read_text()
        kills += status == KILLED
        check_store(ws)
        delta = n_labels(ws) - labels_before
        assert delta == (N_MASKS if (name == "label" and status == 0) else 0) or \
            (name == "label" and delta in (0, N_MASKS)), f"label import was split: {delta} rows"
        # The next command runs as is: no repair step in between.
        if name == "label":
            before = n_labels(ws)
            status, _ = zygote.run(cmds["label"], log)
            assert status == 0 and n_labels(ws) - before == N_MASKS, log.read_text()
        elif name == "train":
            resume(zygote, ws, log, spy)  # asserts it continued every partial member
        else:
            check_suggestions(ws)
            want = expected_predicts(ws)
            status, _ = zygote.run(cmds["select"], log, spy)
            assert status == 0, log.read_text()
            assert len(spy_events(spy, "predict")) == want  # stored scores are not recomputed
            check_suggestions(ws)
    assert kills >= 20, f"only {kills} of {len(plan)} commands were still running when killed"
    report = check_store(ws)
    # orphans are label files of killed transactions: never referenced, safe to delete
    assert all(p.startswith("labels/") for p in report["orphans"])


def test_kill_inside_label_transaction(zygote, loop_ws, tmp_path):
    ws, masks = loop_ws
    before = n_labels(ws)
    status, _ = zygote.run(["label", ws, "--masks", masks], tmp_path / "a.log",
                           die_after=("seglearn.store.labelio", "write_atomic", 2))
    assert status == KILLED
    assert n_labels(ws) == before  # two of four files were written, no row is visible
    report = check_store(ws)
    assert len(report["orphans"]) == 2
    status, _ = zygote.run(["label", ws, "--masks", masks], tmp_path / "b.log")
    assert status == 0 and n_labels(ws) == before + N_MASKS


def test_kill_between_model_file_and_its_record(zygote, loop_ws, tmp_path):
    """Member 0's checkpoint and sidecar are complete, its database row is not written yet."""
    ws, _ = loop_ws
    status, _ = zygote.run(["train", ws, "--no-progress"], tmp_path / "a.log",
                           die_after=("seglearn.app.train", "save_sidecar", 1))
    assert status == KILLED
    check_store(ws)
    assert scalar(ws, "SELECT COUNT(*) FROM models") == 0
    resume(zygote, ws, tmp_path / "b.log", tmp_path / "b.spy")
    status, _ = zygote.run(["select", ws, "--budget", BUDGET, "--no-progress"], tmp_path / "c.log")
    assert status == 0, (tmp_path / "c.log").read_text()


def test_kill_mid_training_resumes_from_checkpoint(zygote, loop_ws, tmp_path):
    ws, _ = loop_ws
    status, _ = zygote.run(["train", ws, "--no-progress"], tmp_path / "a.log",
                           die_after=("seglearn.train.engine", "save_checkpoint", 2))
    assert status == KILLED
    assert list(partial_checkpoints(ws).values()) == [2 * EVERY]
    spy = tmp_path / "b.spy"
    resumed = resume(zygote, ws, tmp_path / "b.log", spy)
    assert [f["resumed_from"] for f in resumed] == [2 * EVERY]
    assert [f["resumed_from"] for f in spy_events(spy, "fit")] == [2 * EVERY, 0]
