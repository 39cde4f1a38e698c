"""bench/runtime.py's INQ-7 kernel row runs on weights projected as the quantizer projects them
(so the sparse-tail split meets the exponent spread a trained layer has, not a uniform one)."""

import numpy as np
import torch

from bench_scripts import load_bench
from seglearn.quant.inq import inq_exponents, inq_project


def test_inq7_weights_are_inq_project_of_the_same_gaussian():
    bench = load_bench("runtime")
    sign, shift = bench.inq7_weights(np.random.default_rng(3), (32, 3, 3, 16))
    w = np.random.default_rng(3).standard_normal((32, 3, 3, 16))
    n1, n2 = inq_exponents(float(np.abs(w).max()), 7)
    want = inq_project(torch.from_numpy(w), n1, n2).numpy()
    nmin = np.log2(np.abs(want[want != 0])).min()
    got = sign * 2.0 ** (shift.astype(np.float64) + nmin)
    np.testing.assert_array_equal(got, want)
    assert shift.max() >= 14  # the spread of a 7-bit layer: more than two base-128 digits
