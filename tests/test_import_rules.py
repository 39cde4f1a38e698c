"""The package's import rules (issue 18, "Code shape"):

(a) ``seglearn.active``, ``seglearn.metrics`` and ``seglearn.postprocess`` are numpy only: every
    module of them imports with ``import torch`` made to fail (a fresh interpreter with a
    meta-path finder that refuses torch);
(b) layering, checked statically on every module's imports: only ``seglearn/cli`` imports
    ``seglearn.cli`` (commands return, the CLI prints), and nothing outside ``seglearn/app`` and
    ``seglearn/cli`` imports ``seglearn.app`` (nothing below the commands depends on them).

(c) the CLI starts without torch: ``import seglearn.cli.app`` (what ``--help`` runs) and the
    ``status`` command never load it; each command imports its implementation when it runs;
(d) a function-local import says why it is not at the module's top: a comment starting with
    ``# lazy`` on its line or just above its group of imports (a real cost: torch, MONAI,
    scikit-image, matplotlib, numba kernels, an optional dependency; or a cycle). Everything
    else is imported at the top, where a reader sees a module's dependencies.

The runtime's own rules (no torch, scikit-image or MONAI) are tests/runtime's.
"""

import ast
import os
import subprocess
import sys
import textwrap
import tokenize
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


# Runs argv[1] (a module to import, or "status WORKSPACE") in a fresh interpreter; prints whether
# torch was loaded.
TORCH_PROBE = textwrap.dedent("""
    import importlib, sys
    if sys.argv[1] == "status":
        from seglearn.cli.app import app
        try:
            app(["status", sys.argv[2]], standalone_mode=False)
        except SystemExit as e:
            assert not e.code, e.code
    else:
        importlib.import_module(sys.argv[1])
    print("torch loaded" if "torch" in sys.modules else "no torch")
""")


def _torch_probe(*args: str) -> str:
    r = subprocess.run([sys.executable, "-c", TORCH_PROBE, *args], cwd=PACKAGE.parent,
                       env={**os.environ, "PYTHONPATH": str(PACKAGE.parent)},
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout.strip().splitlines()[-1]


def test_cli_starts_without_torch():
    """``import seglearn.cli.app`` (all that ``seglearn --help`` needs) loads no torch: the
    commands import their implementations (torch for most) when they run."""
    assert _torch_probe("seglearn.cli.app") == "no torch"


def test_the_torch_probe_sees_torch():
    """The probe above can fail: a module that imports torch at its top is reported."""
    assert _torch_probe("seglearn.models.device") == "torch loaded"


def test_status_runs_without_torch(tmp_path):
    from seglearn.app.init import init_workspace
    from seglearn.config import Config

    ws = tmp_path / "ws"
    init_workspace(ws, Config(), synthetic=4, progress=False)
    assert _torch_probe("status", str(ws)) == "no torch"


IMPORTS = (ast.Import, ast.ImportFrom)
FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)


def _unexplained_local_imports(package: Path) -> list[str]:
    """'<file>:<line> <import>' for each import inside a function without a ``# lazy`` reason:
    a comment on its own line(s), or in the comment lines just above the run of imports it
    belongs to (one comment serves a group of imports that share the reason)."""
    bad = []
    for path in sorted(package.rglob("*.py")):
        text = path.read_text()
        tree = ast.parse(text, str(path))
        functions = [f for f in ast.walk(tree) if isinstance(f, FUNCTIONS)]
        local = {id(n) for f in functions for n in ast.walk(f) if isinstance(n, IMPORTS)}
        if not local:
            continue
        lines = text.splitlines()
        with path.open("rb") as f:
            comments = {t.start[0]: t.string for t in tokenize.tokenize(f.readline)
                        if t.type == tokenize.COMMENT}

        def reason_above(line: int) -> bool:
            """A ``# lazy`` among the whole-line comments that end at ``line``."""
            found = False
            while line in comments and lines[line - 1].lstrip().startswith("#"):
                found = found or comments[line].startswith("# lazy")
                line -= 1
            return found

        for node in ast.walk(tree):  # every statement list: runs of imports are siblings
            for body in (getattr(node, f, None) for f in ("body", "orelse", "finalbody")):
                run_ok = None  # None: not in a run of imports; else whether the run has a reason
                for stmt in body if isinstance(body, list) else ():
                    if not isinstance(stmt, IMPORTS):
                        run_ok = None
                        continue
                    if run_ok is None:
                        run_ok = reason_above(stmt.lineno - 1)
                    own = any("# lazy" in comments.get(n, "")
                              for n in range(stmt.lineno, stmt.end_lineno + 1))
                    if id(stmt) in local and not (run_ok or own):
                        bad.append(f"{path.relative_to(package.parent)}:{stmt.lineno} "
                                   f"{ast.unparse(stmt)}")
    return bad


def test_every_function_local_import_says_why():
    """Imports belong at a module's top; one inside a function must say what it avoids."""
    bad = _unexplained_local_imports(PACKAGE)
    assert bad == [], (f"{len(bad)} function-local imports without a '# lazy: <reason>' comment:\n"
                       + "\n".join(bad))


def test_the_local_import_check_finds_unexplained_imports(tmp_path):
    pkg = tmp_path / "seglearn"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("import json\n")
    (pkg / "mod.py").write_text(textwrap.dedent("""
        import os
        try:
            import yaml  # a module-level import: not checked
        except ImportError:
            yaml = None


        def explained_group():
            # lazy: torch, only when a model is built
            # (a second line of the reason)
            import torch
            from torch import nn

            return torch, nn


        def trailing():
            import shapely  # lazy: shapely, optional
            return shapely


        def unexplained():
            \"\"\"A docstring.\"\"\"
            import numpy as np
            return np


        def second_run_unexplained():
            # lazy: torch
            import torch
            x = 1
            import math
            return torch, math, x


        def not_lazy_comment():
            # a comment that is no reason
            from pathlib import Path
            return Path


        class C:
            def method(self):
                if self:
                    import json
                    return json
                else:
                    # lazy: cycle with seglearn.other
                    from seglearn import other
                    return other
        """))
    assert [b.split(":", 1)[1] for b in _unexplained_local_imports(pkg)] == [
        "25 import numpy as np",
        "33 import math",
        "39 from pathlib import Path",
        "46 import json",
    ]
