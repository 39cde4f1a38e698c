"""`seglearn label`: bring annotations into the workspace, all in one transaction.

Every mask is read and validated (readable, right size, known item, the item's image file still
the one imported: ``Workspace.image_file``) before anything is written; then all of them are
committed together, or none is.

Masks come as label images (``--masks DIR``, ``--item ID --mask FILE``) or as QuPath GeoJSON
exports (``--geojson DIR``, ``--class NAME``; rasterised by ``seglearn.data.geojson``). A file
pairs with the item whose name is its stem, less one of ``MASK_SUFFIXES`` or the pre-annotation
suffix ``_pre``.

Label source: a mask that started as a pre-annotation of its item (``select --pre-annotate``) is
stored with source "pre-annotation", the pre-annotation's id and whether it was changed. It is
recognised by (any of) its file's SHA-256 equal to a pre-annotation file's as written, its file
name equal to a pre-annotation file's name, or, for GeoJSON, a feature id of the pre-annotation
(QuPath keeps a feature's id through import and export). "Changed" compares the instance
partitions (label numbers may differ). Anything else is source "expert".

Whole-slide tiles (``init --slides``): GeoJSON for a tile is in slide level-0 coordinates (as its
pre-annotation is written), and a file named after a slide (``<slide stem>.geojson``, QuPath's
export of the annotations of the whole slide) labels every tile of that slide that one of its
objects reaches, with the parts of the objects over that tile. A tile no object reaches is left
unlabeled: an empty tile cannot be told from one not annotated yet.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from seglearn.data import DataError, display_path, read_mask
from seglearn.data.errors import files_ending
from seglearn.data.geojson import GEOJSON_EXTS, class_name, feature_ids, rasterise, read_features
from seglearn.data.importers import (IMAGE_SUFFIXES, list_images, name_pattern, no_pair_error,
                                     skipped_message, split_suffix, warn_skipped)
from seglearn.data.io import DEFAULT_MAX_PIXELS
from seglearn.data.slides import slide_key
from seglearn.store import LabelEntry
from seglearn.store.digest import file_sha256

MASK_SUFFIXES = ("_anno", "_mask", "_label", "_labels", "_gt")
PRE_SUFFIX = "_pre"  # pre-annotation files: <item>_pre.png, <item>_pre.geojson
# The mask file types: the ones `init` reads (one list, seglearn.data.importers.IMAGE_SUFFIXES).
MASK_EXTS = IMAGE_SUFFIXES


def _item_name_for(mask_path: Path) -> str:
    stem = split_suffix(mask_path)[0]
    low = mask_path.name.lower()
    if stem == mask_path.name and low.endswith(GEOJSON_EXTS):
        stem = mask_path.name[: mask_path.name.rindex(".")]
    for suf in MASK_SUFFIXES:
        if stem.endswith(suf):
            stem = stem[: -len(suf)]
            break
    return stem[: -len(PRE_SUFFIX)] if stem.endswith(PRE_SUFFIX) else stem


def pre_annotation_key(item_name: str, round_id: int) -> str:
    """The key of the feature ids of item ``item_name``'s pre-annotation of round ``round_id``."""
    return f"{item_name}/round_{round_id:02d}"


def same_instances(a: np.ndarray, b: np.ndarray) -> bool:
    """True when ``a`` and ``b`` split the pixels into the same objects (numbers may differ)."""
    if a.shape != b.shape or not np.array_equal(a == 0, b == 0):
        return False
    pairs = np.unique(a.astype(np.int64) << 17 | b.astype(np.int64))  # labels are < 2**16
    return len(pairs) == len(np.unique(a)) == len(np.unique(b))


def label_origin(ws, it, path: Path, mask: np.ndarray, ids: set[str] = frozenset()):
    """(source, pre-annotation id, changed) of ``mask`` read from ``path`` for item ``it``: a
    pre-annotation of the item when the file's hash or name, or one of its GeoJSON feature
    ``ids``, is that pre-annotation's (newest first); else ("expert", None, None)."""
    pres = ws.pre_annotations(it.id)
    if not pres:
        return "expert", None, None
    sha = file_sha256(path)
    for p in reversed(pres):
        names = {Path(q).name for q in (p.mask_path, p.geojson_path) if q}
        hashes = {p.mask_sha256, p.geojson_sha256} - {None}
        pre_ids = set(feature_ids(pre_annotation_key(it.name, p.round_id), p.instances))
        if sha in hashes or path.name in names or ids & pre_ids:
            return "pre-annotation", p.id, not _equals_pre(ws, p, mask, sha)
    return "expert", None, None


