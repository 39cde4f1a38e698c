"""Readers on every format written here, every bad input -> DataError naming the file, mask rules."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage as ndi

from seglearn.data import DataError, instances_from_mask, read_image, read_image_info, read_mask, write_mask
from seglearn.data import io as dio

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (12, 17, 3), dtype=np.uint8)
GRAY = RNG.integers(0, 256, (12, 17), dtype=np.uint8)


def _disc(shape, cy, cx, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


# ---------------------------------------------------------------- images, one per format


@pytest.mark.parametrize("ext", [".png", ".bmp", ".tif"])
def test_rgb_lossless_formats_round_trip(tmp_path, ext):
    path = tmp_path / f"a{ext}"
    Image.fromarray(RGB).save(path)
    out = read_image(path)
    assert out.dtype == np.uint8 and np.array_equal(out, RGB)


def test_grayscale_becomes_three_equal_channels(tmp_path):
    Image.fromarray(GRAY).save(tmp_path / "g.png")
    out, notes = read_image_info(tmp_path / "g.png")
    assert out.shape == (12, 17, 3)
    for c in range(3):
        assert np.array_equal(out[..., c], GRAY)
    assert any("grayscale" in n for n in notes)


def test_rgba_drops_alpha(tmp_path):
    alpha = RNG.integers(0, 256, (12, 17, 1), dtype=np.uint8)
    Image.fromarray(np.concatenate([RGB, alpha], -1), "RGBA").save(tmp_path / "a.png")
    out, notes = read_image_info(tmp_path / "a.png")
    assert np.array_equal(out, RGB) and any("alpha" in n for n in notes)


def test_16bit_png_scaled_by_257(tmp_path):
    v = RNG.integers(0, 65536, (9, 11)).astype(np.uint16)
    Image.fromarray(v).save(tmp_path / "s.png")
    out = read_image(tmp_path / "s.png")
    expect = np.rint(v / 257.0).astype(np.uint8)  # 65535 = 255 * 257: no .5 ties possible
    assert np.array_equal(out[..., 0], expect) and np.array_equal(out[..., 2], expect)


def test_palette_becomes_its_colours(tmp_path):
    pal = np.array([[0, 0, 0], [250, 10, 20], [5, 200, 9], [1, 2, 240]], np.uint8)
    idx = RNG.integers(0, 4, (8, 10), dtype=np.uint8)
    im = Image.fromarray(idx, "P")
    im.putpalette(pal.ravel().tolist())
    im.save(tmp_path / "p.png")
    assert np.array_equal(read_image(tmp_path / "p.png"), pal[idx])


def test_bilevel_becomes_0_255(tmp_path):
    bits = RNG.random((8, 10)) > 0.5
    Image.fromarray(bits).convert("1").save(tmp_path / "b.png")
    assert np.array_equal(read_image(tmp_path / "b.png")[..., 1], bits.astype(np.uint8) * 255)


def test_tiff_16bit_rgb_and_float(tmp_path):
    import tifffile

    v = RNG.integers(0, 65536, (6, 7, 3)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "c.tif", v, photometric="rgb")
    assert np.array_equal(read_image(tmp_path / "c.tif"), np.rint(v / 257.0).astype(np.uint8))
    f = RNG.random((6, 7)).astype(np.float32)
    tifffile.imwrite(tmp_path / "f.tiff", f)
    assert np.array_equal(read_image(tmp_path / "f.tiff")[..., 0], np.rint(f.astype(np.float64) * 255).astype(np.uint8))


def test_jpeg_reads_close_to_original(tmp_path):
    yy, xx = np.mgrid[:32, :32]
    smooth = np.stack([yy * 6, xx * 6, (yy + xx) * 3], -1).astype(np.uint8)
    Image.fromarray(smooth).save(tmp_path / "j.jpg", quality=95)
    out = read_image(tmp_path / "j.jpg")
    assert out.shape == smooth.shape and np.abs(out.astype(int) - smooth).mean() < 4


@pytest.mark.parametrize("name", ["n.nii", "n.nii.gz"])
def test_nifti_2d(tmp_path, name):
    import nibabel as nib

    nib.save(nib.Nifti1Image(GRAY[:, :, None], np.eye(4)), tmp_path / name)  # (H, W, 1) squeezed
    assert np.array_equal(read_image(tmp_path / name)[..., 1], GRAY)
    ct = RNG.integers(-1000, 3000, (5, 6)).astype(np.int16)
    nib.save(nib.Nifti1Image(ct, np.eye(4)), tmp_path / ("ct" + name[1:]))
    lo, hi = ct.min(), ct.max()
    expect = np.rint((ct.astype(float) - lo) * 255.0 / (hi - lo)).astype(np.uint8)
    assert np.array_equal(read_image(tmp_path / ("ct" + name[1:]))[..., 0], expect)


# ---------------------------------------------------------------- bad input -> DataError naming the file


def _assert_data_error(path, *words, **kw):
    with pytest.raises(DataError) as err:
        read_image(path, **kw)
    assert path.name in str(err.value)
    for w in words:
        assert w in str(err.value)


def test_missing_and_empty_files(tmp_path):
    _assert_data_error(tmp_path / "nothere.png", "does not exist")
    (tmp_path / "empty.png").write_bytes(b"")
    _assert_data_error(tmp_path / "empty.png", "empty")


def test_text_file_named_png(tmp_path):
    (tmp_path / "notes.png").write_text("this is not an image\n")
    _assert_data_error(tmp_path / "notes.png", "not an image")


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_truncated_file(tmp_path, ext):
    noisy = RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)  # noise: the pixel data dominates the file
    full = tmp_path / f"full{ext}"
    Image.fromarray(noisy).save(full)
    cut = tmp_path / f"cut{ext}"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    _assert_data_error(cut, "truncated")


def test_too_many_pixels_checked_from_header_before_decoding(tmp_path):
    big = tmp_path / "big.png"
    Image.fromarray(np.zeros((300, 400), np.uint8)).save(big)
    header_only = tmp_path / "bomb.png"
    raw = big.read_bytes()
    header_only.write_bytes(raw[: raw.index(b"IDAT") + 8])  # header chunks, then almost no pixel data
    # decoding would fail with "truncated"; the size check must come first
    _assert_data_error(header_only, "300x400", max_pixels=100_000)
    assert read_image(big, max_pixels=120_000).shape == (300, 400, 3)


def test_nifti_volume_and_bomb(tmp_path):
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6), np.uint8), np.eye(4)), tmp_path / "vol.nii")
    _assert_data_error(tmp_path / "vol.nii", "2D")
    nib.save(nib.Nifti1Image(np.zeros((40, 50), np.uint8), np.eye(4)), tmp_path / "big.nii")
    _assert_data_error(tmp_path / "big.nii", "40x50", max_pixels=1999)


# ---------------------------------------------------------------- masks


def test_binary_mask_two_discs_become_two_instances(tmp_path):
    a, b = _disc((40, 50), 12, 12, 7), _disc((40, 50), 25, 36, 8)
    Image.fromarray(((a | b) * 255).astype(np.uint8)).save(tmp_path / "m.png")
    lab = read_mask(tmp_path / "m.png")
    assert lab.dtype == np.int32 and set(np.unique(lab)) == {0, 1, 2}
    assert len(np.unique(lab[a])) == 1 and len(np.unique(lab[b])) == 1 and lab[a][0] != lab[b][0]
    assert np.array_equal(lab > 0, a | b)


def test_binary_components_use_8_connectivity():
    m = np.zeros((6, 6), np.uint8)
    m[1:3, 1:3] = 1
    m[3:5, 3:5] = 1  # touches the first square only at a corner
    assert instances_from_mask(m).max() == 1
    assert ndi.label(m)[1] == 2  # what 4-connectivity would have given


def test_instance_mask_kept_and_relabelled(tmp_path):
    lab = np.zeros((10, 12), np.uint16)
    lab[1:4, 1:4], lab[5:9, 2:5], lab[2:6, 7:11] = 3, 300, 7
    lab[0, 11] = 3  # a disconnected piece of object 3 stays object 3
    Image.fromarray(lab).save(tmp_path / "i.png")
    out = read_mask(tmp_path / "i.png")
    assert out.max() == 3
    for v in (3, 7, 300):  # same partition, values made consecutive in order
        assert len(np.unique(out[lab == v])) == 1
    assert out[1, 1] == 1 and out[2, 7] == 2 and out[5, 2] == 3 and out[0, 11] == 1


def test_rgb_mask_with_equal_channels_and_colour_masks():
    a, b = _disc((30, 30), 8, 8, 5), _disc((30, 30), 20, 20, 6)
    gray = ((a | b) * 255).astype(np.uint8)
    assert np.array_equal(instances_from_mask(np.stack([gray] * 3, -1)), instances_from_mask(gray))
    red = np.zeros((30, 30, 3), np.uint8)
    red[a | b] = (255, 0, 0)
    assert instances_from_mask(red).max() == 2  # two colours -> binary -> components
    col = red.copy()
    col[b] = (0, 255, 0)
    col[14:17, 0:3] = (0, 0, 255)
    out = instances_from_mask(col)
    assert out.max() == 3 and len(np.unique(out[a])) == 1 and len(np.unique(out[b])) == 1


def test_mask_values_without_background_and_negative():
    with pytest.raises(DataError, match="neither of them 0"):
        instances_from_mask(np.array([[1, 2], [2, 1]]), name="odd.png")
    with pytest.raises(DataError, match="negative"):
        instances_from_mask(np.array([[0, -1], [2, 3]]))


def test_palette_mask_reads_indices(tmp_path):
    idx = np.zeros((10, 10), np.uint8)
    idx[1:4, 1:4], idx[6:9, 6:9], idx[1:3, 7:9] = 1, 2, 5
    im = Image.fromarray(idx, "P")
    im.putpalette([0, 0, 0, 200, 0, 0, 0, 200, 0, 1, 1, 1, 2, 2, 2, 0, 0, 200])
    im.save(tmp_path / "p.png")
    out = read_mask(tmp_path / "p.png")
    assert out.max() == 3 and out[2, 2] == 1 and out[7, 7] == 2 and out[1, 8] == 3


def test_gif_mask_reads_gray_values_not_palette_indices(tmp_path):
    # GIF stores black/white masks (DRIVE's 21_manual1.gif) with a palette; here white is index 0
    # and black index 1, so the indices would make the background the object.
    a, b = _disc((30, 40), 8, 10, 5), _disc((30, 40), 20, 28, 6)
    idx = np.where(a | b, 0, 1).astype(np.uint8)
    im = Image.fromarray(idx, "P")
    im.putpalette([255, 255, 255, 0, 0, 0])
    im.save(tmp_path / "m.gif", optimize=False)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "m.gif")), idx)  # stored as indices
    lab = read_mask(tmp_path / "m.gif")
    _, n = ndi.label(a | b, structure=np.ones((3, 3)))
    assert lab.max() == n == 2 and np.array_equal(lab > 0, a | b)


def test_jpeg_mask_thresholded(tmp_path):
    a, b = _disc((40, 40), 10, 10, 6), _disc((40, 40), 28, 28, 7)
    Image.fromarray(((a | b) * 255).astype(np.uint8)).save(tmp_path / "m.jpg", quality=70)
    lab = read_mask(tmp_path / "m.jpg")
    assert lab.max() == 2 and (lab > 0)[a | b].mean() > 0.95


def test_mask_size_mismatch_names_both(tmp_path):
    Image.fromarray(np.zeros((40, 50), np.uint8)).save(tmp_path / "m.png")
    with pytest.raises(DataError) as err:
        read_mask(tmp_path / "m.png", shape=(52, 77), image_name="img_7.png")
    msg = str(err.value)
    assert "m.png" in msg and "img_7.png" in msg and "40x50" in msg and "52x77" in msg


def test_bad_mask_file_named(tmp_path):
    (tmp_path / "junk_mask.png").write_text("hello")
    with pytest.raises(DataError, match="junk_mask.png"):
        read_mask(tmp_path / "junk_mask.png")


# ---------------------------------------------------------------- write_mask


def test_write_mask_round_trip_16bit(tmp_path):
    lab = RNG.integers(0, 60000, (9, 13)).astype(np.int32)
    path = write_mask(tmp_path / "sub" / "m.png", lab)
    with Image.open(path) as im:
        assert im.mode.startswith("I;16")
        raw = np.asarray(im)
    assert np.array_equal(raw, lab)
    assert sorted(os.listdir(tmp_path / "sub")) == ["m.png"]  # no temp file left


@pytest.mark.parametrize("bad", [np.zeros((2, 3, 2), np.int32), np.full((2, 2), -1), np.full((2, 2), 70000),
                                 np.zeros((2, 2), np.float32)])
def test_write_mask_rejects_bad_labels(tmp_path, bad):
    with pytest.raises(DataError, match="m.png"):
        write_mask(tmp_path / "m.png", bad)


def test_write_mask_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "m.png"
    write_mask(path, np.ones((4, 4), np.int32))

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(dio.os, "replace", boom)
    with pytest.raises(OSError):
        write_mask(path, np.full((4, 4), 2, np.int32))
    monkeypatch.undo()
    assert np.array_equal(np.asarray(Image.open(path)), np.ones((4, 4)))  # the old mask survives
    assert os.listdir(tmp_path) == ["m.png"]


def test_io_and_importers_import_without_torch(tmp_path):
    """The numpy-only runtime reads images through seglearn.data: it must not pull in torch/MONAI."""
    import subprocess
    import sys

    Image.fromarray(RGB).save(tmp_path / "a.png")
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['monai'] = None\n"
        "from seglearn.data import read_image, read_mask, scan_folders, make_synthetic\n"
        f"assert read_image({str(tmp_path / 'a.png')!r}).shape == (12, 17, 3)\n"
        "import seglearn.data as d\n"
        "try:\n    d.train_transforms\nexcept ImportError:\n    pass\nelse:\n    raise SystemExit('torch leaked')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
