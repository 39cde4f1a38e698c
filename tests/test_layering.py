"""Import rules of the package, checked statically over the source (issue 18, move 4).

- ``seglearn/quant/**`` imports nothing from ``seglearn.train``: train builds on quant (the
  callback protocol and every schedule live in ``seglearn.quant.schedules``), never the reverse.
- ``seglearn/store/runs.py`` does not import ``seglearn/store/workspace.py``: the Workspace owns a
  ``Runs`` and hands it what it needs, so the dependency goes one way.

Every import statement counts, function-local ones included (``ast.walk``); relative imports are
resolved against the file's package, and ``from X import y`` counts as importing ``X`` and ``X.y``
(``y`` may be a submodule).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "seglearn"


def module_name(path: Path) -> str:
    """``seglearn/quant/tsq.py`` -> ``seglearn.quant.tsq`` (a package's ``__init__`` is the package)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every module name the source of ``module`` may import."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def forbidden(found: set[str], prefix: str) -> list[str]:
    return sorted(m for m in found if m == prefix or m.startswith(prefix + "."))


def imports_of(path: Path) -> set[str]:
    return imported_modules(path.read_text(encoding="utf-8"), module_name(path),
                            is_package=path.name == "__init__.py")


# ---------------------------------------------------------------- the checker itself

@pytest.mark.parametrize("source", [
    "from seglearn.train.callbacks import Callback",
    "import seglearn.train.engine",
    "from seglearn import train",
    "from ..train import callbacks",
    "from ..train.callbacks import Callback",
    "def f():\n    from seglearn.train.engine import fit\n",
])
def test_checker_finds_quant_importing_train(source):
    assert forbidden(imported_modules(source, "seglearn.quant.elq"), "seglearn.train")


@pytest.mark.parametrize("source", [
    "from .workspace import now",
    "from . import workspace",
    "from seglearn.store.workspace import Workspace",
    "from seglearn.store import workspace",
    "def start_round(self):\n    from .workspace import now\n",  # the old mixin's way
])
def test_checker_finds_runs_importing_workspace(source):
    assert forbidden(imported_modules(source, "seglearn.store.runs"), "seglearn.store.workspace")


@pytest.mark.parametrize("source,module", [
    ("from .schedules import Callback", "seglearn.quant.convert"),
    ("from seglearn.quant.base import Quantizer\nimport torch", "seglearn.quant.elq"),
    ("from .records import now\nfrom .errors import WorkspaceError", "seglearn.store.runs"),
    ("from . import base", "seglearn.quant"),  # a package's own submodule, not seglearn.train
])
def test_checker_passes_allowed_imports(source, module):
    found = imported_modules(source, module, is_package=module == "seglearn.quant")
    assert not forbidden(found, "seglearn.train") and not forbidden(found, "seglearn.store.workspace")


# ---------------------------------------------------------------- the rules on the real tree

def test_quant_imports_nothing_from_train():
    files = sorted((PKG / "quant").rglob("*.py"))
    assert len(files) > 10  # the zoo is there: the glob did not silently match nothing
    bad = {module_name(f): forbidden(imports_of(f), "seglearn.train") for f in files}
    assert {m: v for m, v in bad.items() if v} == {}


def test_runs_does_not_import_workspace():
    runs = PKG / "store" / "runs.py"
    assert forbidden(imports_of(runs), "seglearn.store.workspace") == []
    # and the dependency it replaces goes the other way: the Workspace composes Runs
    assert "seglearn.store.runs" in imports_of(PKG / "store" / "workspace.py")


def test_importing_quant_loads_no_train_module():
    """The same rule at run time (catches importlib-style imports the AST cannot see)."""
    code = ("import sys, seglearn.quant, seglearn.quant.convert, seglearn.quant.schedules\n"
            "print(sorted(m for m in sys.modules if m.startswith('seglearn.train')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
