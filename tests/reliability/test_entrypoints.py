"""The real entry points, as separate processes: `python -m seglearn.cli.app` and the console
script print one clear line per problem on stderr (no traceback, no source lines), exit 2."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

from .helpers import SEGLEARN, write_png


def run(*argv, env=None):
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, **(env or {})))


def test_python_dash_m_runs_the_commands():
    r = run(sys.executable, "-m", "seglearn.cli.app", "--help")
    assert r.returncode == 0, r.stderr
    for cmd in ("init", "train", "select", "label", "predict"):
        assert cmd in r.stdout


def test_console_script_reports_a_non_utf8_name_in_one_line(tmp_path):
    write_png(tmp_path / "im" / "a.png", np.zeros((8, 8, 3), np.uint8))
    os.rename(tmp_path / "im" / "a.png", os.fsencode(tmp_path / "im") + b"/b\xff.png")
    write_png(tmp_path / "im" / "a.png", np.zeros((8, 8, 3), np.uint8))
    for env in ({}, {"LC_ALL": "C", "LANG": "C"}):  # also where the terminal is not UTF-8
        r = run(SEGLEARN, "init", tmp_path / "ws", "--images", tmp_path / "im", env=env)
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert lines[-1] == (f"error: image {tmp_path}/im/b\\xff.png: its file name (or a folder "
                             "above it) is not valid UTF-8; seglearn stores paths as text, so "
                             "rename it first"), r.stderr
        assert all(x.startswith(("warning: ", "error: ")) for x in lines), r.stderr
        assert not (tmp_path / "ws").exists()


def test_console_script_not_a_workspace(tmp_path):
    r = run(SEGLEARN, "status", tmp_path / "nowhere")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == (f"error: {tmp_path}/nowhere is not a seglearn workspace: "
                                "no such folder")
