"""Descriptors: loop oracle, batch == per image, streaming tiles == whole map."""

import numpy as np
import pytest

from seglearn.active import DescriptorAccumulator, descriptor_from_features, descriptors_from_batch


def _oracle(feats):
    n, f, h, w = feats.shape
    out = []
    for c in range(f):
        per_member = [sum(float(feats[m, c, i, j]) for i in range(h) for j in range(w)) / (h * w)
                      for m in range(n)]
        out.append(sum(per_member) / n)
    return np.array(out)


def test_descriptor_matches_loop_oracle():
    feats = np.random.default_rng(0).random((3, 5, 4, 6)).astype(np.float32)
    d = descriptor_from_features(feats)
    assert d.dtype == np.float32 and d.shape == (5,)
    np.testing.assert_allclose(d, _oracle(feats), rtol=1e-6)


def test_batch_equals_per_image():
    feats = np.random.default_rng(1).random((4, 2, 3, 5, 5))
    got = descriptors_from_batch(feats)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, np.stack([descriptor_from_features(f) for f in feats]))


@pytest.mark.parametrize("seed", range(3))
def test_streaming_tiles_equal_whole(seed):
    rng = np.random.default_rng(seed)
    feats = rng.random((3, 4, 11, 13)).astype(np.float32)
    rows = np.sort(rng.choice(np.arange(1, 11), 2, replace=False))
    cols = np.sort(rng.choice(np.arange(1, 13), 3, replace=False))
    acc = DescriptorAccumulator()
    # Uneven, non-overlapping tiles covering the map exactly once.
    for r0, r1 in zip([0, *rows], [*rows, 11]):
        for c0, c1 in zip([0, *cols], [*cols, 13]):
            acc.add(feats[:, :, r0:r1, c0:c1])
    assert acc.pixels == 11 * 13
    np.testing.assert_allclose(acc.result(), descriptor_from_features(feats), rtol=1e-6)
    np.testing.assert_allclose(acc.result(), _oracle(feats), rtol=1e-6)


def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match=r"\(N, F, h, w\)"):
        descriptor_from_features(np.zeros((4, 3, 3)))
    with pytest.raises(ValueError, match="empty"):
        descriptor_from_features(np.zeros((2, 3, 0, 4)))
    with pytest.raises(ValueError, match="NaN"):
        descriptor_from_features(np.full((1, 1, 2, 2), np.nan))
    acc = DescriptorAccumulator()
    with pytest.raises(ValueError, match="no tiles"):
        acc.result()
    acc.add(np.zeros((2, 3, 2, 2)))
    with pytest.raises(ValueError, match="earlier tiles"):
        acc.add(np.zeros((2, 4, 2, 2)))
