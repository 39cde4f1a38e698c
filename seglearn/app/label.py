"""`seglearn label`: bring annotations into the workspace, all in one transaction.

Every mask is read and validated (readable, right size, known item, the item's image file still
the one imported: ``Workspace.image_file``) before anything is written; then all of them are
committed together, or none is.
"""

from __future__ import annotations

from pathlib import Path

from seglearn.data import DataError, display_path, read_mask
from seglearn.data.importers import (IMAGE_SUFFIXES, list_images, name_pattern,
                                     no_pair_error, skipped_message, split_suffix, warn_skipped)

MASK_SUFFIXES = ("_anno", "_mask", "_label", "_labels", "_gt")
# The mask file types: the ones `init` reads (one list, seglearn.data.importers.IMAGE_SUFFIXES).
MASK_EXTS = IMAGE_SUFFIXES


def _item_name_for(mask_path: Path) -> str:
    stem = split_suffix(mask_path)[0]
    for suf in MASK_SUFFIXES:
        if stem.endswith(suf):
            return stem[: -len(suf)]
    return stem


def _entries_from_dir(ws, masks_dir: Path, round_id: int | None, image_pattern: str | None = None,
                      mask_pattern: str | None = None):
    from seglearn.store import LabelEntry

    masks_dir = Path(masks_dir)
    patterns = (name_pattern(image_pattern, "--image-pattern"),
                name_pattern(mask_pattern, "--mask-pattern"))
    files, skipped = list_images(masks_dir, "mask")
    if not files:
        raise DataError(f"mask folder {display_path(masks_dir)} contains no mask images "
                        f"(looked for {', '.join(MASK_EXTS)})"
                        + (f"; {skipped_message(skipped)}" if skipped else ""))
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
    for f, it, looked in found:
        if it is None:
            raise ValueError(f"mask {f} matches no item of workspace {ws.root} "
                             f"(looked for an item named {looked!r}"
                             + (f", or a key read with {patterns[1].option} {patterns[1].text!r}"
                                if patterns[1] else "") + ")")
        if it.id in seen:
            raise ValueError(f"masks {seen[it.id]} and {f} are both for item {it.name!r}")
        if it.split == "test":
            raise ValueError(f"mask {f} is for test item {it.name!r}; test masks are not training "
                             "labels")
        seen[it.id] = f
        mask = read_mask(f, shape=(it.height, it.width))
        entries.append(LabelEntry(it.id, mask, "expert", round_id))
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
                    image_pattern: str | None = None, mask_pattern: str | None = None) -> int:
    """Import masks (a folder, one item, or the oracle for the last suggestions); returns the count.

    A folder's mask pairs with an item by the key ``mask_pattern`` reads from its name, matched
    with the key ``image_pattern`` reads from the item's image file name
    (seglearn.data.importers.NamePattern; default: the patterns given to ``init``), else by the
    item's name (``<item>[_anno|_mask|_label|_labels|_gt].*``, how the suggestions name it). A
    folder none of whose files pairs is :func:`~seglearn.data.importers.no_pair_error`."""
    from seglearn.store import LabelEntry

    given = sum(x is not None and x is not False for x in (masks_dir, item or mask, oracle or None))
    if given != 1:
        raise ValueError("give exactly one of --masks DIR, --item ID --mask FILE, or --oracle")
    round_id = ws.current_round() or None
    if masks_dir is not None:
        entries = _entries_from_dir(ws, masks_dir, round_id,
                                    *_stored_patterns(ws, image_pattern, mask_pattern))
    elif oracle:
        entries = oracle_entries(ws)
    else:
        if item is None or mask is None:
            raise ValueError("--item and --mask go together")
        key = int(item) if str(item).isdigit() else item
        it = ws.item(key)
        entries = [LabelEntry(it.id, read_mask(Path(mask), shape=(it.height, it.width)), "expert",
                              round_id)]
    for e in entries:  # a label pairs with the image as imported: refuse if that file was edited
        ws.image_file(e.item_id)
    with ws.writer():
        ws.add_labels(entries)
    return len(entries)


def oracle_entries(ws, item_ids: list[int] | None = None):
    """Labels from the hidden masks for ``item_ids`` (default: the newest round's suggestions)."""
    from seglearn.store import LabelEntry

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
