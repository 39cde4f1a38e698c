"""``pip install seglearn[runtime]`` is enough to deploy: a fresh virtual environment with only the
project's core requirements (read from pyproject.toml) and the project itself (``--no-deps``) runs
``seglearn-predict`` on an exported .slq and writes exactly the
labels of the full environment. It needs the package registry (pip's cache makes it ~1 minute), so
it runs where ``CI`` is set (``.ci/run``) and is skipped elsewhere."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny_slq import BLOCKED, write_png, write_tiny_slq

from seglearn.runtime import load_model

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    not os.environ.get("CI"),
    reason="builds a virtual environment from the package registry (pip install of the runtime "
           "requirements); runs in CI (set CI=1 to run it here)")


def _pip(*args: str) -> None:
    """This environment's pip (the venv is made without one: ensurepip alone takes seconds)."""
    r = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]


def _setuptools_builds_wheels() -> bool:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return tuple(int(x) for x in version("setuptools").split(".")[:2]) >= (70, 1)
    except (PackageNotFoundError, ValueError):
        return False


def _clean_env() -> dict:
    """The environment without this checkout on the path (the venv must use its own install)."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}


def test_runtime_only_venv_predicts_like_the_full_environment(tmp_path):
    model = write_tiny_slq(tmp_path / "tiny.slq")
    img = write_png(tmp_path / "glands.png")
    want = load_model(model).predict(img)
    assert want.max() >= 2

    requirements = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert not any(r.split("[")[0].split(">")[0].split("=")[0].strip().lower() in
                   ("torch", "scikit-image", "monai", "scikit-learn") for r in requirements)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    py = str(venv / "bin" / "python")
    install = ["--python", py, "install", "-q", "--disable-pip-version-check", "--no-compile"]
    _pip(*install, *requirements)
    src = tmp_path / "src"  # a copy: building in the checkout would leave build/ and egg-info there
    shutil.copytree(ROOT / "seglearn", src / "seglearn", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    # the wheel is built here, installed there without its deps; this environment's setuptools
    # builds it when it can (>= 70.1 writes wheels itself), else pip's isolated build fetches one
    _pip("wheel", "-q", "--no-deps", *(["--no-build-isolation"] if _setuptools_builds_wheels() else []),
         "-w", str(tmp_path / "wheel"), str(src))
    _pip(*install, "--no-deps", *map(str, (tmp_path / "wheel").glob("seglearn-*.whl")))

    probe = subprocess.run([py, "-c", "import importlib.util as u; print([m for m in %r if u.find_spec(m)])"
                            % (BLOCKED,)], capture_output=True, text=True, env=_clean_env(), cwd=tmp_path)
    assert probe.stdout.strip() == "[]", probe.stdout + probe.stderr  # none of them is installed

    # the installed console script (``python -m seglearn.runtime``: test_runtime_imports.py)
    r = subprocess.run([str(venv / "bin" / "seglearn-predict"), str(model), str(tmp_path / "glands.png"),
                        "--out", str(tmp_path / "out")],
                       capture_output=True, text=True, env=_clean_env(), cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / "glands.png")), want)
