"""Helpers for the workspace datastore tests: tiny items, masks and child processes."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from seglearn.store import ItemRecord, Workspace

SHA = hashlib.sha256(b"image bytes").hexdigest()
H, W = 6, 7


def record(name: str, split: str = "pool", h: int = H, w: int = W, **kw) -> ItemRecord:
    return ItemRecord(name, f"images/{name}.png", split, h, w, SHA, **kw)


def random_mask(seed: int, h: int = H, w: int = W, n: int = 300) -> np.ndarray:
    # labels above 255 so a uint8 round trip would be caught
    return np.random.default_rng(seed).integers(0, n, (h, w)).astype(np.int64)


@pytest.fixture
def ws(tmp_path):
    w = Workspace.create(tmp_path / "ws")
    yield w
    w.close()


@pytest.fixture
def pool_ws(ws):
    """A workspace with pool items a, b, c (ids 1, 2, 3)."""
    assert ws.add_items([record("a"), record("b"), record("c")]) == [1, 2, 3]
    return ws


def child(code: str, *args: str, **kw) -> subprocess.Popen:
    """Start ``python -c code args`` with pipes (the code is dedented)."""
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def wait_for(proc: subprocess.Popen, marker: str) -> None:
    line = proc.stdout.readline()
    if marker not in line:
        proc.kill()
        raise AssertionError(f"child did not reach {marker!r}: {line!r} {proc.stderr.read()}")
