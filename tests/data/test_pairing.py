"""Pairing images and masks named any way (issue 20 item 4): --image-pattern / --mask-pattern,
the no-pair error, what is skipped, multi-page masks; and a labeled folder as a test split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from seglearn.data import DataError, read_mask, scan_folders
from seglearn.data.importers import (SkippedFilesWarning, name_pattern, no_pair_error,
                                     scan_test_folders)


def _touch(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).write_bytes(b"x")  # scanning never decodes


def _pairs(recs):
    return [(r.name, r.split, r.mask_path.name if r.mask_path else None) for r in recs]


# ---------------------------------------------------------------- patterns


def test_template_and_regex_read_the_key():
    t = name_pattern("{id}_manual1.gif", "--mask-pattern")
    assert t.key(Path("21_manual1.gif")) == "21"
    assert t.key(Path("21_MANUAL1.GIF")) == "21"      # templates: case-insensitive
    assert t.key(Path("21_manual2.gif")) is None
    assert t.key(Path("x/21_manual1.gif.bak")) is None  # the whole name must fit
    no_ext = name_pattern("{id}_manual1", "--mask-pattern")
    assert no_ext.key(Path("21_manual1.gif")) == "21"  # the name without its suffix is tried too
    r = name_pattern(r"(?P<id>\d+)_(training|test)\.tif", "--image-pattern")
    assert r.key(Path("07_test.tif")) == "07" and r.key(Path("a_test.tif")) is None
    assert name_pattern(None, "--mask-pattern") is None


@pytest.mark.parametrize("text, needle", [("mask.gif", "expected a template with {id}"),
                                          ("{id}_{id}.png", "expected a template with {id}"),
                                          ("(?P<id>[0-9", "not a valid regular expression")])
def test_bad_pattern_text_names_the_option(text, needle):
    with pytest.raises(DataError, match="--mask-pattern") as e:
        name_pattern(text, "--mask-pattern")
    assert needle in str(e.value)


def test_retinal_layout_pairs_by_key(tmp_path):
    """The issue's public retinal case: 21_training.tif .. 40_training.tif and 21_manual1.gif ..
    in another folder; a file of another type in the masks folder is named in a warning."""
    ids = range(21, 41)
    _touch(tmp_path / "images", *(f"{i}_training.tif" for i in ids))
    _touch(tmp_path / "manual", *(f"{i}_manual1.gif" for i in ids), "readme.txt")
    with pytest.warns(SkippedFilesWarning, match=r"masks folder .*manual: 1 entry not read: "
                                                 r"not a type .*: readme\.txt$"):
        recs = scan_folders(tmp_path / "images", tmp_path / "manual",
                            image_pattern="{id}_training.tif", mask_pattern="{id}_manual1.gif")
    assert _pairs(recs) == [(f"{i}_training", "train", f"{i}_manual1.gif") for i in ids]


def test_pattern_misfits_are_skipped_and_named(tmp_path):
    _touch(tmp_path / "img", "1_training.tif", "2_training.tif", "notes_training.png.txt",
           "thumb.png")
    _touch(tmp_path / "msk", "1_manual1.gif", "1_manual2.gif")
    with pytest.warns(SkippedFilesWarning) as rec:
        recs = scan_folders(tmp_path / "img", tmp_path / "msk", image_pattern="{id}_training.tif",
                            mask_pattern="{id}_manual1.gif")
    assert _pairs(recs) == [("1_training", "train", "1_manual1.gif"), ("2_training", "pool", None)]
    text = [str(w.message) for w in rec]
    assert any("thumb.png" in t and "does not match --image-pattern '{id}_training.tif'" in t
               for t in text), text
    assert any("1_manual2.gif" in t and "does not match --mask-pattern" in t for t in text), text


def test_regex_pattern_and_masks_beside_the_images(tmp_path):
    _touch(tmp_path, "case1_img.png", "case1_gt.png", "case2_img.png", "case10_img.png",
           "case10_gt.png")
    recs = scan_folders(tmp_path, image_pattern=r"case(?P<id>\d+)_img\.png",
                        mask_pattern=r"case(?P<id>\d+)_gt\.png")
    assert _pairs(recs) == [("case1_img", "train", "case1_gt.png"), ("case2_img", "pool", None),
                            ("case10_img", "train", "case10_gt.png")]
    with pytest.raises(DataError, match=r"no file in .* matches --mask-pattern '\{id\}_seg.png'"):
        scan_folders(tmp_path, mask_pattern="{id}_seg.png")


def test_key_errors(tmp_path):
    _touch(tmp_path / "img", "1_a.png", "2_a.png")
    _touch(tmp_path / "m1", "1_m.png", "01_m.png")
    # a key read from a mask with no image of that key
    with pytest.raises(DataError, match=r"01_m\.png has no image: expected an image with the key '01'"):
        scan_folders(tmp_path / "img", tmp_path / "m1", image_pattern="{id}_a.png",
                     mask_pattern="{id}_m.png")
    _touch(tmp_path / "m2", "1_m.png", "1_m.tif")
    with pytest.raises(DataError, match="two mask files have the key '1'"):
        scan_folders(tmp_path / "img", tmp_path / "m2", mask_pattern=r"(?P<id>\d)_m\..*")
    _touch(tmp_path / "img2", "a.png", "a.tif")  # two keys, one item name
    with pytest.raises(DataError, match="share the name 'a'"):
        scan_folders(tmp_path / "img2", image_pattern=r"(?P<id>a\.\w+)")
    with pytest.raises(DataError, match=r"no image in .*img matches --image-pattern '\{id\}_b.png': "
                                        r"e\.g\. '1_a\.png'"):
        scan_folders(tmp_path / "img", image_pattern="{id}_b.png")


def test_no_pair_error_shows_examples_and_suggests_the_options(tmp_path):
    _touch(tmp_path / "images", "21_training.tif", "22_training.tif")
    _touch(tmp_path / "manual", "21_manual1.gif", "22_manual1.gif")
    with pytest.raises(DataError) as e:
        scan_folders(tmp_path / "images", tmp_path / "manual")
    msg = str(e.value)
    assert "no mask in" in msg and "pairs with an image" in msg
    assert "image '21_training.tif', mask '21_manual1.gif'" in msg
    # the suggestion is built from the two examples, and it works
    assert "--image-pattern '{id}_training.tif' --mask-pattern '{id}_manual1.gif'" in msg
    assert len(scan_folders(tmp_path / "images", tmp_path / "manual",
                            image_pattern="{id}_training.tif", mask_pattern="{id}_manual1.gif")) == 2
    # with patterns that pair nothing, the message says which patterns were applied
    with pytest.raises(DataError, match=r"keys read with --mask-pattern '\{id\}_manual2.gif'"):
        scan_folders(tmp_path / "images", tmp_path / "manual", mask_pattern="{id}_manual2.gif")
    # names with nothing in common: a generic example of the options
    generic = str(no_pair_error("I", Path("abc.png"), "M", Path("xyz.png"), (None, None)))
    assert "--image-pattern '{id}_training.tif' --mask-pattern '{id}_manual1.gif'" in generic


def test_a_masks_folder_without_masks_is_an_error(tmp_path):
    _touch(tmp_path / "img", "a.png")
    _touch(tmp_path / "msk", "a.txt")
    with pytest.raises(DataError, match=r"masks folder .*msk contains no mask files.*a\.txt"):
        scan_folders(tmp_path / "img", tmp_path / "msk")


def test_test_folder_skips_images_without_masks(tmp_path):
    _touch(tmp_path / "t", "a.png", "a_mask.png", "b.png")
    with pytest.warns(SkippedFilesWarning, match=r"1 entry not read: an image without a mask .*b\.png"):
        recs = scan_test_folders(tmp_path / "t")
    assert _pairs(recs) == [("a", "test", "a_mask.png")]
    _touch(tmp_path / "u", "a.png")
    with pytest.raises(DataError, match=r"no image in .*u has a mask.*--test-masks"):
        scan_test_folders(tmp_path / "u")


# ---------------------------------------------------------------- GIF and multi-page masks


def _blobs(h=20, w=30):
    m = np.zeros((h, w), np.uint8)
    m[2:8, 3:9] = 255
    m[12:18, 15:25] = 255
    return m


def test_gif_mask_with_white_at_index_0(tmp_path):
    """A DRIVE-style GIF: the palette's first entry is white, so indices would invert the mask."""
    m = _blobs()
    im = Image.fromarray(np.where(m > 0, 0, 1).astype(np.uint8), mode="P")
    im.putpalette([255, 255, 255, 0, 0, 0] + [0, 0, 0] * 254)
    im.save(tmp_path / "21_manual1.gif")  # index 0 (white) = object, 1 (black) = background
    got = read_mask(tmp_path / "21_manual1.gif")
    assert np.array_equal(got > 0, m > 0) and got.max() == 2  # white = object, two of them


