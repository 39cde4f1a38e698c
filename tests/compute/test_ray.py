"""compute.backend=ray (issue 17): the cluster cases of ``ray_cases.py`` run in a child pytest, one
test here per case; a wrong or malformed cluster address fails at once with the address named
(these two start no cluster and run in this process).

Why a child process: when a Ray-internal process dies (the raylet, or an agent it fate-shares
with), Ray ends the *driver* with ``_exit(1)``. With the cluster in the suite's own process that
ends the whole pytest run mid-line with no summary (seen once in CI). In a child, such a death is a
readable failure here, with the tail of Ray's own logs. A child that died without reporting its
cases (never one whose case failed an assertion) is run once more and says so."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="ray is not installed (pip install 'seglearn[ray]')")

import compute.ray_cases as ray_cases  # noqa: E402
from compute.ray_cases import RAY, TINY, _ws  # noqa: E402
from seglearn.compute import ComputeError, get_backend  # noqa: E402
from seglearn.config import load_config, with_values  # noqa: E402
from seglearn.store import Workspace  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CASES_FILE = Path(__file__).with_name("ray_cases.py")
# every test function of the cases file, in its order: a case added there is reported here too
CASES = [name for name in vars(ray_cases) if name.startswith("test_")]
CHILD_TIMEOUT = 900


def _ray_log_tail(temp_dir: Path, lines: int = 15) -> str:
    """The last lines of the raylet's and the GCS's logs of the child's Ray session."""
    out = []
    for name in ("raylet.out", "raylet.err", "gcs_server.out", "gcs_server.err"):
        for f in sorted(temp_dir.glob(f"session_*/logs/{name}")):
            text = f.read_text(errors="replace").splitlines()[-lines:]
            if text:
                out.append(f"--- {f.relative_to(temp_dir)}\n" + "\n".join(text))
    return "\n".join(out) or "(no Ray logs found)"


def _run_child(work: Path) -> tuple[dict[str, str], str]:
    """Run ``ray_cases.py`` in a child pytest: ({case: "passed" | failure text}, diagnostics)."""
    temp_dir = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Ray's socket paths
    report = work / "cases.xml"
    env = {**os.environ, "SEGLEARN_TEST_RAY_TMP": str(temp_dir)}
    env.pop("RAY_ADDRESS", None)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", str(CASES_FILE), "-q", "-p", "no:cacheprovider",
             f"--junitxml={report}", f"--basetemp={work / 'tmp'}", "-o", "addopts="],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=CHILD_TIMEOUT)
        diag = (f"child pytest exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}"
                f"\n{_ray_log_tail(temp_dir)}")
    except subprocess.TimeoutExpired:
        diag = f"child pytest ran past {CHILD_TIMEOUT} s\n{_ray_log_tail(temp_dir)}"
    results: dict[str, str] = {}
    if report.exists():
        for case in ET.parse(report).getroot().iter("testcase"):
            bad = next((c for c in case if c.tag in ("failure", "error")), None)
            results[case.get("name")] = "passed" if bad is None else (
                (bad.get("message") or "") + "\n" + (bad.text or ""))
    return results, diag


@pytest.fixture(scope="module")
def cluster_cases(tmp_path_factory) -> tuple[dict[str, str], str]:
    results, diag = _run_child(tmp_path_factory.mktemp("ray-child-1"))
    if not all(c in results for c in CASES):  # the child died before reporting: not a case failing
        warnings.warn(f"the Ray child run died before reporting all its cases; running it once "
                      f"more. What it left:\n{diag}")
        results, diag = _run_child(tmp_path_factory.mktemp("ray-child-2"))
    return results, diag


@pytest.mark.parametrize("case", CASES)
def test_cluster_case(cluster_cases, case):
    results, diag = cluster_cases
    assert case in results, f"{case} was not reported by the child run:\n{diag}"
    assert results[case] == "passed", f"{case} failed in the child run:\n{results[case]}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_bad_address_fails_fast_naming_it(tmp_path):
    port = _free_port()  # nothing listens there
    addr = f"127.0.0.1:{port}"
    cfg = with_values(load_config(None, TINY), {"compute.backend": "ray", "compute.address": addr})
    t0 = time.monotonic()
    with pytest.raises(ComputeError, match=f"compute.address={addr}"):
        get_backend(cfg)
    assert time.monotonic() - t0 < 10
    # end to end: the CLI prints one line naming the address, exit 2, and opens no round
    ws = tmp_path / "ws"
    _ws(ws, 8, load_config(None, TINY)).close()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "seglearn.cli.app", "train", str(ws),
                          "--no-progress", *[a for s in TINY + RAY for a in ("--set", s)],
                          "--set", f"compute.address={addr}"],
                         capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and addr in lines[0], out.stderr
    assert "Traceback" not in out.stderr
    assert time.monotonic() - t0 < 60
    with Workspace.open(ws) as w:
        assert not [r for r in w.rounds() if r.kind == "train-suggestive"]


def test_malformed_address_is_a_config_error():
    from seglearn.config import ConfigError

    with pytest.raises(ConfigError, match="compute.address must be auto, HOST:PORT"):
        load_config(None, ["compute.address=headnode"])
    with pytest.raises(ConfigError, match="compute.backend must be one of local, ray"):
        load_config(None, ["compute.backend=slurm"])
    assert load_config(None, ["compute.address=ray://10.0.0.5:10001"]).compute.address
