"""Shared helpers of the reliability tests: tiny settings, the fork server, database peeks."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
SEGLEARN = Path(sys.executable).parent / "seglearn"  # the console script of this venv

# The same tiny end-to-end settings as tests/cli/conftest.py: 32x32 crops, width-4 FCNs.
TINY = ["--set", "synthetic.size=32", "--set", "data.crop=32", "--set", "model.width=4",
        "--set", "model.depth=3", "--set", "train.steps=3", "--set", "ensemble.members=2",
        "--set", "data.batch_size=2", "--set", "train.bf16=false"]


class Zygote:
    """Client of zygote.py: start commands as forked children of a pre-imported server."""

    def __init__(self) -> None:
        env = dict(os.environ, COLUMNS="200", OMP_NUM_THREADS="1")
        self.proc = subprocess.Popen([sys.executable, str(HERE / "zygote.py")], text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        self._ask_line(timeout_hint="imports")

    def _ask_line(self, timeout_hint: str = "") -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"fork server died ({timeout_hint})")
        return json.loads(line)

    def _ask(self, req: dict) -> dict:
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        return self._ask_line(str(req))

    def start(self, argv: list, log: Path, spy: Path | None = None,
              die_after: tuple[str, str, int] | None = None, env: dict | None = None) -> int:
        return self._ask({"argv": [str(a) for a in argv], "log": str(log), "env": env or {},
                          "spy": str(spy) if spy else None, "die_after": die_after})["pid"]

    def wait(self, pid: int) -> int:
        return self._ask({"wait": pid})["status"]

    def run(self, argv: list, log: Path, spy: Path | None = None,
            die_after: tuple[str, str, int] | None = None,
            env: dict | None = None) -> tuple[int, float]:
        """Run to completion (or to its self-kill): (exit status, seconds)."""
        t0 = time.perf_counter()
        status = self.wait(self.start(argv, log, spy, die_after, env))
        return status, time.perf_counter() - t0

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def db(ws: Path) -> sqlite3.Connection:
    """A plain read-only SQLite connection to a workspace (no seglearn code in between)."""
    return sqlite3.connect(f"file:{ws / 'seglearn.db'}?mode=ro", uri=True, timeout=30)


def scalar(ws: Path, sql: str, *args):
    con = db(ws)
    try:
        return con.execute(sql, args).fetchone()[0]
    finally:
        con.close()


def integrity(ws: Path) -> str:
    return scalar(ws, "PRAGMA integrity_check")


def spy_events(path: Path, event: str) -> list[dict]:
    if not path.exists():
        return []
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    return [r for r in rows if r["event"] == event]


def write_png(path: Path, arr: np.ndarray) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path
