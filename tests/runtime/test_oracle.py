"""The float oracle itself against a hand-computed case and scipy, so the other tests stand on it."""

import numpy as np
from scipy.signal import correlate2d

from runtime_oracle import conv_float, conv_transpose2x2_float


def test_conv_float_hand_case():
    x = np.arange(9, dtype=float).reshape(3, 3, 1)
    w = np.array([[1, 0], [0, -1]], dtype=float).reshape(1, 2, 2, 1)
    # out[i, j] = x[i, j] - x[i + 1, j + 1] = -4 everywhere
    assert conv_float(x, w).tolist() == [[[-4.0], [-4.0]], [[-4.0], [-4.0]]]


def test_conv_float_matches_scipy_with_padding_and_stride():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, 9, 2))
    w = rng.normal(size=(3, 3, 3, 2))
    got = conv_float(x, w, stride=2, padding=1)
    for o in range(3):
        full = sum(correlate2d(np.pad(x[:, :, c], 1), w[o, :, :, c], mode="valid") for c in range(2))
        np.testing.assert_allclose(got[:, :, o], full[::2, ::2])


def test_conv_transpose_oracle_hand_case():
    x = np.array([[[1.0, 2.0]]])
    w = np.arange(8, dtype=float).reshape(1, 2, 2, 2)
    assert conv_transpose2x2_float(x, w)[:, :, 0].tolist() == [[2.0, 8.0], [14.0, 20.0]]
