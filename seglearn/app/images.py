"""The one reader of a workspace item's pixels: an image file, or a tile of a whole-slide image.

Every command that needs an item's image (training samples, scoring, the picture sheet,
pre-annotations, tuning, export calibration) calls :func:`item_image`, so a tile item
(``init --slides``: ``Item.tile`` set, ``image_path`` the slide) is read as its region of the
slide (``seglearn.data.slides.read_tile``) and never as the whole slide. Both kinds are first
checked to be the file imported (``Workspace.image_file``: size and mtime, the SHA-256 when
they changed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from seglearn.data import read_image
from seglearn.data.slides import read_tile


def item_image(ws, key) -> np.ndarray:
    """RGB uint8 (H, W, 3) of item ``key`` (id, name or Item) of workspace ``ws``."""
    it = ws.item(key)
    path = ws.image_file(it)
    if it.tile is None:
        return read_image(path)
    return read_tile(path, it.tile, (it.height, it.width))


def slide_columns(it) -> dict:
    """The slide address of item ``it`` as the suggestion CSV gives it: slide (file name), x, y
    (level-0 px of the tile's top-left corner) and level; empty for an ordinary image."""
    if it.tile is None:
        return {"slide": "", "x": "", "y": "", "level": ""}
    return {"slide": Path(it.image_path).name, "x": it.tile.x, "y": it.tile.y,
            "level": it.tile.level}
