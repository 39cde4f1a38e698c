"""Folders named any way and a test split for any data (issue 20 items 4-5), from the CLI on tiny
synthetic files: the retinal naming (21_training.tif + 21_manual1.gif in another folder), label
with the patterns init stored, init --test-images, evaluate --images/--masks, evaluate.metrics."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import tifffile
from PIL import Image
from scipy import ndimage as ndi

from conftest import TINY
from seglearn.data.importers import SkippedFilesWarning

IDS = range(21, 41)
PATTERNS = ["--image-pattern", "{id}_training.tif", "--mask-pattern", "{id}_manual1.gif"]


def run(runner, cli, *args):
    return runner.invoke(cli, [str(a) for a in args], catch_exceptions=False)


def _blob_mask(i: int) -> np.ndarray:
    m = np.zeros((32, 32), np.uint8)
    m[4 + i % 5: 14 + i % 5, 6:16] = 255
    m[20:28, 18 + i % 4: 27 + i % 4] = 255
    return m


def _retinal(tmp_path, ids=IDS, masks_folder="manual"):
    """images/NN_training.tif (RGB TIFF) and manual/NN_manual1.gif (gray GIF, white objects)."""
    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir(exist_ok=True)
    (tmp_path / masks_folder).mkdir(exist_ok=True)
    for i in ids:
        tifffile.imwrite(tmp_path / "images" / f"{i}_training.tif",
                         rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
        Image.fromarray(_blob_mask(i), mode="L").save(tmp_path / masks_folder / f"{i}_manual1.gif")
    return tmp_path / "images", tmp_path / masks_folder


def test_retinal_names_import_20_labeled_with_the_patterns(runner, cli, tmp_path):
    from seglearn.store import Workspace

    images, manual = _retinal(tmp_path)
    (manual / "readme.txt").write_text("DRIVE manual annotations")
    # Without patterns nothing pairs: one error line with an example of each name and the options.
    r = run(runner, cli, "init", tmp_path / "ws0", "--images", images, "--masks", manual, *TINY)
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "error: no mask in" in r.output
    assert "image '21_training.tif', mask '21_manual1.gif'" in r.output
    assert "--image-pattern '{id}_training.tif' --mask-pattern '{id}_manual1.gif'" in r.output
    assert not (tmp_path / "ws0").exists()

    # (in-process the warning is pytest's to catch; the CLI prints it as one "warning: ..." line)
    with pytest.warns(SkippedFilesWarning, match=r"masks folder .*manual: 1 entry not read: .*readme\.txt"):
        r = run(runner, cli, "init", tmp_path / "ws", "--images", images, "--masks", manual,
                *PATTERNS, *TINY)
    assert r.exit_code == 0, r.output
    w = Workspace.open(tmp_path / "ws")
    train = w.items(split="train")
    assert len(train) == 20 and all(it.label is not None for it in train)
    assert {it.name for it in train} == {f"{i}_training" for i in IDS}
    # the GIF's white objects are the label (23 pairs with 23, not with another number)
    assert np.array_equal(w.read_label("23_training") > 0, _blob_mask(23) > 0)
    assert not np.array_equal(w.read_label("23_training") > 0, _blob_mask(24) > 0)
    assert w.meta("source")["mask_pattern"] == "{id}_manual1.gif"
    w.close()


def test_label_pairs_with_the_patterns_init_was_given(runner, cli, tmp_path):
    from seglearn.store import Workspace

    images, first = _retinal(tmp_path, ids=range(21, 31), masks_folder="first")
    _retinal(tmp_path, ids=range(31, 41), masks_folder="later")  # images 31-40 join the folder
    r = run(runner, cli, "init", tmp_path / "ws", "--images", images, "--masks", first,
            *PATTERNS, *TINY)
    assert r.exit_code == 0, r.output
    w = Workspace.open(tmp_path / "ws")
    assert len(w.items(split="train")) == 10 and len(w.unlabeled("pool")) == 10
    w.close()
    # a mask named after the item (as the suggestions list it) pairs too, beside the patterns
    (tmp_path / "named").mkdir()
    Image.fromarray(_blob_mask(31)).save(tmp_path / "named" / "31_training_mask.png")
    r = run(runner, cli, "label", tmp_path / "ws", "--masks", tmp_path / "named")
    assert r.exit_code == 0 and "labeled 1 item(s); 11 training images now" in r.output, r.output
    shutil.copy(tmp_path / "named" / "31_training_mask.png", tmp_path / "later")
    r = run(runner, cli, "label", tmp_path / "ws", "--masks", tmp_path / "later")
    assert r.exit_code == 2 and "are both for item '31_training'" in r.output, r.output
    (tmp_path / "later" / "31_training_mask.png").unlink()
    # no options: the patterns stored at init pair later/NN_manual1.gif with NN_training.tif
    r = run(runner, cli, "label", tmp_path / "ws", "--masks", tmp_path / "later")
    assert r.exit_code == 0, r.output
    assert "labeled 10 item(s); 20 training images now" in r.output
    # a pattern given to label overrides the stored one; pairing nothing is the no-pair error
    r = run(runner, cli, "label", tmp_path / "ws", "--masks", tmp_path / "later",
            "--mask-pattern", "{id}_manual2.gif")
    assert r.exit_code == 2 and "error: no mask in mask folder" in r.output
    assert "mask '31_manual1.gif'" in r.output and "--mask-pattern" in r.output


def test_label_without_patterns_suggests_them(runner, cli, tmp_path):
    images, manual = _retinal(tmp_path, ids=range(21, 25))
    r = run(runner, cli, "init", tmp_path / "ws", "--images", images, *TINY)
    assert r.exit_code == 0, r.output
    r = run(runner, cli, "label", tmp_path / "ws", "--masks", manual)
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "image '21_training.tif', mask '21_manual1.gif'" in r.output
    assert "--image-pattern '{id}_training.tif' --mask-pattern '{id}_manual1.gif'" in r.output
    r = run(runner, cli, "label", tmp_path / "ws", "--masks", manual, *PATTERNS)
    assert r.exit_code == 0 and "labeled 4 item(s)" in r.output, r.output


def _vessels(i: int) -> np.ndarray:
    """A thin tree, 64 x 64: a 2-px trunk with four 2-px branches (elongation > 10)."""
    m = np.zeros((64, 64), np.uint8)
    m[2:62, 30 + i % 3: 32 + i % 3] = 255
    for k, y in enumerate((8, 22, 36, 50)):
        x0 = 8 if k % 2 else 32
        m[y + i % 2: y + 2 + i % 2, x0: x0 + 22] = 255
    return m


def _write_folder(root, name, make_mask, ids, seed):
    rng = np.random.default_rng(seed)
    (root / name / "img").mkdir(parents=True)
    (root / name / "msk").mkdir()
    for i in ids:
        m = make_mask(i)
        img = rng.integers(0, 60, m.shape + (3,), dtype=np.uint8)
        img[m > 0] = (200, 80, 150)
        Image.fromarray(img).save(root / name / "img" / f"{name}{i}.png")
        Image.fromarray(m).save(root / name / "msk" / f"{name}{i}_mask.png")
    return root / name / "img", root / name / "msk"


@pytest.mark.slow
def test_test_split_for_own_folders_and_evaluate_on_any_folder(runner, cli, tmp_path):
    from seglearn.store import Workspace

    tr = _write_folder(tmp_path, "tr", _blob_mask, range(6), 0)
    te = _write_folder(tmp_path, "te", _blob_mask, range(3), 1)
    (te[0] / "te9.png").write_bytes((te[0] / "te0.png").read_bytes())  # no mask: cannot be scored
    ves = _write_folder(tmp_path, "ves", _vessels, range(3), 2)
    ws = tmp_path / "ws"
    # before: a workspace of own folders had no test split, so evaluate could not run at all
    with pytest.warns(SkippedFilesWarning, match=r"test images folder .*1 entry not read: an image "
                                                 r"without a mask .*te9\.png"):
        r = run(runner, cli, "init", ws, "--images", tr[0], "--masks", tr[1], "--test-images",
                te[0], "--test-masks", te[1], *TINY)
    assert r.exit_code == 0, r.output
    w = Workspace.open(ws)
    assert sorted(it.name for it in w.items(split="test")) == ["te0", "te1", "te2"]
    assert len(w.items(split="train")) == 6
    n_items = len(w.items())
    w.close()
    assert run(runner, cli, "train", ws, "--final", "--no-progress").exit_code == 0

    r = run(runner, cli, "evaluate", ws, "--no-progress")
    assert r.exit_code == 0, r.output
    (own,) = (ws / "reports").glob("evaluate_round_*[0-9]/metrics.json")
    rec = json.loads(own.read_text())
    assert rec["kind"] == "objects" and rec["median_elongation"] < 10
    assert {"f1", "obj_dice", "pixel_dice", "pixel_iou"} <= set(rec["metrics"])
    assert rec["images"] == ["te0", "te1", "te2"]

    # any labeled folder, not added to the workspace; thin structures: pixel metrics only
    r = run(runner, cli, "evaluate", ws, "--images", ves[0], "--masks", ves[1], "--no-progress")
    assert r.exit_code == 0, r.output
    assert "pixel metrics only" in r.output
    (folder,) = (ws / "reports").glob("evaluate_round_*_img/metrics.json")
    rec2 = json.loads(folder.read_text())
    assert rec2["kind"] == "pixels" and rec2["median_elongation"] > 10
    assert set(rec2["metrics"]) == {"pixel_dice", "pixel_iou"}
    assert rec2["images"] == ["ves0", "ves1", "ves2"]
    w = Workspace.open(ws)
    assert len(w.items()) == n_items
    assert w.meta("last_metrics")["f1"] == rec["metrics"]["f1"]  # still the test split's
    w.close()
    # evaluate.metrics=objects forces the object metrics on the same folder
    r = run(runner, cli, "evaluate", ws, "--images", ves[0], "--masks", ves[1], "--no-progress",
            "--set", "evaluate.metrics=objects")
    assert r.exit_code == 0, r.output
    assert "f1" in json.loads(folder.read_text())["metrics"]
    r = run(runner, cli, "evaluate", ws, "--images", ves[0], "--no-progress")
    assert r.exit_code == 2 and "--images and --masks go together" in r.output


def test_test_split_must_be_held_out(runner, cli, tmp_path):
    tr = _write_folder(tmp_path, "tr", _blob_mask, range(3), 0)
    r = run(runner, cli, "init", tmp_path / "ws", "--images", tr[0], "--masks", tr[1],
            "--test-images", tr[0], "--test-masks", tr[1], *TINY)
    assert r.exit_code == 2 and "must be held out" in r.output, r.output
    te = tmp_path / "copy"
    (te / "img").mkdir(parents=True)
    (te / "msk").mkdir()
    shutil.copy(tr[0] / "tr1.png", te / "img" / "other.png")
    shutil.copy(tr[1] / "tr1_mask.png", te / "msk" / "other.png")
    r = run(runner, cli, "init", tmp_path / "ws", "--images", tr[0], "--masks", tr[1],
            "--test-images", te / "img", "--test-masks", te / "msk", *TINY)
    assert r.exit_code == 2 and "is a copy of image" in r.output and "tr1.png" in r.output
    assert not (tmp_path / "ws").exists()
    r = run(runner, cli, "init", tmp_path / "ws", "--synthetic", 4, "--test-images", te / "img",
            *TINY)
    assert r.exit_code == 2 and "--test-images goes with --images" in r.output
