"""GlaS layout and plain-folder scanning (fake files in tmp folders, plus real GlaS when present)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from seglearn.data import DataError, SourceImage, read_image, read_mask, scan_folders, scan_glas
from seglearn.data.importers import SkippedFilesWarning


def _touch(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).write_bytes(b"x")  # scanning never decodes


def _glas_dir() -> Path | None:
    env = os.environ.get("SEGLEARN_GLAS_DIR")
    cand = Path(env) if env else Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "glas"
    return cand if (cand / "train").is_dir() or any(cand.glob("train_*")) else None


# ---------------------------------------------------------------- GlaS layout


def test_glas_subfolders(tmp_path):
    _touch(tmp_path / "train", "train_2.bmp", "train_2_anno.bmp", "train_10.png", "train_10_anno.png", "train_1.png")
    _touch(tmp_path / "testA", "testA_3.png", "testA_3_anno.png")
    _touch(tmp_path, "testB_1.bmp", "testB_1_anno.bmp", "Grade.csv", "README.md")
    with pytest.warns(SkippedFilesWarning) as rec:
        recs = scan_glas(tmp_path)
    # train_1 has no annotation: skipped (the oracle could not label it) and named; the
    # non-image files of the layout (Grade.csv, README.md) are not.
    assert [str(w.message).split(": ", 1)[1] for w in rec] == [
        "1 entry not read: a GlaS image without its annotation (train_1_anno.bmp/png): "
        "train/train_1.png"]
    assert [r.name for r in recs] == ["train_2", "train_10", "testA_3", "testB_1"]
    assert [r.split for r in recs] == ["pool", "pool", "test", "test"]
    by = {r.name: r for r in recs}
    assert by["train_10"].mask_path == tmp_path / "train" / "train_10_anno.png"
    assert by["testB_1"].image_path == tmp_path / "testB_1.bmp"


def test_glas_flat_folder(tmp_path):
    _touch(tmp_path, "train_1.bmp", "train_1_anno.bmp", "testA_1.bmp", "testA_1_anno.bmp")
    recs = scan_glas(tmp_path)
    assert [(r.name, r.split, r.mask_path.name) for r in recs] == [
        ("train_1", "pool", "train_1_anno.bmp"), ("testA_1", "test", "testA_1_anno.bmp")]


def test_glas_errors(tmp_path):
    _touch(tmp_path / "a", "train_1.png", "train_4_anno.png")
    with pytest.raises(DataError, match="train_4_anno.png"):
        scan_glas(tmp_path / "a")
    _touch(tmp_path / "b", "train_1.png", "train_1.bmp")
    with pytest.raises(DataError, match="train_1"):
        scan_glas(tmp_path / "b")
    _touch(tmp_path / "c", "notes.txt", "photo.png")
    with pytest.raises(DataError, match="no GlaS images"):
        scan_glas(tmp_path / "c")
    with pytest.raises(DataError, match="does not exist"):
        scan_glas(tmp_path / "missing")


@pytest.mark.glas
def test_real_glas_scan_and_read():
    root = _glas_dir()
    if root is None:
        pytest.skip("GlaS data not found at ../shared/data/glas (set SEGLEARN_GLAS_DIR to point at it)")
    recs = scan_glas(root)
    pool = [r for r in recs if r.split == "pool"]
    test = [r for r in recs if r.split == "test"]
    n_train = len(list(root.rglob("train_*_anno.*")))
    n_test = len(list(root.rglob("test*_anno.*")))
    assert len(pool) == n_train and len(test) == n_test and all(r.mask_path for r in recs)
    for rec in (pool[0], test[-1]):
        img = read_image(rec.image_path)
        lab = read_mask(rec.mask_path, shape=img.shape[:2], image_name=rec.image_path.name)
        assert img.dtype == np.uint8 and img.shape[2] == 3
        raw = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(rec.mask_path))
        _, n = ndi.label(raw > 0, structure=np.ones((3, 3)))  # independent 8-connected count
        assert lab.max() == n > 0 and np.array_equal(lab > 0, raw > 0)


# ---------------------------------------------------------------- plain folders


def test_scan_folders_matches_stems_and_tags(tmp_path):
    _touch(tmp_path / "img", "a.png", "b.tif", "c.jpg", "d.nii.gz", ".DS_Store", "._a.png", "notes.txt")
    _touch(tmp_path / "msk", "a.png", "b_mask.png", "d_anno.nii.gz")
    with pytest.warns(SkippedFilesWarning, match=r"1 entry not read: .*: notes\.txt$"):
        recs = scan_folders(tmp_path / "img", tmp_path / "msk")
    got = [(r.name, r.split, r.mask_path.name if r.mask_path else None) for r in recs]
    assert got == [("a", "train", "a.png"), ("b", "train", "b_mask.png"), ("c", "pool", None),
                   ("d", "train", "d_anno.nii.gz")]
    assert all(isinstance(r, SourceImage) for r in recs)
    with pytest.warns(SkippedFilesWarning):
        again = scan_folders(tmp_path / "img", tmp_path / "msk", mask_split="pool")
    assert [r.split for r in again] == ["pool"] * 4


def test_scan_folders_same_folder_masks(tmp_path):
    _touch(tmp_path, "x1.png", "x1_mask.png", "x2.png", "x10.png", "x10_ANNO.png")
    recs = scan_folders(tmp_path)
    assert [(r.name, r.mask_path.name if r.mask_path else None) for r in recs] == [
        ("x1", "x1_mask.png"), ("x2", None), ("x10", "x10_ANNO.png")]


def test_scan_folders_errors(tmp_path):
    _touch(tmp_path / "i1", "a.png")
    _touch(tmp_path / "m1", "a.png", "zz_mask.png")
    with pytest.raises(DataError, match="zz_mask.png"):
        scan_folders(tmp_path / "i1", tmp_path / "m1")
    _touch(tmp_path / "i2", "a.png", "a.tif")
    with pytest.raises(DataError, match=r"a\.png.*a\.tif|a\.tif.*a\.png"):
        scan_folders(tmp_path / "i2")
    _touch(tmp_path / "m3", "a.png", "a_mask.png")
    with pytest.raises(DataError, match="two masks"):
        scan_folders(tmp_path / "i1", tmp_path / "m3")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        scan_folders(tmp_path / "empty")
    with pytest.raises(DataError, match="does not exist"):
        scan_folders(tmp_path / "nope")


def test_scan_folders_non_utf8_names(tmp_path):
    folder = os.fsencode(tmp_path / "raw")
    os.mkdir(folder)
    try:
        fd = os.open(os.path.join(folder, b"scan\xff.png"), os.O_CREAT | os.O_WRONLY)
    except OSError:
        pytest.skip("this file system refuses non-UTF-8 file names")
    os.close(fd)
    with pytest.warns(UserWarning, match="not valid UTF-8"):
        recs = scan_folders(tmp_path / "raw")
    assert recs[0].name == "scan\\xff"
    recs[0].name.encode("utf-8")  # printable / storable in SQLite
    assert os.path.exists(recs[0].image_path)  # the real path is kept
    os.close(os.open(os.path.join(folder, b"orph\xfe_mask.png"), os.O_CREAT | os.O_WRONLY))
    with pytest.warns(UserWarning), pytest.raises(DataError) as err:
        scan_folders(tmp_path / "raw")
    assert "orph\\xfe_mask.png" in str(err.value)
    str(err.value).encode("utf-8")


# ---------------------------------------------------------------- what is not read is named


IMAGE_TYPES = ".png, .bmp, .tif, .tiff, .jpg, .jpeg, .gif, .nii, .nii.gz"


def test_skipped_entries_are_named_with_their_reason(tmp_path):
    _touch(tmp_path / "img", "a.png", "b.gif", "notes.txt", ".DS_Store", "._a.png")
    (tmp_path / "img" / "sub.png").mkdir()                        # a folder named like an image
    os.symlink(tmp_path / "nowhere.png", tmp_path / "img" / "gone.png")  # dangling
    _touch(tmp_path / "msk", "a.png", "b_mask.gif", "x.webp")
    with pytest.warns(SkippedFilesWarning) as rec:
        recs = scan_folders(tmp_path / "img", tmp_path / "msk")
    # GIF is read (DRIVE's masks are GIFs), images and masks alike
    assert [(r.name, r.mask_path.name) for r in recs] == [("a", "a.png"), ("b", "b_mask.gif")]
    assert [str(w.message) for w in rec] == [
        f"images folder {tmp_path}/img: 3 entries not read: a symbolic link to a missing file: "
        f"gone.png; not a type seglearn reads ({IMAGE_TYPES}): notes.txt; a folder (subfolders "
        "are not read): sub.png",
        f"masks folder {tmp_path}/msk: 1 entry not read: not a type seglearn reads "
        f"({IMAGE_TYPES}): x.webp"]


def test_skipped_list_is_capped_with_a_count(tmp_path):
    from seglearn.data.importers import MAX_LISTED

    names = [f"n{i:02d}.txt" for i in range(MAX_LISTED + 5)]
    _touch(tmp_path, "a.png", *names)
    with pytest.warns(SkippedFilesWarning) as rec:
        scan_folders(tmp_path)
    (msg,) = [str(w.message) for w in rec]
    assert msg == (f"images folder {tmp_path}: {MAX_LISTED + 5} entries not read: not a type "
                   f"seglearn reads ({IMAGE_TYPES}): {', '.join(names[:MAX_LISTED])}; and 5 more")


def test_nothing_skipped_no_warning(tmp_path):
    import warnings

    _touch(tmp_path, "a.png", "a_mask.png", ".DS_Store")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [r.name for r in scan_folders(tmp_path)] == ["a"]


def test_glas_names_what_it_skips(tmp_path):
    _touch(tmp_path / "train", "train_1.png", "train_1_anno.png", "train_2.bmp", "photo.png")
    (tmp_path / "train" / "old").mkdir()
    _touch(tmp_path / "testA", "testA_1.png", "testA_1_anno.png", "Grade.csv")
    with pytest.warns(SkippedFilesWarning) as rec:
        recs = scan_glas(tmp_path)
    assert [r.name for r in recs] == ["train_1", "testA_1"]
    assert [str(w.message) for w in rec] == [
        f"GlaS folder {tmp_path}: 3 entries not read: a folder (subfolders are not read): "
        "train/old; not a GlaS name (train_N, testA_N, testB_N, *_anno): train/photo.png; a GlaS "
        "image without its annotation (train_2_anno.bmp/png): train/train_2.bmp"]
    _touch(tmp_path / "capital", "testA_7.bmp", "testA_1.bmp", "testA_1_anno.bmp")
    with pytest.warns(SkippedFilesWarning, match=r"\(testA_7_anno\.bmp/png\): testA_7\.bmp$"):
        scan_glas(tmp_path / "capital")
    _touch(tmp_path / "bare", "train_1.png")
    with pytest.warns(SkippedFilesWarning), pytest.raises(DataError, match="has its annotation"):
        scan_glas(tmp_path / "bare")
