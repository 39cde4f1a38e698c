"""seglearn.postprocess and seglearn.metrics import and run without torch (the runtime uses them)."""

import subprocess
import sys

CODE = """
import sys
sys.modules['torch'] = None  # any 'import torch' now raises ImportError
import numpy as np
import seglearn.postprocess, seglearn.metrics
fg = np.zeros((12, 12)); fg[2:10, 2:10] = 0.9
lab = seglearn.postprocess.instances_from_probs(fg)
assert lab.max() == 1 and seglearn.metrics.glas_metrics([lab], [lab])['f1'] == 1.0
print('ok', 'torch' in sys.modules and sys.modules['torch'] is not None)
"""


def test_imports_without_torch():
    r = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok False"
