"""Plain records going into and coming out of the workspace datastore.

Inputs (``ItemRecord``, ``LabelEntry``) are what importers and the CLI build; outputs (``Item``,
``Label``, ``Round``, ``ModelRow``, ``Suggestion``) are read-only snapshots of rows. Paths are strings
as stored: relative to the workspace root when the file lives inside it (so a workspace folder can
be moved), absolute otherwise; ``Workspace.resolve`` turns one into a ``Path``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

SPLITS = ("train", "pool", "test")
# "pre-annotation": the expert corrected (or accepted) a mask the model wrote (select --pre-annotate)
LABEL_SOURCES = ("expert", "oracle", "initial", "import", "pre-annotation")
MODEL_ROLES = ("suggestive", "final")


def now() -> str:
    """The timestamp stored with a row: UTC, ISO 8601, microseconds."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def stored_path(root: Path, path: str | os.PathLike) -> str:
    """How a path is stored in the workspace at ``root``: relative (POSIX) when it lies inside the
    root, so the folder can be moved; absolute otherwise; a relative ``path`` is kept as given."""
    p = Path(path)
    if not p.is_absolute():
        return p.as_posix()
    try:
        return p.relative_to(root).as_posix()
    except ValueError:
        return str(p)


@dataclass(frozen=True)
class ItemRecord:
    """One image to add to a workspace.

    split: "train" (labeled training data), "pool" (candidates for annotation; the mask of an
    unlabeled pool item is the hidden oracle, never visible to training) or "test" (keeps its mask
    for evaluation). ``labeled=True`` makes ``mask_path`` a visible label from the start (copied into
    ``labels/`` with source "import"); it must then be an instance-label image (uint8/uint16 PNG,
    0 = background), e.g. what ``seglearn.data.write_mask`` writes.

    ``image_size`` and ``image_mtime_ns``: the image file's stat when ``sha256`` was taken
    (``store.digest.file_digest`` returns all three). Optional: without them the first read of
    the image hashes it (``Workspace.image_file``).

    ``tile``: the item is that tile of the whole-slide image ``image_path`` (``sha256`` and the
    stamp are the slide file's, height x width the tile's); None for an ordinary image.
    """

    name: str
    image_path: str
    split: str
    height: int
    width: int
    sha256: str
    mask_path: str | None = None
    labeled: bool = False
    image_size: int | None = None
    image_mtime_ns: int | None = None
    tile: "SlideTile | None" = None


@dataclass(frozen=True)
class SlideTile:
    """Where a tile item lies in its slide: top-left (x, y) in level-0 px (OpenSlide's and
    QuPath's coordinates), pyramid ``level`` and its ``downsample`` (level-0 px per level px),
    and the tissue fraction it was kept with (None if not measured)."""

    x: int
    y: int
    level: int
    downsample: float
    tissue: float | None = None


@dataclass(frozen=True)
class LabelEntry:
    """A mask to store as the current label of an item (earlier labels stay in the history).

    ``pre_annotation``/``changed``: with source "pre-annotation", the id of the PreAnnotation the
    expert started from and whether the stored mask differs from it."""

    item_id: int
    mask: np.ndarray = field(repr=False)
    source: str = "expert"
    round: int | None = None
    pre_annotation: int | None = None
    changed: bool | None = None


@dataclass(frozen=True)
class Label:
    """One stored label revision; the item's current label is its newest revision."""

    id: int
    item_id: int
    revision: int
    path: str
    source: str
    round: int | None
    created: str
    sha256: str | None
    pre_annotation: int | None = None
    changed: bool | None = None

    def __post_init__(self) -> None:
        if self.changed is not None:  # stored as 0/1
            object.__setattr__(self, "changed", bool(self.changed))


@dataclass(frozen=True)
class PreAnnotation:
    """A model prediction written for the expert to correct (``select --pre-annotate``)."""

    id: int
    item_id: int
    round_id: int
    mask_path: str
    mask_sha256: str
    geojson_path: str | None
    geojson_sha256: str | None
    instances: int
    model: str
    created: str


@dataclass(frozen=True)
class Item:
    """An item with its current label (None when it has none visible)."""

    id: int
    name: str
    image_path: str
    split: str
    height: int
    width: int
    sha256: str
    oracle_mask_path: str | None
    label: Label | None
    tile: SlideTile | None = None  # set for a tile of a whole-slide image (image_path: the slide)

    @property
    def labeled(self) -> bool:
        return self.label is not None


@dataclass(frozen=True)
class Round:
    id: int
    kind: str
    config_hash: str
    started: str
    finished: str | None
    metrics: dict[str, Any] | None


@dataclass(frozen=True)
class ModelRow:
    id: int
    round_id: int
    role: str
    member: int
    path: str
    config_hash: str
    scheme: dict[str, Any]
    metrics: dict[str, Any]
    created: str


@dataclass(frozen=True)
class Suggestion:
    round_id: int
    rank: int
    item_id: int
    uncertainty: float
    coverage_gain: float
    strategy: str