def test_multipage_tiff_mask_pages_equal_or_refused(tmp_path):
    m = _blobs()
    tifffile.imwrite(tmp_path / "same.tif", np.stack([m, m, m]))
    assert np.array_equal(read_mask(tmp_path / "same.tif") > 0, m > 0)
    other = m.copy()
    other[0, 0] = 255
    tifffile.imwrite(tmp_path / "diff.tif", np.stack([m, other]))
    with pytest.raises(DataError, match=r"diff\.tif has several pages and page 2 differs"):
        read_mask(tmp_path / "diff.tif")
    # a pyramid: the reduced-resolution level is a view of page 1, not more data
    with tifffile.TiffWriter(tmp_path / "pyramid.tif") as tw:
        tw.write(m)
        tw.write(m[::2, ::2], subfiletype=1)
    assert read_mask(tmp_path / "pyramid.tif").max() == 2


def test_multiframe_gif_mask_refused_when_frames_differ(tmp_path):
    m = _blobs()
    other = m.copy()
    other[:, :2] = 255
    first = Image.fromarray(m).convert("P")
    first.save(tmp_path / "two.gif", save_all=True, append_images=[Image.fromarray(other).convert("P")])
    assert Image.open(tmp_path / "two.gif").n_frames == 2
    with pytest.raises(DataError, match=r"two\.gif has several pages and page 2 differs"):
        read_mask(tmp_path / "two.gif")
