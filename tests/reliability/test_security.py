"""Nothing seglearn loads can execute code: an AST scan of the package for pickle, eval/exec and
unsafe loaders (itself tested on snippets, so it can fail), and configs that are never evaluated."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import seglearn

PACKAGE = Path(seglearn.__file__).parent
PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "shelve", "marshal",
                  "joblib"}
SAFE_YAML_LOADERS = {"yaml.SafeLoader", "yaml.CSafeLoader", "yaml.BaseLoader", "yaml.CBaseLoader"}


class Scanner(ast.NodeVisitor):
    """Collects (line, problem) for every way a file could run code hidden in data."""

    def __init__(self) -> None:
        self.aliases: dict[str, str] = {}
        self.problems: list[tuple[int, str]] = []

    def flag(self, node: ast.AST, what: str) -> None:
        self.problems.append((node.lineno, what))

    def visit_Import(self, node: ast.Import) -> None:
        for a in node.names:
            if a.name.split(".")[0] in PICKLE_MODULES:
                self.flag(node, f"imports {a.name}")
            self.aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        mod = node.module or ""
        if mod.split(".")[0] in PICKLE_MODULES:
            self.flag(node, f"imports from {mod}")
        for a in node.names:
            self.aliases[a.asname or a.name] = f"{mod}.{a.name}"

    def dotted(self, node: ast.AST) -> str | None:
        """The full dotted name of ``np.load`` style expressions, import aliases resolved."""
        if isinstance(node, ast.Name):
            return self.aliases.get(node.id, node.id)
        if isinstance(node, ast.Attribute):
            base = self.dotted(node.value)
            return f"{base}.{node.attr}" if base else None
        return None

    def visit_Call(self, node: ast.Call) -> None:
        name = self.dotted(node.func) or ""
        kw = {k.arg: k.value for k in node.keywords if k.arg}

        def is_const(key, value) -> bool:
            return isinstance(kw.get(key), ast.Constant) and kw[key].value is value

        if name in ("eval", "exec", "builtins.eval", "builtins.exec"):
            self.flag(node, f"calls {name}()")
        if "allow_pickle" in kw and not is_const("allow_pickle", False):
            self.flag(node, "passes allow_pickle other than False")
        if name == "numpy.load" and not is_const("allow_pickle", False):
            self.flag(node, "numpy.load without allow_pickle=False")
        if name == "torch.load" and not is_const("weights_only", True):
            self.flag(node, "torch.load without weights_only=True")
        if name in ("yaml.unsafe_load", "yaml.unsafe_load_all", "yaml.full_load",
                    "yaml.full_load_all"):
            self.flag(node, f"calls {name}")
        if name in ("yaml.load", "yaml.load_all"):
            loader = kw.get("Loader", node.args[1] if len(node.args) > 1 else None)
            if loader is None or self.dotted(loader) not in SAFE_YAML_LOADERS:
                self.flag(node, f"{name} without a safe Loader")
        if name.endswith(".read_pickle") or name in ("torch.jit.load", "os.system"):
            self.flag(node, f"calls {name}")
        self.generic_visit(node)


def scan(source: str) -> list[tuple[int, str]]:
    s = Scanner()
    s.visit(ast.parse(source))
    return s.problems


@pytest.mark.parametrize("snippet", [
    "import pickle", "import dill as d", "from pickle import loads", "import joblib",
    "eval('1')", "exec('x = 1')", "import builtins\nbuiltins.eval('1')",
    "import numpy as np\nnp.load('a.npy')", "import numpy as np\nnp.load('a.npy', allow_pickle=True)",
    "from numpy import load\nload('a.npy')", "import numpy\nnumpy.load(f, allow_pickle=flag)",
    "import torch\ntorch.load('m.pt')", "import torch\ntorch.load('m.pt', weights_only=False)",
    "from torch import load as tl\ntl('m.pt')",
    "import yaml\nyaml.load(s)", "import yaml\nyaml.load(s, Loader=yaml.Loader)",
    "import yaml\nyaml.unsafe_load(s)", "import yaml\nyaml.full_load(s)",
    "import pandas as pd\npd.read_pickle('x')", "import os\nos.system('ls')",
])
def test_scanner_flags_unsafe_code(snippet):
    assert scan(snippet), snippet


@pytest.mark.parametrize("snippet", [
    "import numpy as np\nnp.load(b, allow_pickle=False)",
    "import torch\ntorch.load(p, map_location='cpu', weights_only=True)",
    "import yaml\nyaml.safe_load(s)", "import yaml\nyaml.load(s, Loader=yaml.SafeLoader)",
    "model.eval()", "import numpy as np\nnp.save(b, a, allow_pickle=False)",
])
def test_scanner_passes_safe_code(snippet):
    assert scan(snippet) == [], snippet


def test_package_never_unpickles_or_evaluates():
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 30  # the whole package, not an empty folder
    problems = [f"{f.relative_to(PACKAGE.parent)}:{line}: {what}"
                for f in files for line, what in scan(f.read_text(encoding="utf-8"))]
    assert problems == [], "\n".join(problems)


def test_yaml_python_tags_are_rejected_not_run(tmp_path):
    from seglearn.config import ConfigError, load_config

    sentinel = tmp_path / "code-ran"
    for tag in (f"!!python/object/apply:os.system ['touch {sentinel}']",
                f"!!python/object/new:os.system ['touch {sentinel}']",
                "!!python/name:os.system"):
        cfg = tmp_path / "c.yaml"
        cfg.write_text(f"train:\n  steps: {tag}\n")
        with pytest.raises(ConfigError, match="not valid YAML"):
            load_config(cfg)
        with pytest.raises(ConfigError, match="train.steps must be int"):
            load_config(None, [f"train.steps={tag}"])  # --set values are YAML scalars too
    assert not sentinel.exists()
