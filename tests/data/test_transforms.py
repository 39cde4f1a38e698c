"""MONAI pipelines keep image and labels aligned; contour bands; padding helpers; SegDataset."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage as ndi

from seglearn.data import DataError, write_mask
from seglearn.data.dataset import SegDataset
from seglearn.data.transforms import contour_band, crop_to, eval_transforms, pad_to_multiple, train_transforms

H, W = 40, 52


def _coord_sample():
    """Image whose pixels encode their own (row, col); blocks of instances, some touching."""
    yy, xx = np.mgrid[:H, :W]
    img = np.stack([yy * 5, xx * 4, np.full((H, W), 7)], -1).astype(np.uint8)
    inst = np.zeros((H, W), np.int32)
    inst[3:15, 4:20], inst[3:15, 20:30] = 1, 2  # touching pair
    inst[22:37, 30:49] = 3
    inst[25:30, 5:9] = 4
    return img, inst


def _oracle_band(inst, width):
    """Chessboard distance from each object pixel to the nearest pixel of another label."""
    pad = width + 1
    big = np.pad(inst, pad, mode="edge")  # the image border is not a boundary
    band = np.zeros(big.shape, bool)
    for k in np.unique(inst[inst > 0]):
        d = ndi.distance_transform_cdt(big == k, metric="chessboard")
        band |= (big == k) & (d <= width)
    return band[pad:-pad, pad:-pad].astype(np.uint8)


@pytest.mark.parametrize("width", [1, 2, 3])
def test_contour_band_matches_distance_oracle(width):
    _, inst = _coord_sample()
    assert np.array_equal(contour_band(inst, width), _oracle_band(inst, width))


def test_contour_band_hand_counts():
    inst = np.zeros((10, 10), np.int32)
    inst[1:8, 1:8] = 1  # 7x7 square: perimeter 24, next ring 16
    assert contour_band(inst, 1).sum() == 24 and contour_band(inst, 2).sum() == 40
    pair = np.zeros((5, 8), np.int32)
    pair[:, :4], pair[:, 4:] = 1, 2  # fills the image: only the shared border is a boundary
    assert np.array_equal(np.flatnonzero(contour_band(pair, 1).any(0)), [3, 4])
    with pytest.raises(ValueError, match="width"):
        contour_band(inst, 0)


def _decode(img_t):
    x = np.rint(img_t.numpy() * 255).astype(int)
    return x[0] // 5, x[1] // 4, x[2]


@pytest.mark.parametrize("seed", range(6))
def test_train_transforms_keep_image_and_labels_aligned(seed):
    img, inst = _coord_sample()
    band = contour_band(inst, 2)
    tr = train_transforms(crop=(24, 32), targets=("fg", "contour"), contour_width=2, keep_instances=True, jitter=False)
    tr.set_random_state(seed)
    out = tr(dict(image=img, label=inst))
    assert out["image"].shape == (3, 24, 32) and out["image"].dtype == torch.float32
    assert out["label"].shape == (2, 24, 32) and out["label"].dtype == torch.float32
    assert out["instances"].shape == (1, 24, 32) and out["instances"].dtype == torch.int32
    rows, cols, const = _decode(out["image"])
    assert np.all(const == 7)
    lab = out["label"].numpy()
    assert np.array_equal(lab[0], (inst[rows, cols] > 0).astype(np.float32))
    assert np.array_equal(lab[1], band[rows, cols].astype(np.float32))  # band computed before geometry
    assert np.array_equal(out["instances"][0].numpy(), inst[rows, cols])


def test_pad_when_image_smaller_than_crop():
    img, inst = _coord_sample()
    tr = train_transforms(crop=64, jitter=False)
    tr.set_random_state(1)
    out = tr(dict(image=img, label=inst))
    assert out["image"].shape == (3, 64, 64) and out["label"].shape == (1, 64, 64)
    pad = out["image"].sum(0) == 0  # the padding is zeros (the real image never is: blue = 7)
    assert pad.sum() == 64 * 64 - H * W and not out["label"][0][pad].any()


def test_jitter_changes_image_only_and_seeds_repeat():
    img, inst = _coord_sample()
    plain = train_transforms(crop=32, jitter=False)
    jit = train_transforms(crop=32, jitter=True)
    plain.set_random_state(5)
    jit.set_random_state(5)
    a, b = plain(dict(image=img, label=inst)), jit(dict(image=img, label=inst))
    assert torch.equal(a["label"], b["label"])  # same geometry: jitter draws after it
    assert not torch.equal(a["image"], b["image"])
    assert 0.0 <= float(b["image"].min()) and float(b["image"].max()) <= 1.0
    jit.set_random_state(5)
    assert torch.equal(jit(dict(image=img, label=inst))["image"], b["image"])


def test_eval_transforms_scale_and_no_label():
    img, inst = _coord_sample()
    out = eval_transforms(scale=0.5)(dict(image=img, label=inst))
    assert out["image"].shape == (3, H // 2, W // 2) and out["label"].shape == (1, H // 2, W // 2)
    assert set(np.unique(out["label"].numpy())) <= {0.0, 1.0}
    full = eval_transforms()(dict(image=img))
    assert set(full) == {"image"} and torch.allclose(full["image"], torch.as_tensor(img).permute(2, 0, 1) / 255.0)


def test_bad_targets_and_mismatched_label():
    with pytest.raises(ValueError, match="targets"):
        train_transforms(16, targets=("contour",))
    img, inst = _coord_sample()
    with pytest.raises(DataError, match="40x52"):
        eval_transforms()(dict(image=img, label=inst[:30]))


@pytest.mark.parametrize("shape,m", [((3, 13, 21), 8), ((2, 1, 5, 6), 4), ((7, 9), 16), ((3, 16, 8), 8)])
def test_pad_to_multiple_numpy_and_torch(shape, m):
    x = np.random.default_rng(0).random(shape).astype(np.float32)
    for arr in (x, torch.from_numpy(x)):
        p, hw = pad_to_multiple(arr, m)
        assert type(p) is type(arr) and p.shape[-2] % m == 0 and p.shape[-1] % m == 0
        assert hw == shape[-2:] and np.array_equal(np.asarray(crop_to(p, hw)), x)
        if shape[-2] > p.shape[-2] - shape[-2] and shape[-1] > p.shape[-1] - shape[-1]:
            ph, pw = p.shape[-2] - shape[-2], p.shape[-1] - shape[-1]
            ref = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(0, ph), (0, pw)], mode="reflect")
            assert np.allclose(np.asarray(p), ref)


def test_seg_dataset_from_arrays_and_paths(tmp_path):
    img, inst = _coord_sample()
    Image.fromarray(img).save(tmp_path / "a.png")
    write_mask(tmp_path / "a_anno.png", inst)
    tf = eval_transforms(targets=("fg", "contour"))
    from_arrays = SegDataset([dict(image=img, label=inst, name="a")], tf, cache=True)
    from_paths = SegDataset([dict(image=tmp_path / "a.png", label=tmp_path / "a_anno.png")], tf, cache=False)
    a, b = from_arrays[0], from_paths[0]
    assert len(from_arrays) == 1 and a["name"] == "a"
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    loader = torch.utils.data.DataLoader(from_arrays, batch_size=1)
    assert next(iter(loader))["label"].shape == (1, 2, H, W)
    with pytest.raises(DataError, match="sample 0"):
        SegDataset([dict(image=img, label=inst[:, :10])], tf)
    (tmp_path / "bad_anno.png").write_text("not a mask")
    for cache in (True, False):  # the file's DataError, not MONAI's RuntimeError wrapper
        with pytest.raises(DataError, match="bad_anno.png"):
            SegDataset([dict(image=img, label=tmp_path / "bad_anno.png")], tf, cache=cache)[0]


def test_in_memory_labels_kept_bool_labels_split():
    img, _ = _coord_sample()
    inst = np.zeros((H, W), np.int32)
    inst[2:6, 2:6] = inst[20:25, 30:35] = 1  # one object in two pieces: an annotator's choice, kept
    tf = eval_transforms(keep_instances=True)
    assert tf(dict(image=img, label=inst))["instances"].max() == 1
    assert tf(dict(image=img, label=inst > 0))["instances"].max() == 2  # bool: connected components