def _equals_pre(ws, p, mask: np.ndarray, sha: str) -> bool:
    if sha == p.mask_sha256:
        return True
    pre = ws.resolve(p.mask_path)
    try:  # the pre-annotation PNG as written (its hash proves it is not the expert's edit)
        if file_sha256(pre) == p.mask_sha256:
            return same_instances(mask, read_mask(pre, shape=mask.shape))
    except (OSError, DataError):
        pass
    return sha == p.geojson_sha256  # the file is gone: only an identical GeoJSON is known unchanged


def _entry(ws, it, path: Path, mask: np.ndarray, round_id, ids: set[str] = frozenset()):
    source, pre, changed = label_origin(ws, it, path, mask, ids)
    return LabelEntry(it.id, mask, source, round_id, pre, changed)


def _read_geojson(path: Path, it, class_filter: str | None, feats: list[dict] | None = None,
                  warn_clipped: bool = True):
    """(mask, feature ids) of a GeoJSON file (or its ``feats``) for item ``it``; a slide tile's
    features are in slide level-0 coordinates (as its pre-annotation was written)."""
    feats = read_features(path) if feats is None else feats
    where = ({} if it.tile is None else
             {"offset": (float(it.tile.x), float(it.tile.y)), "scale": it.tile.downsample})
    mask = rasterise(feats, (it.height, it.width), f"GeoJSON file {display_path(path)}",
                     class_filter, warn_clipped=warn_clipped, **where)
    return mask, {str(f["id"]) for f in feats if f.get("id") is not None}


def _slide_groups(items) -> dict[str, list]:
    """Slide key (``data.slides.slide_key``) -> the tile items of that slide."""
    groups: dict[str, list] = {}
    for it in items:
        if it.tile is not None:
            groups.setdefault(slide_key(it.image_path), []).append(it)
    return groups


def _feature_bounds(feats: list[dict]) -> list[tuple | None]:
    """Each feature's (minx, miny, maxx, maxy); None when its geometry cannot be read here (the
    rasteriser then reports it)."""
    # lazy: shapely, only for the bounds of slide-level GeoJSON features (an optional dependency)
    from shapely.geometry import shape

    out = []
    for f in feats:
        try:
            out.append(shape(f["geometry"]).bounds)
        except Exception:  # noqa: BLE001 - malformed: left to rasterise's error message
            out.append(None)
    return out


def _slide_file_masks(path: Path, tiles: list, class_filter: str | None):
    """(tile item, mask, feature ids) for every tile of a slide that the slide-wide GeoJSON file
    ``path`` (level-0 coordinates, e.g. QuPath's export of the whole slide) draws an object in:
    each tile gets the parts of the features over it, clipped to it."""
    feats = read_features(path)
    bounds = _feature_bounds(feats)
    out = []
    for it in tiles:
        t = it.tile
        x1, y1 = t.x + it.width * t.downsample, t.y + it.height * t.downsample
        near = [f for f, b in zip(feats, bounds)
                if b is None or (b[0] < x1 and b[2] > t.x and b[1] < y1 and b[3] > t.y)]
        if not near:
            continue
        mask, ids = _read_geojson(path, it, class_filter, near, warn_clipped=False)
        if mask.max(initial=0) > 0:
            out.append((it, mask, ids))
    if not out and class_filter is None:
        raise DataError(f"GeoJSON file {display_path(path)} is for slide "
                        f"{display_path(tiles[0].image_path)} but none of its objects lies in "
                        f"one of the slide's {len(tiles)} tiles in the workspace")
    return out


