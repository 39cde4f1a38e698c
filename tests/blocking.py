"""Source code for subprocess tests that must run without some packages: a meta-path finder that
refuses to import them (``blocker_source("torch")``), prepended to the test's own script.
(Importable from every test folder: pyproject.toml's pytest ``pythonpath`` holds tests/.)"""

from __future__ import annotations


def blocker_source(*names: str) -> str:
    """Python source that makes ``import <name>`` (and its submodules) raise ImportError for each
    of ``names`` from then on in the process that runs it."""
    return f"""
import importlib.abc, sys

class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {tuple(names)!r}:
            raise ImportError(name + " is blocked in this test")
        return None

sys.meta_path.insert(0, _Block())
"""
