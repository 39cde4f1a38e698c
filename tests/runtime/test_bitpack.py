"""bitpack: the documented bit layout, round trips, bit planes and popcount."""

import numpy as np
import pytest

from seglearn.runtime import bitpack as bp


def test_layout_bit_i_of_word_j_is_element_64j_plus_i():
    a = np.zeros(130, np.uint8)
    a[[0, 3, 63, 64, 129]] = 1
    p = bp.pack_bits(a)
    assert p.dtype == np.uint64 and p.shape == (3,)
    assert int(p[0]) == (1 << 0) | (1 << 3) | (1 << 63)
    assert int(p[1]) == 1
    assert int(p[2]) == 1 << 1  # element 129 = 64 * 2 + 1; bits past 130 stay 0


@pytest.mark.parametrize("n", [1, 3, 17, 64, 65, 130])
def test_pack_unpack_round_trip(n):
    rng = np.random.default_rng(n)
    a = rng.integers(0, 2, (3, 2, n)).astype(np.uint8)
    p = bp.pack_bits(a)
    assert p.shape == (3, 2, bp.nwords(n))
    np.testing.assert_array_equal(bp.unpack_bits(p, n), a)
    s = np.where(a > 0, 1, -1)
    np.testing.assert_array_equal(bp.unpack_signs(bp.pack_signs(s), n), s)


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_bitplanes_round_trip_and_plane_meaning(k):
    rng = np.random.default_rng(k)
    c = rng.integers(0, 2**k, (4, 5, 67))
    planes = bp.bitplanes(c, k)
    assert planes.shape == (k, 4, 5, 2)
    np.testing.assert_array_equal(bp.from_bitplanes(planes, 67), c)
    for b in range(k):
        np.testing.assert_array_equal(bp.unpack_bits(planes[b], 67), (c >> b) & 1)


def test_popcount_against_python_bit_count():
    rng = np.random.default_rng(0)
    v = rng.integers(0, 2**63, 100, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, 100).astype(np.uint64)
    assert bp.popcount(v).tolist() == [int(x).bit_count() for x in v]


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"\{0, 1\}"):
        bp.pack_bits(np.array([0, 2]))
    with pytest.raises(ValueError, match="-1, \\+1"):
        bp.pack_signs(np.array([1, 0]))
    with pytest.raises(ValueError, match="codes must be in"):
        bp.bitplanes(np.array([4]), 2)
    with pytest.raises(ValueError, match="words"):
        bp.unpack_bits(np.zeros(2, np.uint64), 200)