def _claim(ws, it, f: Path, seen: dict, what: str, looked: str, hint: str = ""):
    """``it``, the item file ``f`` labels, once checked: it exists, no other file of this import
    is for it, and it is not a test item. ``seen``: item id -> file, filled as files are claimed."""
    if it is None:
        raise ValueError(f"{what} {f} matches no item of workspace {ws.root} "
                         f"(looked for an item named {looked!r}{hint})")
    if it.id in seen:
        raise ValueError(f"{what}s {seen[it.id]} and {f} are both for item {it.name!r}")
    if it.split == "test":
        raise ValueError(f"{what} {f} is for test item {it.name!r}; test masks are not training "
                         "labels")
    seen[it.id] = f
    return it


def _item_for(ws, by_name: dict, f: Path, seen: dict, what: str):
    name = _item_name_for(f)
    return _claim(ws, by_name.get(name), f, seen, what, name)


def _entries_from_geojson(ws, geo_dir: Path, round_id: int | None, class_filter: str | None):
    geo_dir = Path(geo_dir)
    files = files_ending(geo_dir, GEOJSON_EXTS, "GeoJSON",
                         f"{' or '.join(GEOJSON_EXTS)} files (QuPath: File > Export objects as "
                         "GeoJSON)")
    items = ws.items()
    by_name = {it.name: it for it in items}
    slides = _slide_groups(items)
    entries, seen, kept = [], {}, 0
    for f in files:
        key = _item_name_for(f)
        if key not in by_name and key in slides:  # a slide-wide file: onto the tiles it covers
            for it, mask, ids in _slide_file_masks(f, slides[key], class_filter):
                _claim(ws, it, f, seen, "GeoJSON file", it.name)
                kept += 1
                entries.append(_entry(ws, it, f, mask, round_id, ids))
            continue
        it = _item_for(ws, by_name, f, seen, "GeoJSON file")
        mask, ids = _read_geojson(f, it, class_filter)
        kept += int(mask.max(initial=0) > 0)
        entries.append(_entry(ws, it, f, mask, round_id, ids))
    if class_filter is not None and not kept:  # a mistyped class would store empty labels
        names = sorted({str(class_name(ft)) for f in files for ft in read_features(f)})
        raise DataError(f"no feature of class {class_filter!r} in the GeoJSON files of "
                        f"{display_path(geo_dir)}; classes found: {', '.join(names) or 'none'}")
    return entries


def _entries_from_dir(ws, masks_dir: Path, round_id: int | None, image_pattern: str | None = None,
                      mask_pattern: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS):
    masks_dir = Path(masks_dir)
    patterns = (name_pattern(image_pattern, "--image-pattern"),
                name_pattern(mask_pattern, "--mask-pattern"))
    files, skipped = list_images(masks_dir, "mask")
    if not files:
        geo = any(s.path.name.lower().endswith(GEOJSON_EXTS) for s in skipped)
        raise DataError(f"mask folder {display_path(masks_dir)} contains no mask images "
                        f"(looked for {', '.join(MASK_EXTS)})"
                        + (f"; {skipped_message(skipped)}" if skipped else "")
                        + ("; for GeoJSON files (QuPath exports) use --geojson DIR" if geo else ""))
    items = ws.items()
    by_name = {it.name: it for it in items}
    if patterns[0]:  # the key of an item: read from its image's file name, as `init` read it
        by_key = {k: it for it in items if (k := patterns[0].key(Path(it.image_path))) is not None}
    else:
        by_key = by_name

    def item_for(f: Path):
        """(item or None, the name looked for): by the key (the mask pattern's, else the mask's
        stem less its tag, against the items' keys), else by the item's name, so masks named
        after the items, as the suggestions list them, pair as well."""
        name = _item_name_for(f)
        key = patterns[1].key(f) if patterns[1] else name
        return (by_key.get(key) if key is not None else None) or by_name.get(name), name

    found = [(f, *item_for(f)) for f in files]
    if items and all(it is None for _, it, _ in found):
        raise no_pair_error(f"workspace {ws.root}", Path(items[0].image_path),
                            f"mask folder {display_path(masks_dir)}", files[0], patterns)
    entries, seen = [], {}
    hint = (f", or a key read with {patterns[1].option} {patterns[1].text!r}"
            if patterns[1] else "")
    for f, it, looked in found:
        _claim(ws, it, f, seen, "mask", looked, hint)
        mask = read_mask(f, shape=(it.height, it.width), max_pixels=max_pixels)
        entries.append(_entry(ws, it, f, mask, round_id))
    # Named once every mask was read: a refused import (an error above) says only what is wrong.
    warn_skipped(skipped, f"mask folder {display_path(masks_dir)}")
    return entries


