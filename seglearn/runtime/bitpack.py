"""Bit packing for the binary and bit-plane kernels (numpy only).

Layout (the contract every packed kernel relies on): a {0, 1} array ``a`` of shape ``(..., n)`` packs
along its last axis into ``(..., ceil(n / 64))`` uint64 words with bit ``i`` of word ``j`` equal to
``a[..., 64 j + i]``. Bits past ``n`` are 0, so padding channels never count in a popcount of an
``and`` and cancel in an ``xor`` when both operands are packed this way.

Binary (+-1) tensors are packed with 1 = +1 and 0 = -1 (``pack_signs``). A k-bit unsigned code
tensor splits into bit planes ``c_b(x) = (x >> b) & 1`` (DoReFa-Net, Zhou et al. 2016, arXiv
1606.06160), each packed: shape ``(k, ..., nwords)``.
"""

from __future__ import annotations

import numpy as np

WORD_BITS = 64


class BitpackError(ValueError):
    """Input that cannot be packed or unpacked as asked (wrong values, dtype or bit width)."""


def nwords(n: int) -> int:
    """Number of uint64 words that hold ``n`` bits."""
    return -(-int(n) // WORD_BITS)


def pack_bits(a) -> np.ndarray:
    """Pack a {0, 1} array along its last axis, 64 to a uint64 (bit i of word j = element 64 j + i)."""
    a = np.asarray(a)
    if a.ndim == 0:
        raise BitpackError("pack_bits needs at least one axis to pack along")
    if a.dtype.kind not in "biu":
        raise BitpackError(f"pack_bits needs a {{0,1}} integer or bool array, got dtype {a.dtype}")
    if a.size and (a.min() < 0 or a.max() > 1):
        raise BitpackError("pack_bits needs values in {0, 1}")
    n = a.shape[-1]
    pad = nwords(n) * WORD_BITS - n
    a = np.pad(a.astype(np.uint8), [(0, 0)] * (a.ndim - 1) + [(0, pad)])
    # little bit order within each byte + little-endian bytes within each word = the layout above.
    packed = np.packbits(a, axis=-1, bitorder="little")
    return np.ascontiguousarray(packed).view("<u8").astype(np.uint64)


def unpack_bits(p, n: int) -> np.ndarray:
    """Inverse of ``pack_bits``: uint64 ``(..., nwords)`` -> uint8 {0, 1} ``(..., n)``."""
    p = np.asarray(p)
    if p.dtype != np.uint64:
        raise BitpackError(f"unpack_bits needs uint64 words, got dtype {p.dtype}")
    if p.ndim == 0 or p.shape[-1] != nwords(n):
        raise BitpackError(f"{n} bits need {nwords(n)} words in the last axis, got shape {p.shape}")
    by = np.ascontiguousarray(p.astype("<u8")).view(np.uint8)
    return np.unpackbits(by, axis=-1, bitorder="little")[..., :n]


def pack_signs(x) -> np.ndarray:
    """Pack a +-1 tensor (1 = +1, 0 = -1) along its last axis. ``sign(0) = +1`` as in BinaryNet."""
    x = np.asarray(x)
    if x.size and not np.all(np.abs(x) == 1):
        raise BitpackError("pack_signs needs values in {-1, +1}")
    return pack_bits((x > 0).astype(np.uint8))


def unpack_signs(p, n: int) -> np.ndarray:
    """Inverse of ``pack_signs``: packed words -> int8 +-1 ``(..., n)``."""
    return unpack_bits(p, n).astype(np.int8) * 2 - 1


def bitplanes(codes, k: int) -> np.ndarray:
    """Split k-bit unsigned codes ``(..., n)`` into packed planes ``(k, ..., nwords)``: plane b = bit b."""
    c = np.asarray(codes)
    if not 1 <= int(k) <= 16:
        raise BitpackError(f"bit width k must be in [1, 16], got {k}")
    if c.dtype.kind not in "iu":
        raise BitpackError(f"bitplanes needs integer codes, got dtype {c.dtype}")
    if c.size and (c.min() < 0 or c.max() >= 2**k):
        raise BitpackError(f"codes must be in [0, 2^{k}) for k={k}, got range [{c.min()}, {c.max()}]")
    c = c.astype(np.int64)
    return np.stack([pack_bits((c >> b) & 1) for b in range(k)])


def from_bitplanes(planes, n: int) -> np.ndarray:
    """Inverse of ``bitplanes``: ``(k, ..., nwords)`` -> int64 codes ``(..., n)``."""
    planes = np.asarray(planes)
    return sum(unpack_bits(planes[b], n).astype(np.int64) << b for b in range(planes.shape[0]))


def popcount(a) -> np.ndarray:
    """Element-wise number of set bits of an unsigned integer array (int64 result)."""
    a = np.asarray(a)
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(a).astype(np.int64)
    by = np.ascontiguousarray(a).view(np.uint8).reshape(a.shape + (a.dtype.itemsize,))
    return np.unpackbits(by, axis=-1).sum(axis=-1, dtype=np.int64)
