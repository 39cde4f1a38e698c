"""data.augment: strong: HED stain jitter against its formula, and the strong pipeline keeping image and
labels aligned (geometry applied to both, labels stay label values)."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pytest
import torch

from seglearn.config import Config, ConfigError, load_config
from seglearn.data.transforms import RandHEDJitterd, train_transforms

# Ruifrok & Johnston's H&E-DAB stain vectors (rows: H, E, DAB; columns: R, G, B), typed in from the
# paper (Anal Quant Cytol Histol 23, 2001) as the independent oracle of skimage's matrix.
RUIFROK = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])


def _he_like(h=24, w=20, seed=0):
    """A random image in the H&E cone: OD a positive mix of the three stain vectors."""
    rng = np.random.default_rng(seed)
    conc = rng.uniform(0.0, 1.2, (h, w, 3))
    od = conc @ RUIFROK
    return np.exp(-od).astype(np.float32)  # (h, w, 3) in (0, 1]


def test_hed_identity_at_alpha_one_beta_zero():
    x = torch.as_tensor(_he_like()).permute(2, 0, 1)
    x[0, 0, 0] = 0.0  # a black pixel: ln(0) is clamped to ln(eps)
    y = RandHEDJitterd.apply(x, np.ones(3), np.zeros(3))
    np.testing.assert_allclose(y.numpy(), x.clamp_min(1e-6).numpy(), rtol=1e-5, atol=1e-6)


def test_hed_shift_matches_deconvolution_oracle():
    """beta on one stain adds beta times that stain's OD vector to every pixel's OD."""
    x = torch.as_tensor(_he_like(seed=1)).permute(2, 0, 1)
    beta = np.array([0.1, 0.0, 0.0])  # more haematoxylin
    y = RandHEDJitterd.apply(x, np.ones(3), beta).numpy()
    od = -np.log(x.numpy().transpose(1, 2, 0).astype(np.float64)) + 0.1 * RUIFROK[0]
    want = np.clip(np.exp(-od), 0, 1).transpose(2, 0, 1)
    np.testing.assert_allclose(y, want, atol=1e-5)
    assert (y <= x.numpy() + 1e-6).all()  # adding stain only darkens


def test_hed_scale_multiplies_concentrations():
    x = torch.as_tensor(_he_like(seed=2)).permute(2, 0, 1)
    a = np.array([1.2, 0.9, 1.0])
    y = RandHEDJitterd.apply(x, a, np.zeros(3))
    from skimage.color import hed_from_rgb
    c_x = -np.log(x.numpy().transpose(1, 2, 0)) @ hed_from_rgb
    c_y = -np.log(np.maximum(y.numpy().transpose(1, 2, 0), 1e-6)) @ hed_from_rgb
    np.testing.assert_allclose(c_y, c_x * a, atol=1e-4)


def test_hed_transform_leaves_labels_and_respects_prob():
    x = torch.as_tensor(_he_like(seed=3)).permute(2, 0, 1)
    lab = torch.zeros(1, 24, 20)
    lab[0, 5:10, 5:12] = 1
    t = RandHEDJitterd("image", prob=1.0, sigma_alpha=0.2, sigma_beta=0.2)
    t.set_random_state(0)
    out = t({"image": x, "label": lab})
    assert torch.equal(out["label"], lab) and not torch.allclose(out["image"], x)
    assert float(out["image"].min()) >= 0.0 and float(out["image"].max()) <= 1.0
    off = RandHEDJitterd("image", prob=0.0)
    assert torch.equal(off({"image": x})["image"], x)


def _bright_glands(h=96, w=96):
    inst = np.zeros((h, w), np.int32)
    yy, xx = np.mgrid[:h, :w]
    for k, (cy, cx, r) in enumerate([(25, 30, 14), (60, 65, 18), (75, 20, 10)], 1):
        inst[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = k
    img = np.where(inst[..., None] > 0, 230, 25).astype(np.uint8).repeat(3, -1)
    return img, inst


def test_strong_pipeline_keeps_image_and_labels_aligned():
    img, inst = _bright_glands()
    tf = train_transforms(64, targets=("fg", "contour"), augment="strong", jitter=False)
    agree, moved = [], 0
    for seed in range(12):
        tf.set_random_state(seed)
        out = tf({"image": img, "label": inst})
        x, lab = out["image"].numpy(), out["label"].numpy()
        assert x.shape == (3, 64, 64) and lab.shape == (2, 64, 64)
        assert set(np.unique(lab)) <= {0.0, 1.0}  # nearest: labels stay labels
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
        bright = x.mean(0) > 0.5
        agree.append((bright == (lab[0] > 0)).mean())
        moved += int(not np.isin(np.round(x * 255), [25, 230]).all())
    assert min(agree) > 0.97, agree  # geometry moved image and label together
    assert moved > 0  # and the strong augmentations did act


def test_basic_pipeline_unchanged_by_default():
    img, inst = _bright_glands()
    a, b = train_transforms(64), train_transforms(64, augment="basic")
    a.set_random_state(3)
    b.set_random_state(3)
    oa, ob = a({"image": img, "label": inst}), b({"image": img, "label": inst})
    assert torch.equal(oa["image"], ob["image"]) and torch.equal(oa["label"], ob["label"])
    with pytest.raises(ValueError, match="augment must be one of basic, strong"):
        train_transforms(64, augment="heavy")


def test_config_key_validated_and_default_hash_unchanged(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("data:\n  augment: heavy\n")
    with pytest.raises(ConfigError, match="data.augment must be one of basic, strong"):
        load_config(p)
    cfg = Config()
    data = dataclasses.asdict(cfg)  # the hash as computed before the key existed
    del data["compute"], data["data"]["augment"], data["train"]["warmup"], data["postprocess"]["tta"]
    del data["final"]["lr"], data["final"]["warmup"]  # added later still, at their defaults
    before = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]
    assert cfg.hash() == before
    strong = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, augment="strong"))
    assert strong.hash() != before