def _stored_patterns(ws, image_pattern: str | None, mask_pattern: str | None):
    """The patterns given, else the ones the workspace was created with (``init
    --image-pattern/--mask-pattern``), so a later ``label --masks`` pairs the same way."""
    src = ws.meta("source") or {}
    return (image_pattern if image_pattern is not None else src.get("image_pattern"),
            mask_pattern if mask_pattern is not None else src.get("mask_pattern"))


def label_workspace(ws, masks_dir: Path | None = None, item: str | None = None,
                    mask: Path | None = None, oracle: bool = False,
                    image_pattern: str | None = None, mask_pattern: str | None = None,
                    geojson_dir: Path | None = None, class_filter: str | None = None,
                    max_pixels: int = DEFAULT_MAX_PIXELS) -> int:
    """Import masks (a folder of label images, a folder of QuPath GeoJSON files, one item, or the
    oracle for the last suggestions); returns the count.

    A folder's mask pairs with an item by the key ``mask_pattern`` reads from its name, matched
    with the key ``image_pattern`` reads from the item's image file name
    (seglearn.data.importers.NamePattern; default: the patterns given to ``init``), else by the
    item's name (``<item>[_anno|_mask|_label|_labels|_gt].*``, how the suggestions name it). A
    folder none of whose files pairs is :func:`~seglearn.data.importers.no_pair_error`.
    ``class_filter``: only GeoJSON features of that classification name (``--class``).
    ``max_pixels``: larger mask files are refused before they are decoded (``data.max_pixels`` of
    the workspace's config, the limit its images were imported under)."""
    given = sum(x is not None and x is not False
                for x in (masks_dir, item or mask, oracle or None, geojson_dir))
    if given != 1:
        raise ValueError("give exactly one of --masks DIR, --geojson DIR, --item ID --mask FILE, "
                         "or --oracle")
    geo_mask = mask is not None and Path(mask).name.lower().endswith(GEOJSON_EXTS)
    if class_filter is not None and geojson_dir is None and not geo_mask:
        raise ValueError("--class filters GeoJSON features: it goes with --geojson DIR (or a "
                         "GeoJSON --mask)")
    round_id = ws.current_round() or None
    if masks_dir is not None:
        entries = _entries_from_dir(ws, masks_dir, round_id,
                                    *_stored_patterns(ws, image_pattern, mask_pattern), max_pixels)
    elif geojson_dir is not None:
        entries = _entries_from_geojson(ws, geojson_dir, round_id, class_filter)
    elif oracle:
        entries = oracle_entries(ws)
    else:
        if item is None or mask is None:
            raise ValueError("--item and --mask go together")
        key = int(item) if str(item).isdigit() else item
        it = ws.item(key)
        mask = Path(mask)
        if geo_mask:
            arr, ids = _read_geojson(mask, it, class_filter)
        else:
            arr = read_mask(mask, shape=(it.height, it.width), max_pixels=max_pixels)
            ids = frozenset()
        entries = [_entry(ws, it, mask, arr, round_id, ids)]
    for e in entries:  # a label pairs with the image as imported: refuse if that file was edited
        ws.image_file(e.item_id)
    with ws.writer():
        ws.add_labels(entries)
    return len(entries)


def oracle_entries(ws, item_ids: list[int] | None = None):
    """Labels from the hidden masks for ``item_ids`` (default: the newest round's suggestions)."""
    if item_ids is None:
        sugg = ws.suggestions()
        if not sugg:
            raise ValueError(f"workspace {ws.root} has no suggestions yet; run `seglearn select`")
        last = max(s.round_id for s in sugg)
        item_ids = [s.item_id for s in sugg if s.round_id == last]
    entries = []
    for iid in item_ids:
        it = ws.item(iid)
        if it.label is not None:
            continue
        if not it.oracle_mask_path:
            raise ValueError(f"item {it.name} has no hidden mask to act as the oracle")
        entries.append(LabelEntry(it.id, read_mask(ws.resolve(it.oracle_mask_path),
                                                   shape=(it.height, it.width)), "oracle",
                                  ws.current_round() or None))
    return entries
