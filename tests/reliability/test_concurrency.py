"""Two processes writing one workspace: a `label` waits for the writer lock (saying so), commits
after the holder lets go, or gives up after $SEGLEARN_LOCK_TIMEOUT with one clear message; the
datastore stays consistent (every label row has its file, revisions are 1..n without gaps)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import time

import pytest

from .helpers import TINY, db, integrity, scalar

HOLD = """
import sys
from seglearn.store import Workspace
ws = Workspace.open(sys.argv[1])
with ws.writer(timeout=5):
    print("LOCKED", flush=True)
    sys.stdin.readline()          # hold until the test says so
"""


@pytest.fixture
def ws_masks(zygote, tmp_path):
    """A synthetic workspace and two folders of expert masks for disjoint unlabeled items."""
    ws = tmp_path / "ws"
    status, _ = zygote.run(["init", ws, "--synthetic", 12, *TINY], tmp_path / "init.log")
    assert status == 0, (tmp_path / "init.log").read_text()
    con = db(ws)
    rows = con.execute("SELECT name, mask_path FROM items i WHERE split = 'pool' AND NOT EXISTS "
                       "(SELECT 1 FROM labels l WHERE l.item_id = i.id) ORDER BY id").fetchall()
    con.close()
    folders = []
    for k in range(2):
        d = tmp_path / f"masks{k}"
        d.mkdir()
        for name, mask_path in rows[2 * k:2 * k + 2]:
            shutil.copy(ws / mask_path, d / f"{name}.png")
        folders.append(d)
    return ws, folders


@pytest.fixture
def holder(ws_masks):
    """Another process holding the workspace's writer lock until ``release()``."""
    ws, _ = ws_masks
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(HOLD), str(ws)], text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    line = proc.stdout.readline()
    assert "LOCKED" in line, proc.stderr.read()

    def release():
        if proc.poll() is None:
            proc.stdin.write("\n")
            proc.stdin.flush()
            proc.wait(timeout=30)

    proc.release = release
    yield proc
    release()


def n_labels(ws) -> int:
    return scalar(ws, "SELECT COUNT(*) FROM labels")


def check_consistent(ws) -> None:
    from seglearn.store import Workspace

    assert integrity(ws) == "ok"
    con = db(ws)
    revs: dict[int, list[int]] = {}
    for item, rev in con.execute("SELECT item_id, revision FROM labels ORDER BY item_id, id"):
        revs.setdefault(item, []).append(rev)
    con.close()
    assert all(r == list(range(1, len(r) + 1)) for r in revs.values()), revs
    with Workspace.open(ws) as w:
        report = w.check()
        assert report["missing"] == [] and report["orphans"] == [], report
        for it in w.items(labeled=True):
            w.read_label(it)  # every current label's file matches its checksum


def test_labels_wait_for_the_writer_then_commit(zygote, ws_masks, holder, tmp_path):
    ws, (a, b) = ws_masks
    before = n_labels(ws)
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    pids = [zygote.start(["label", ws, "--masks", d], log) for d, log in zip((a, b), logs)]
    # Wait until both say they are waiting (a fixed sleep was too short on a loaded machine: the
    # lock was released before a child had reached it, and it never had to wait).
    deadline = time.monotonic() + 60
    while not all(log.is_file() and "waiting up to" in log.read_text() for log in logs):
        assert time.monotonic() < deadline, [x.read_text() for x in logs if x.is_file()]
        time.sleep(0.1)
    assert n_labels(ws) == before  # both are waiting, nothing half-written
    holder.release()
    assert [zygote.wait(p) for p in pids] == [0, 0], [x.read_text() for x in logs]
    assert n_labels(ws) == before + 4
    for log in logs:  # the user was told why the command paused, and who held the workspace
        assert f"pid {holder.pid}" in log.read_text() and "waiting up to" in log.read_text()
    check_consistent(ws)


def test_label_gives_up_clearly_while_the_writer_stays(zygote, ws_masks, holder, tmp_path):
    ws, (a, _) = ws_masks
    before = n_labels(ws)
    log = tmp_path / "a.log"
    status, seconds = zygote.run(["label", ws, "--masks", a], log,
                                 env={"SEGLEARN_LOCK_TIMEOUT": "0.5"})
    out = log.read_text()
    assert status == 2 and seconds >= 0.5, out
    assert f"workspace {ws} is busy" in out and f"pid {holder.pid}" in out, out
    assert "Traceback" not in out
    assert n_labels(ws) == before
    holder.release()
    status, _ = zygote.run(["label", ws, "--masks", a], log)  # the retry needs no repair
    assert status == 0 and n_labels(ws) == before + 2
    check_consistent(ws)


def test_same_masks_imported_twice_at_once(zygote, ws_masks, tmp_path):
    """Both imports commit (one after the other): each item gets revisions 1 and 2, both intact."""
    ws, (a, _) = ws_masks
    before = n_labels(ws)
    pids = [zygote.start(["label", ws, "--masks", a], tmp_path / f"{k}.log") for k in range(2)]
    assert [zygote.wait(p) for p in pids] == [0, 0]
    assert n_labels(ws) == before + 4
    check_consistent(ws)


def test_bad_lock_timeout_setting(zygote, ws_masks, tmp_path):
    ws, (a, _) = ws_masks
    log = tmp_path / "a.log"
    status, _ = zygote.run(["label", ws, "--masks", a], log, env={"SEGLEARN_LOCK_TIMEOUT": "soon"})
    assert status == 2 and "SEGLEARN_LOCK_TIMEOUT='soon'" in log.read_text()
    assert "Traceback" not in log.read_text()
