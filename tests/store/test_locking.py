"""The writer lock: a second writer waits, then fails naming the holder; succeeds once released."""

from __future__ import annotations

import time

import pytest

from seglearn.store import Workspace, WorkspaceError

from .conftest import child, wait_for

HOLD_LOCK = """
import sys
from seglearn.store import Workspace
ws = Workspace.open(sys.argv[1])
with ws.writer(timeout=5):
    print("LOCKED", flush=True)
    sys.stdin.readline()          # hold until the parent says so
"""


def test_second_process_waits_then_fails_then_succeeds(ws):
    proc = child(HOLD_LOCK, str(ws.root))
    try:
        wait_for(proc, "LOCKED")
        t0 = time.monotonic()
        with pytest.raises(WorkspaceError) as info:
            with ws.writer(timeout=0.3):
                pass
        assert time.monotonic() - t0 >= 0.3
        msg = str(info.value)
        assert f"workspace {ws.root} is busy" in msg
        assert f"pid {proc.pid}" in msg and "holds the writer lock" in msg
        # replacing a workspace that a live process holds is refused, and it stays intact
        with pytest.raises(WorkspaceError, match="busy"):
            Workspace.create(ws.root, force=True)
        assert ws.status()["items"] == 0 and ws.db_path.exists()
        proc.stdin.write("\n")
        proc.stdin.flush()
        with ws.writer(timeout=10):  # waits for the release, then holds it
            assert ws._lock.held
    finally:
        proc.kill()
        proc.communicate(timeout=30)


def test_same_object_reentrant_other_object_excluded(ws):
    other = Workspace.open(ws.root)
    try:
        with ws.writer(timeout=0):
            with ws.writer(timeout=0):
                pass
            assert ws._lock.held  # still held after the inner block
            with pytest.raises(WorkspaceError, match=rf"pid {__import__('os').getpid()}"):
                with other.writer(timeout=0.1):
                    pass
        with other.writer(timeout=0):
            pass
    finally:
        other.close()


def test_negative_timeout(ws):
    with pytest.raises(ValueError, match="timeout"):
        with ws.writer(timeout=-1):
            pass
