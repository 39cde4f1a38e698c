"""Independent float64 oracles for the runtime tests (numpy only, no code shared with the kernels)."""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def conv_float(x, w, stride=1, padding=0):
    """Float64 cross-correlation with zero padding: x (H, W, Cin), w (Cout, kh, kw, Cin) -> (Ho, Wo, Cout)."""
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    xp = np.pad(x, ((padding, padding), (padding, padding), (0, 0)))
    win = sliding_window_view(xp, w.shape[1:3], axis=(0, 1))[::stride, ::stride]  # (Ho, Wo, Cin, kh, kw)
    return np.einsum("hwcij,oijc->hwo", win, w)


def conv_transpose2x2_float(x, w):
    """out[2i + a, 2j + b, o] = sum_c x[i, j, c] w[o, a, b, c] by explicit scatter."""
    h, wd, _ = x.shape
    out = np.zeros((2 * h, 2 * wd, w.shape[0]))
    for i in range(h):
        for j in range(wd):
            for a in range(2):
                for b in range(2):
                    out[2 * i + a, 2 * j + b] = w[:, a, b, :] @ x[i, j]
    return out


# a seeded table of layer shapes: (H, W, Cin, Cout, k, stride, padding); channel counts not multiples of 64
CONV_TABLE = [
    (7, 9, 3, 5, 3, 1, 1),
    (7, 9, 17, 4, 3, 2, 0),
    (6, 5, 64, 3, 1, 1, 0),
    (5, 7, 65, 66, 3, 2, 1),
    (4, 5, 130, 2, 1, 2, 1),
    (3, 3, 17, 130, 3, 1, 0),
]
