"""The package's import rules (issue 18, "Code shape"):

(a) ``seglearn.active``, ``seglearn.metrics`` and ``seglearn.postprocess`` are numpy only: every
    module of them imports with ``import torch`` made to fail (a fresh interpreter with a
    meta-path finder that refuses torch);
(b) layering, checked statically on every module's imports: only ``seglearn/cli`` imports
    ``seglearn.cli`` (commands return, the CLI prints), and nothing outside ``seglearn/app`` and
    ``seglearn/cli`` imports ``seglearn.app`` (nothing below the commands depends on them).

The runtime's own rules (no torch, scikit-image or MONAI) are tests/runtime's.
"""

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import seglearn

PACKAGE = Path(seglearn.__file__).parent
TORCH_FREE = ("seglearn.active", "seglearn.metrics", "seglearn.postprocess")

# Imports every module of the packages in argv with torch refused; prints each that fails.
BLOCKED_IMPORT = textwrap.dedent("""
    import importlib, pkgutil, sys

    class RefuseTorch:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError(f"import of {name} refused (this package must not need torch)")
            return None

    sys.meta_path.insert(0, RefuseTorch())
    names = []
    for pkg in sys.argv[1:]:
        names.append(pkg)
        names += [m.name for m in pkgutil.walk_packages(importlib.import_module(pkg).__path__,
                                                        pkg + ".")]
    failed = []
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as e:
            failed.append(f"{name}: {e}")
    print("\\n".join(failed) or f"ok: {len(names)} modules")
    sys.exit(1 if failed or "torch" in sys.modules else 0)
""")


def _blocked_import(packages, root: Path = PACKAGE.parent) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKED_IMPORT, *packages], cwd=root,
                          env={**os.environ, "PYTHONPATH": str(root)},
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("package", TORCH_FREE)
def test_numpy_only_packages_import_without_torch(package):
    r = _blocked_import([package])
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("ok: ")


def test_the_torch_blocker_catches_a_torch_import(tmp_path):
    """The check above can fail: a package with one module importing torch is reported."""
    pkg = tmp_path / "fakepkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "clean.py").write_text("import json\n")
    (pkg / "infer.py").write_text("import torch.nn\n")
    r = _blocked_import(["fakepkg"], root=tmp_path)
    assert r.returncode == 1
    assert "fakepkg.infer: import of torch" in r.stdout and "fakepkg.clean" not in r.stdout


def _imports(path: Path, module: str) -> set[str]:
    """Every module ``path`` (the module ``module``) imports, absolute, anywhere in it (function-
    local imports included): ``from seglearn import app`` counts as ``seglearn.app``."""
    out = set()
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against the importing module's package
                parts = module.split(".")[: len(module.split(".")) - node.level + is_pkg]
                base = ".".join(parts + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return out


def _layering_violations(package: Path) -> list[str]:
    """'<file> imports <module>' for each import that breaks rule (b) under ``package``."""
    bad = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package.parent)
        module = ".".join(rel.with_suffix("").parts).removesuffix(".__init__")
        top = rel.parts[1] if len(rel.parts) > 2 else None  # seglearn/<top>/...
        for name in sorted(_imports(path, module)):
            target = name.split(".")
            if target[:1] != [package.name] or len(target) < 2:
                continue
            if target[1] == "cli" and top != "cli":
                bad.append(f"{rel} imports {name} (only seglearn/cli may: commands return, the "
                           "CLI prints)")
            # compute runs app's per-member and per-chunk functions locally or on Ray: it is the
            # commands' execution layer, beside app, not below it
            elif target[1] == "app" and top not in ("app", "cli", "compute"):
                bad.append(f"{rel} imports {name} (nothing below seglearn/app may)")
    return bad


def test_only_cli_imports_cli_and_nothing_below_app_imports_app():
    assert _layering_violations(PACKAGE) == []


def test_the_layering_check_finds_each_kind_of_violation(tmp_path):
    pkg = tmp_path / "seglearn"
    for sub, src in {"cli": "from seglearn.app.demo import run_demo\n",   # allowed
                     "app": "import seglearn.cli.render\n",              # app -> cli
                     "models": "def f():\n    from seglearn.app import select\n",  # local import
                     "store": "from ..app import init\n",                 # relative
                     "data": "from seglearn import cli\n"}.items():       # the package itself
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
        (pkg / sub / "mod.py").write_text(src)
    (pkg / "__init__.py").write_text("import seglearn.config\n")
    found = _layering_violations(pkg)
    assert [f.split(" (")[0] for f in found] == [
        "seglearn/app/mod.py imports seglearn.cli.render",
        "seglearn/data/mod.py imports seglearn.cli",
        "seglearn/models/mod.py imports seglearn.app",
        "seglearn/models/mod.py imports seglearn.app.select",
        "seglearn/store/mod.py imports seglearn.app",
        "seglearn/store/mod.py imports seglearn.app.init",
    ]
