"""Marker watershed and h-maxima in numba, equal to scikit-image's (0.21 - 0.26) pixel for pixel.

These are the two scikit-image calls of the post-processing (``instances``); written here so that
the integer runtime, which post-processes with the same code, installs without scikit-image (and
its networkx, imageio, tifffile, lazy_loader) — ``pip install seglearn[runtime]`` is numpy, numba,
scipy and Pillow. ``tests/postprocess/test_flood.py`` checks both against scikit-image.

**watershed(elevation, markers, mask)**: priority flooding (Beucher & Meyer 1993; the ordering of
Soille & Ansoult 1990): a pixel's priority is ``(max(its elevation, the priority of the pixel that
reached it), age)``, ``age`` the order in which it entered the queue, so on a plateau the nearest
marker wins; a marker's priority is its own elevation. 4-connected, no compactness, no
watershed line; a pixel takes its label when it is *pushed* (from the pixel that reached it first).
Ties between equal ``(value, age)`` items (the markers, all of age 0) are broken by the binary heap
itself, so the heap below is scikit-image's (``heap_general.pxi``: sift-up on push, swap-last-to-top
and sift-down on pop) and markers are pushed in raster order, as there.

**h_maxima(image, h)**: regional maxima of height >= h (Soille, *Morphological Image Analysis*,
ch. 6): ``image - R(image - h - eps) >= h`` with ``R`` the grey reconstruction by dilation under
``image`` (8-connected) and ``eps = 2 * resolution(float64) * |image|`` (scikit-image's guard
against rounding). ``R`` is computed by Vincent's hybrid scan + FIFO algorithm; it only ever
copies values of its seed and mask, so it is the exact fixed point whatever the visiting order.

**fill_enclosed(labels, inner)**: per-object hole filling (``instances.fill_holes``' definition:
object k's holes are the background pixels whose 4-connected component of ``labels != k`` does not
reach the border), one flood from the edge of k's bounding box per object instead of a
connected-component labelling of the box (the same pixels: inside the box, a component of
``labels != k`` reaches the image border only through the box's edge, since k does not reach
past its own box). **enclosed(mask)**: the pixels of ``mask`` whose 4-connected component does
not reach the border, by one flood from the border (what a labelling and a border lookup give).
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["watershed", "h_maxima", "reconstruct_dilation", "fill_enclosed", "enclosed"]

@njit(cache=True)
def _smaller(val, age, a, b):
    if val[a] != val[b]:
        return val[a] < val[b]
    return age[a] < age[b]


@njit(cache=True)
def _swap(val, age, idx, a, b):
    val[a], val[b] = val[b], val[a]
    age[a], age[b] = age[b], age[a]
    idx[a], idx[b] = idx[b], idx[a]


@njit(cache=True)
def _push(val, age, idx, n, v, a, i):
    """Insert (v, a, i) at slot n of a heap of n items (arrays big enough); returns n + 1."""
    val[n], age[n], idx[n] = v, a, i
    child = n
    while child > 0:
        parent = (child + 1) // 2 - 1
        if _smaller(val, age, child, parent):
            _swap(val, age, idx, parent, child)
            child = parent
        else:
            break
    return n + 1


@njit(cache=True)
def _pop(val, age, idx, n):
    """Remove the smallest of n items; returns (n - 1, its value, its index)."""
    v, i = val[0], idx[0]
    n -= 1
    if n == 0:
        return n, v, i
    _swap(val, age, idx, 0, n)
    k = 0
    while True:
        small = k
        left, right = 2 * k + 1, 2 * k + 2
        if left < n:
            if _smaller(val, age, left, k):
                small = left
            if right < n and _smaller(val, age, right, small):
                small = right
        else:
            break
        if small == k:
            break
        _swap(val, age, idx, k, small)
        k = small
    return n, v, i


@njit(cache=True)
def _watershed_raveled(image, markers_at, offsets, mask, out):  # pragma: no cover - numba
    # every pixel enters the heap once (the markers, then each pixel when it is labelled)
    cap = max(markers_at.shape[0] + int(mask.sum()), 1)
    val = np.empty(cap, np.float64)
    age = np.empty(cap, np.int64)
    idx = np.empty(cap, np.int64)
    n = 0
    for p in markers_at:
        n = _push(val, age, idx, n, image[p], 0, p)
    t = 1
    while n > 0:
        n, v, p = _pop(val, age, idx, n)
        for o in offsets:
            q = p + o
            if not mask[q] or out[q] != 0:
                continue
            t += 1
            out[q] = out[p]  # labelled when pushed: no later path can be lower
            # the cost of reaching q is at least that of the pixel it is reached from
            n = _push(val, age, idx, n, max(image[q], v), t, q)


def watershed(elevation: np.ndarray, markers: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Labels of ``markers`` (int, 0 = none) flooded over ``elevation`` within ``mask`` (2D, bool).

    ``skimage.segmentation.watershed(elevation, markers, mask=mask)`` with its defaults
    (connectivity 1); returns an array of ``markers``' dtype, 0 outside the mask and where no
    marker reaches.
    """
    image = np.asarray(elevation, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    markers = np.asarray(markers)
    if image.ndim != 2 or mask.shape != image.shape or markers.shape != image.shape:
        raise ValueError(f"watershed needs 2D elevation, markers and mask of one shape, got "
                         f"{image.shape}, {markers.shape}, {mask.shape}")
    out = np.pad(markers * mask, 1)  # a border outside the mask: no neighbour runs off the image
    m = np.pad(mask, 1).astype(np.int8).ravel()
    w = out.shape[1]
    offsets = np.array([-w, -1, 1, w], np.int64)  # scikit-image's neighbour order (by distance, raveled)
    flat = np.ascontiguousarray(out).ravel()
    _watershed_raveled(np.pad(image, 1).ravel(), np.flatnonzero(flat).astype(np.int64), offsets, m, flat)
    return flat.reshape(out.shape)[1:-1, 1:-1].copy()


@njit(cache=True)
def _room(fifo, head, tail):
    """Room for one more item at ``tail``: drop the consumed ``fifo[:head]``, or double the array."""
    if tail < fifo.shape[0]:
        return fifo, head, tail
    n = tail - head
    out = fifo if n < fifo.shape[0] // 2 else np.empty(2 * fifo.shape[0], np.int64)
    out[:n] = fifo[head:tail].copy()
    return out, 0, n


@njit(cache=True)
def _reconstruct(rec, mask):  # pragma: no cover - numba
    # Vincent's hybrid algorithm (IEEE TIP 2(2), 1993): a raster scan and an anti-raster scan,
    # each taking the max over the half-neighbourhood already scanned (clipped by the mask), then
    # a FIFO propagation from the pixels the second scan could still raise a neighbour from.
    h, w = rec.shape
    for y in range(h):
        for x in range(w):
            m = rec[y, x]
            for dy, dx in ((-1, -1), (-1, 0), (-1, 1), (0, -1)):
                yy, xx = y + dy, x + dx
                if 0 <= yy and 0 <= xx < w and rec[yy, xx] > m:
                    m = rec[yy, xx]
            rec[y, x] = min(m, mask[y, x])
    fifo = np.empty(max(h * w, 16), np.int64)
    head, tail = 0, 0
    for y in range(h - 1, -1, -1):
        for x in range(w - 1, -1, -1):
            m = rec[y, x]
            for dy, dx in ((1, 1), (1, 0), (1, -1), (0, 1)):
                yy, xx = y + dy, x + dx
                if yy < h and 0 <= xx < w and rec[yy, xx] > m:
                    m = rec[yy, xx]
            rec[y, x] = min(m, mask[y, x])
            for dy, dx in ((1, 1), (1, 0), (1, -1), (0, 1)):
                yy, xx = y + dy, x + dx
                if yy < h and 0 <= xx < w and rec[yy, xx] < rec[y, x] and rec[yy, xx] < mask[yy, xx]:
                    fifo[tail] = y * w + x  # each pixel at most once here: h * w slots hold them
                    tail += 1
                    break
    while head < tail:
        p = fifo[head]
        head += 1
        y, x = p // w, p % w
        for dy in range(-1, 2):
            for dx in range(-1, 2):
                yy, xx = y + dy, x + dx
                if (dy == 0 and dx == 0) or yy < 0 or yy >= h or xx < 0 or xx >= w:
                    continue
                if rec[yy, xx] < rec[y, x] and rec[yy, xx] != mask[yy, xx]:
                    rec[yy, xx] = min(rec[y, x], mask[yy, xx])
                    fifo, head, tail = _room(fifo, head, tail)
                    fifo[tail] = yy * w + xx
                    tail += 1
    return rec


def reconstruct_dilation(seed: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Grey reconstruction by dilation of ``seed <= mask`` under ``mask`` (8-connected), float64:
    ``R(p) = max over paths q -> p of min(seed(q), min of mask on the path)``."""
    seed = np.asarray(seed, dtype=np.float64)
    mask = np.asarray(mask, dtype=np.float64)
    if seed.ndim != 2 or seed.shape != mask.shape:
        raise ValueError(f"reconstruction needs 2D seed and mask of one shape, got {seed.shape}, {mask.shape}")
    if np.any(seed > mask):
        raise ValueError("reconstruction by dilation needs seed <= mask")
    return _reconstruct(np.ascontiguousarray(seed).copy(), np.ascontiguousarray(mask))


def h_maxima(image: np.ndarray, h: float) -> np.ndarray:
    """uint8 map of the maxima of height >= ``h`` of a 2D float64 image (``skimage.morphology.h_maxima``)."""
    image = np.asarray(image, dtype=np.float64)  # (the post-processing passes float64 distances)
    if h > np.ptp(image):
        return np.zeros(image.shape, np.uint8)
    if h == 0:
        raise ValueError("h_maxima needs h > 0")
    resolution = 2 * np.finfo(image.dtype).resolution * np.abs(image)
    rec = reconstruct_dilation(image - h - resolution, image)
    return ((image - rec) >= h).astype(np.uint8)


@njit(cache=True)
def _flood_box(free, seen, stamp, a, b, c, d, sy, sx):  # pragma: no cover - numba
    """``seen[y, x] = stamp`` for every ``free`` pixel of the box rows a..b, columns c..d that is
    4-connected inside the box to the box's edge through ``free`` pixels (a flood seeded on the
    edge). ``sy``/``sx``: the stack (rows, columns), room for the box's pixels (each enters once)."""
    n = 0
    for y in range(a, b + 1):
        for x in range(c, d + 1):
            if (y == a or y == b or x == c or x == d) and free[y, x] and seen[y, x] != stamp:
                seen[y, x] = stamp
                sy[n], sx[n] = y, x
                n += 1
    while n > 0:
        n -= 1
        y, x = sy[n], sx[n]
        for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
            yy, xx = y + dy, x + dx
            if a <= yy <= b and c <= xx <= d and free[yy, xx] and seen[yy, xx] != stamp:
                seen[yy, xx] = stamp
                sy[n], sx[n] = yy, xx
                n += 1


@njit(cache=True)
def _fill_enclosed(out, inner):  # pragma: no cover - numba
    h, w = out.shape
    top = 0
    for y in range(h):
        for x in range(w):
            if out[y, x] > top:
                top = out[y, x]
    y0 = np.full(top + 1, h, np.int64)
    y1 = np.full(top + 1, -1, np.int64)
    x0 = np.full(top + 1, w, np.int64)
    x1 = np.full(top + 1, -1, np.int64)
    for y in range(h):
        for x in range(w):
            k = out[y, x]
            if k > 0:
                y0[k] = min(y0[k], y)
                y1[k] = max(y1[k], y)
                x0[k] = min(x0[k], x)
                x1[k] = max(x1[k], x)
    free = np.zeros((h, w), np.bool_)  # inside the current box: pixels other than k
    seen = np.zeros((h, w), np.int64)  # == k: reached from k's box edge through pixels != k
    sy = np.empty(h * w, np.int64)
    sx = np.empty(h * w, np.int64)
    for k in range(1, top + 1):
        a, b, c, d = y0[k], y1[k], x0[k], x1[k]
        if b < 0:
            continue
        holds = False  # only a box holding enclosed background can have holes
        for y in range(a, b + 1):
            for x in range(c, d + 1):
                if inner[y, x]:
                    holds = True
                    break
            if holds:
                break
        if not holds:
            continue
        for y in range(a, b + 1):
            for x in range(c, d + 1):
                free[y, x] = out[y, x] != k
        _flood_box(free, seen, k, a, b, c, d, sy, sx)
        for y in range(a, b + 1):
            for x in range(c, d + 1):
                if out[y, x] == 0 and seen[y, x] != k:
                    out[y, x] = k
    return out


def fill_enclosed(labels: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """In place on ``labels`` (2D, non-negative ints) and returned: for k = 1, 2, ... in order,
    the background pixels of object k's bounding box that are not 4-connected to the box's edge
    through pixels other than k take label k (so a pixel inside nested objects takes the smallest
    label, and a filled pixel is no longer background for later objects). Objects whose box holds
    no ``inner`` pixel (bool, the background enclosed by anything) are skipped."""
    if labels.ndim != 2 or inner.shape != labels.shape:
        raise ValueError(f"fill_enclosed needs 2D labels and inner of one shape, got "
                         f"{labels.shape}, {inner.shape}")
    return _fill_enclosed(labels, np.ascontiguousarray(inner, dtype=np.bool_))


@njit(cache=True)
def _enclosed(mask):  # pragma: no cover - numba
    h, w = mask.shape
    seen = np.zeros((h, w), np.int64)
    _flood_box(mask, seen, 1, 0, h - 1, 0, w - 1, np.empty(h * w, np.int64), np.empty(h * w, np.int64))
    return mask & (seen != 1)


def enclosed(mask: np.ndarray) -> np.ndarray:
    """bool (H, W): the pixels of ``mask`` (2D bool) whose 4-connected component within ``mask``
    does not reach the array's border."""
    mask = np.ascontiguousarray(mask, dtype=np.bool_)
    if mask.ndim != 2:
        raise ValueError(f"enclosed needs a 2D mask, got shape {mask.shape}")
    if mask.size == 0:
        return mask.copy()
    return _enclosed(mask)
