"""The runtime must import and run where torch is not installed: block torch in a subprocess."""

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import importlib.abc, sys

    class BlockTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError("torch is blocked in this test")
            return None

    sys.meta_path.insert(0, BlockTorch())
    try:
        import torch  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("the torch guard does not work")
    import numpy as np
    import seglearn.runtime
    from seglearn.runtime import bitpack, fold, ops_fast, ops_ref
    x = bitpack.pack_signs(np.ones((4, 5, 3), np.int8))
    w = bitpack.pack_signs(np.ones((2, 3, 3, 3), np.int8))
    acc = ops_fast.bconv2d(x, w, 3, 1, 1)
    assert acc[1, 1, 0] == 27 and acc[0, 0, 0] == 12, acc[..., 0]
    assert (ops_ref.bconv2d(x, w, 3, 1, 1) == acc).all()
    assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules), "torch got imported"
    print("ok")
    """
)


def test_runtime_imports_and_runs_without_torch():
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"
