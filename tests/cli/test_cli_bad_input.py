"""Every bad input exits non-zero with one clear message naming the file, no traceback, and leaves
an existing workspace unchanged."""

import hashlib

import numpy as np
import pytest
from skimage import io as skio

from conftest import TINY


def digest(folder):
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not p.name.endswith(("-wal", "-shm", ".lock")):
            h.update(p.name.encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def write_png(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    skio.imsave(str(path), arr, check_contrast=False)


def img(h=24, w=32):
    return np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)


def mask(h=24, w=32):
    m = np.zeros((h, w), np.uint8)
    m[4:12, 4:12] = 255
    return m


def check_clean_failure(result, *needles):
    assert result.exit_code != 0
    out = result.output
    assert "Traceback" not in out
    for n in needles:
        assert str(n) in out, out


@pytest.fixture
def existing_ws(tiny_ws):
    return tiny_ws


def test_directory_with_no_images(runner, cli, tmp_path):
    (tmp_path / "empty").mkdir()
    r = runner.invoke(cli, ["init", str(tmp_path / "ws"), "--images", str(tmp_path / "empty")])
    check_clean_failure(r, "empty")
    assert not (tmp_path / "ws").exists()


def test_truncated_image(runner, cli, tmp_path):
    write_png(tmp_path / "im" / "a.png", img())
    data = (tmp_path / "im" / "a.png").read_bytes()
    (tmp_path / "im" / "b.png").write_bytes(data[: len(data) // 2])
    r = runner.invoke(cli, ["init", str(tmp_path / "ws"), "--images", str(tmp_path / "im")])
    check_clean_failure(r, "b.png")
    assert not (tmp_path / "ws").exists()


def test_mask_of_wrong_size(runner, cli, tmp_path):
    write_png(tmp_path / "im" / "a.png", img())
    write_png(tmp_path / "mk" / "a.png", mask(20, 20))
    r = runner.invoke(cli, ["init", str(tmp_path / "ws"), "--images", str(tmp_path / "im"),
                            "--masks", str(tmp_path / "mk")])
    check_clean_failure(r, "a.png")
    assert not (tmp_path / "ws").exists()


def test_mask_without_image(runner, cli, tmp_path):
    write_png(tmp_path / "im" / "a.png", img())
    write_png(tmp_path / "mk" / "a.png", mask())
    write_png(tmp_path / "mk" / "zzz.png", mask())
    r = runner.invoke(cli, ["init", str(tmp_path / "ws"), "--images", str(tmp_path / "im"),
                            "--masks", str(tmp_path / "mk")])
    check_clean_failure(r, "zzz.png")


def test_init_over_existing_workspace(runner, cli, existing_ws):
    before = digest(existing_ws)
    r = runner.invoke(cli, ["init", str(existing_ws), "--synthetic", "4", *TINY])
    check_clean_failure(r, existing_ws.name, "--force")
    assert digest(existing_ws) == before


def test_config_with_unknown_key(runner, cli, existing_ws, tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("train:\n  stepz: 3\n")
    before = digest(existing_ws)
    r = runner.invoke(cli, ["train", str(existing_ws), "--config", str(cfg)])
    check_clean_failure(r, "bad.yaml", "train.stepz", "train.steps")
    assert digest(existing_ws) == before
    r = runner.invoke(cli, ["train", str(existing_ws), "--set", "nope.x=1"])
    check_clean_failure(r, "nope")
    assert digest(existing_ws) == before


def test_label_rejects_bad_masks_and_changes_nothing(runner, cli, existing_ws, tmp_path):
    from seglearn.store import Workspace

    w = Workspace.open(existing_ws)
    it = w.unlabeled("pool")[0]
    w.close()
    before = digest(existing_ws)
    write_png(tmp_path / "m" / f"{it.name}.png", mask(it.height + 3, it.width))
    r = runner.invoke(cli, ["label", str(existing_ws), "--masks", str(tmp_path / "m")])
    check_clean_failure(r, f"{it.name}.png")
    write_png(tmp_path / "m2" / "no_such_item.png", mask(it.height, it.width))
    r = runner.invoke(cli, ["label", str(existing_ws), "--masks", str(tmp_path / "m2")])
    check_clean_failure(r, "no_such_item.png")
    r = runner.invoke(cli, ["label", str(existing_ws), "--item", "no_such_item", "--mask",
                            str(tmp_path / "m2" / "no_such_item.png")])
    check_clean_failure(r, "no_such_item")
    assert digest(existing_ws) == before


def test_not_a_workspace(runner, cli, tmp_path):
    r = runner.invoke(cli, ["status", str(tmp_path / "nowhere")])
    check_clean_failure(r, "nowhere")
