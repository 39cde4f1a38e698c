"""The synthetic gland generator: determinism, instance structure, touching pairs, files written."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from seglearn.data import make_synthetic, read_image, read_mask, synth_image

SIZE = (96, 112)


@pytest.fixture(scope="module")
def samples():
    return [synth_image(np.random.default_rng(i), SIZE) for i in range(16)]


def _touching(labels: np.ndarray) -> bool:
    """Two different objects 4-adjacent somewhere (oracle by array shifts, independent of the code)."""
    for a, b in ((labels[1:, :], labels[:-1, :]), (labels[:, 1:], labels[:, :-1])):
        if np.any((a > 0) & (b > 0) & (a != b)):
            return True
    return False


def test_same_seed_same_sample_different_seed_different():
    a1, l1 = synth_image(np.random.default_rng(7), SIZE)
    a2, l2 = synth_image(np.random.default_rng(7), SIZE)
    b, lb = synth_image(np.random.default_rng(8), SIZE)
    assert np.array_equal(a1, a2) and np.array_equal(l1, l2)
    assert not np.array_equal(a1, b) and not np.array_equal(l1, lb)


def test_types_counts_and_consecutive_labels(samples):
    for img, lab in samples:
        assert img.shape == SIZE + (3,) and img.dtype == np.uint8
        assert lab.shape == SIZE and lab.dtype == np.int32
        n = lab.max()
        assert 2 <= n <= 8
        assert set(np.unique(lab)) == set(range(n + 1))  # 0..N, none missing
        assert 0.05 < (lab > 0).mean() < 0.7


def test_some_samples_have_touching_glands(samples):
    touching = sum(_touching(lab) for _, lab in samples)
    assert 0 < touching < len(samples)  # some, not all: both cases occur


def test_he_like_colours_and_not_trivially_separable(samples):
    for img, lab in samples:
        fg, x = lab > 0, img.astype(float)
        # eosin stroma is red-dominant pink; glands (hematoxylin nuclei) are bluer than the stroma
        assert x[~fg, 0].mean() > x[~fg, 2].mean() - 20 and x[~fg, 0].mean() > x[~fg, 1].mean() + 40
        ratio = lambda m: (x[m, 2] / (x[m, 0] + 1)).mean()  # noqa: E731
        assert ratio(fg) > ratio(~fg)
    # learnable but not trivial: no single-channel threshold segments the glands (Dice < 0.92)
    img, lab = samples[0]
    fg = lab > 0
    best = 0.0
    for c in range(3):
        for t in range(0, 256, 2):
            for pred in (img[..., c] < t, img[..., c] >= t):
                best = max(best, 2 * (pred & fg).sum() / (pred.sum() + fg.sum()))
    assert 0.5 < best < 0.92


def test_bad_size():
    with pytest.raises(ValueError, match="32x32"):
        synth_image(np.random.default_rng(0), (16, 64))


def test_make_synthetic_files_splits_and_determinism(tmp_path):
    recs = make_synthetic(4, tmp_path / "a", size=(64, 64), seed=3, test_fraction=0.25)
    assert [r.name for r in recs] == ["syn_000", "syn_001", "syn_002", "syn_003"]
    assert sorted(r.split for r in recs) == ["pool", "pool", "pool", "test"]
    again = make_synthetic(4, tmp_path / "b", size=(64, 64), seed=3, test_fraction=0.25)
    fewer = make_synthetic(3, tmp_path / "c", size=(64, 64), seed=3, test_fraction=0.0)
    assert {r.split for r in fewer} == {"pool"}
    for i, r in enumerate(recs):
        assert r.image_path == tmp_path / "a" / "images" / f"syn_{i:03d}.png"
        assert r.mask_path == tmp_path / "a" / "masks" / f"syn_{i:03d}_anno.png"
        with Image.open(r.mask_path) as im:
            assert im.mode.startswith("I;16")  # 16-bit instance PNG
        img, lab = read_image(r.image_path), read_mask(r.mask_path)
        assert np.array_equal(img, read_image(again[i].image_path))
        assert np.array_equal(lab, read_mask(again[i].mask_path))
        if i < 3:  # sample i does not depend on how many samples were asked for
            assert np.array_equal(img, read_image(fewer[i].image_path))
    seed4 = make_synthetic(1, tmp_path / "d", size=(64, 64), seed=4, test_fraction=0.0)
    assert not np.array_equal(read_image(seed4[0].image_path), read_image(recs[0].image_path))


def test_make_synthetic_bad_args(tmp_path):
    with pytest.raises(ValueError, match="n must"):
        make_synthetic(0, tmp_path)
    with pytest.raises(ValueError, match="test_fraction"):
        make_synthetic(2, tmp_path, test_fraction=1.0)
