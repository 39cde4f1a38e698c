"""Killed processes: a committed label survives SIGKILL; a kill inside the transaction leaves
nothing visible and a healthy database."""

from __future__ import annotations

import os
import signal

import numpy as np

from seglearn.store import LabelEntry, Workspace

from .conftest import child, random_mask, wait_for

WRITE_AND_DIE = """
import os, signal, sys
import numpy as np
from seglearn.store import LabelEntry, Workspace
ws = Workspace.open(sys.argv[1])
mask = np.random.default_rng(7).integers(0, 300, (6, 7))
ws.add_labels([LabelEntry(1, mask, source="expert", round=1)])
os.kill(os.getpid(), signal.SIGKILL)   # right after commit returns: no close, no checkpoint
"""

DIE_IN_TRANSACTION = """
import sys, time
import numpy as np
from seglearn.store import LabelEntry, Workspace
def hang(self, what):
    print("IN-TRANSACTION", flush=True)
    time.sleep(60)
Workspace._before_commit = hang
ws = Workspace.open(sys.argv[1])
ws.add_labels([LabelEntry(1, np.ones((6, 7), int)), LabelEntry(2, np.ones((6, 7), int))])
"""


def test_label_survives_sigkill_after_commit(pool_ws):
    proc = child(WRITE_AND_DIE, str(pool_ws.root))
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, err
    with Workspace.open(pool_ws.root) as ws:
        assert np.array_equal(ws.read_label(1), random_mask(7))
        assert ws.item(1).label.round == 1
        assert ws.check()["integrity"] == "ok"


def test_kill_inside_label_transaction(pool_ws):
    ws = pool_ws
    proc = child(DIE_IN_TRANSACTION, str(ws.root))
    try:
        wait_for(proc, "IN-TRANSACTION")
        assert (ws.root / "labels" / "a.r1.png").exists()  # killed after its files were written
        assert ws.items(labeled=True) == []  # other readers never see an uncommitted label
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    with Workspace.open(ws.root) as again:
        assert again.items(labeled=True) == []
        report = again.check()
        assert report["integrity"] == "ok" and report["missing"] == []
        assert report["orphans"] == ["labels/a.r1.png", "labels/b.r1.png"]
        again.add_labels([LabelEntry(1, random_mask(3))])  # the next write works
        assert np.array_equal(again.read_label(1), random_mask(3))
        assert again.check(repair=True)["orphans"] == ["labels/b.r1.png"]
        assert again.check()["orphans"] == []
    assert np.array_equal(ws.read_label("a"), random_mask(3))  # the old connection sees it too
