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


def test_pow2_row_runs_the_exported_floor_of_those_weights():
    """The 64->64 3x3 row's weights span ~31 exponents: raw, 255 * sum|w| overflows int32 and the
    kernel refuses them; the row times what the exporter writes (the floor raised until it fits)."""
    from seglearn.export.encode import INT32_MAX
    from seglearn.runtime import checks

    bench = load_bench("runtime")
    sign, shift = bench.inq7_weights(np.random.default_rng(0), (64, 3, 3, 64))
    w_raw = sign.astype(np.int64) << shift.astype(np.int64)
    assert 255 * np.abs(w_raw).reshape(64, -1).sum(1).max() > INT32_MAX
    s2, h2 = bench.exported_pow2(sign, shift)
    w = s2.astype(np.int64) << h2.astype(np.int64)
    assert 255 * np.abs(w).reshape(64, -1).sum(1).max() <= INT32_MAX
    # The largest weight is a power of two above the floor, so it fixes the floor 2^f; every other
    # weight is the raw one rounded to a multiple of 2^f.
    f = int(np.log2(np.abs(w_raw).max() // np.abs(w).max()))
    assert f >= 1
    np.testing.assert_array_equal(w, np.sign(w_raw) * np.floor(np.abs(w_raw) / 2.0**f + 0.5))
    x = np.random.default_rng(1).integers(0, 256, (9, 9, 64), dtype=np.uint8)
    checks.pow2_args(x, 0, s2, h2, None, 1, 1)  # the kernel's bound holds: no KernelError
