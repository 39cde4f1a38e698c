"""The deploy path imports and runs without torch, scikit-image, MONAI or scikit-learn: in a
subprocess whose import system refuses them, load an exported .slq, predict on a PNG in process and
through ``python -m seglearn.runtime``, and get exactly the labels of the full environment."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image
from tiny_slq import BLOCKED, BLOCKER, write_png, write_tiny_slq

from seglearn.runtime import load_model

SCRIPT = BLOCKER + textwrap.dedent(
    """
    import runpy
    for name in {blocked!r}:
        try:
            __import__(name)
        except ImportError:
            pass
        else:
            raise SystemExit("the import guard does not work for " + name)
    import numpy as np
    import seglearn.runtime
    from seglearn.data.io import read_image
    model_path, png, out_npy, out_dir = sys.argv[1:5]
    labels = seglearn.runtime.load_model(model_path).predict(read_image(png))
    np.save(out_npy, labels)
    sys.argv = ["seglearn-predict", model_path, png, "--out", out_dir]
    try:
        runpy.run_module("seglearn.runtime", run_name="__main__")
    except SystemExit as e:
        assert e.code == 0, e.code
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in {blocked!r})
    assert not loaded, loaded
    print("ok")
    """
).format(blocked=BLOCKED)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    d = tmp_path_factory.mktemp("deploy")
    model = write_tiny_slq(d / "tiny.slq")
    img = write_png(d / "glands.png")
    return model, d / "glands.png", img


def _run(*args, timeout=300):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout)


def test_runtime_predicts_without_torch_skimage_monai_sklearn(deployed, tmp_path):
    model, png, img = deployed
    want = load_model(model).predict(img)
    assert want.max() >= 2, "the tiny model should find several objects (else equality says little)"
    r = _run("-c", SCRIPT, str(model), str(png), str(tmp_path / "labels.npy"), str(tmp_path / "out"))
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr + r.stdout
    np.testing.assert_array_equal(np.load(tmp_path / "labels.npy"), want)
    written = np.asarray(Image.open(tmp_path / "out" / "glands.png"))
    assert written.dtype == np.uint16  # 16-bit label PNG
    np.testing.assert_array_equal(written, want)


def test_runtime_cli_bad_input_is_one_error_line(deployed, tmp_path):
    model, png, _ = deployed
    broken = tmp_path / "broken.slq"
    broken.write_bytes(b"not a zip file")
    r = _run("-m", "seglearn.runtime", str(broken), str(png), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "broken.slq" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1
    assert not (tmp_path / "o").exists()
    r = _run("-m", "seglearn.runtime", str(model), str(tmp_path / "missing.png"), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "no such image or folder" in r.stderr and "missing.png" in r.stderr, r.stderr
    out = tmp_path / "o2"
    out.mkdir()
    (out / "glands.png").write_bytes(b"old")
    r = _run("-m", "seglearn.runtime", str(model), str(png), "--out", str(out))
    assert r.returncode == 2 and "already exists" in r.stderr, r.stderr
    assert (out / "glands.png").read_bytes() == b"old"  # nothing was written


def test_runtime_cli_refuses_two_inputs_with_one_output_name(deployed, tmp_path):
    model, png, img = deployed
    (tmp_path / "a").mkdir()
    Image.fromarray(img).save(tmp_path / "a" / "glands.png")
    r = _run("-m", "seglearn.runtime", str(model), str(png), str(tmp_path / "a"), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "would both be written to" in r.stderr, r.stderr
