"""Tiles with a halo, so large images run in bounded memory and agree with whole-image inference.

A tile's *core* is the part of the output it owns; it reads its core grown by ``halo`` pixels on
each side (clipped to the image). With ``halo`` at least the network's receptive-field radius,
every core pixel sees exactly the input it would see in a whole-image run, so stitched cores equal
the whole-image result. Cores, halos and therefore tile origins are multiples of the network's
``multiple`` (2^(depth-1)), so max-pool and upsample grids line up with the whole image's.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tile:
    """Core ``[y0, y1) x [x0, x1)`` read from the region ``[ry0, ry1) x [rx0, rx1)``."""

    y0: int
    y1: int
    x0: int
    x1: int
    ry0: int
    ry1: int
    rx0: int
    rx1: int


def _spans(n: int, core: int, halo: int):
    for a in range(0, n, core):
        b = min(a + core, n)
        yield a, b, max(0, a - halo), min(n, b + halo)


def plan_tiles(h: int, w: int, tile: int, halo: int, multiple: int) -> list[Tile]:
    """Tiles covering an (h, w) image (sides multiples of ``multiple``); ``tile`` = core side."""
    if h % multiple or w % multiple:
        raise ValueError(f"image sides {h}x{w} must be multiples of {multiple} before tiling")
    core = max(multiple, int(tile) // multiple * multiple)
    halo = -(-int(halo) // multiple) * multiple
    return [Tile(y0, y1, x0, x1, ry0, ry1, rx0, rx1)
            for y0, y1, ry0, ry1 in _spans(h, core, halo)
            for x0, x1, rx0, rx1 in _spans(w, core, halo)]
