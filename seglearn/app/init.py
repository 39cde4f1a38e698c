"""`seglearn init`: create a workspace from GlaS, folders of images (and masks), or synthetic data.

Everything is validated (every image readable, every mask readable and the size of its image)
before the workspace appears; it is assembled in a staging folder beside the target and renamed
into place at the end, so a failure leaves no half-made workspace and an existing one is only
replaced (``force``) once the new one is complete.

Splits: GlaS train images and synthetic pool images become the annotation *pool*; their masks are
kept as the hidden oracle (``oracle/``), never visible to training, except for a random start set of
``initial_labeled`` of them (Yang et al. 2017 start from a small random set). Folder imports: with
``initial_labeled`` the masks are an oracle too; without it, images that have masks are labeled
training data and the others form the pool.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import numpy as np
from rich.progress import Progress

from seglearn.app.label import oracle_entries
from seglearn.config import Config
from seglearn.data import (DataError, display_path, make_synthetic, read_image_info, read_mask,
                           scan_folders, scan_glas, write_mask)
from seglearn.data.importers import scan_test_folders
from seglearn.data.slides import list_slides, slide_key, slide_tiles, tile_name
from seglearn.store import ItemRecord, SlideTile, Workspace
from seglearn.store.digest import file_digest
from seglearn.store.workspace import workspace_target




def init_workspace(path: str | Path, cfg: Config, glas: Path | None = None,
                   images: Path | None = None, masks: Path | None = None,
                   synthetic: int | None = None, initial_labeled: float | None = None,
                   seed: int = 0, force: bool = False, progress: bool = True,
                   image_pattern: str | None = None, mask_pattern: str | None = None,
                   test_images: Path | None = None, test_masks: Path | None = None,
                   slides: Path | None = None, tile: int = 512, level: int = 0,
                   tissue_threshold: float = 0.25):
    """Create the workspace at ``path`` from one source (``glas``, ``images`` [+ ``masks``] or
    ``synthetic``). ``image_pattern`` / ``mask_pattern`` pair images and masks by a key read from
    their names (seglearn.data.importers.NamePattern), for ``images`` and ``test_images`` alike;
    ``test_images`` [+ ``test_masks``] is a held-out labeled folder imported as split "test" (what
    ``seglearn evaluate`` scores), refused when it shares a name or a file with the other images.

    ``slides``: a folder of whole-slide images; every ``tile`` px tile of pyramid ``level`` with
    a tissue fraction ``>= tissue_threshold`` becomes an unlabeled pool item read from its slide
    on demand (nothing written per tile; seglearn.data.slides)."""
    # Absolute from here on: the staging folder's paths are stored relative to the workspace, and a
    # relative one (``seglearn demo`` writes ./seglearn-demo) would be joined to the root twice.
    path = Path(path).expanduser().absolute()
    n_sources = sum(x is not None for x in (glas, images, synthetic, slides))
    if n_sources != 1:
        raise ValueError("give exactly one data source: --glas DIR, --images DIR [--masks DIR], "
                         "--slides DIR or --synthetic N")
    if slides is not None:
        _check_slide_options(tile, level, tissue_threshold, initial_labeled)
    if masks is not None and images is None:
        raise ValueError("--masks goes with --images")
    if (image_pattern is not None or mask_pattern is not None) and images is None:
        raise ValueError("--image-pattern and --mask-pattern go with --images (GlaS and synthetic "
                         "data have their own names)")
    if test_images is not None and images is None:
        raise ValueError("--test-images goes with --images (--glas and --synthetic make their own "
                         "test split)")
    if test_masks is not None and test_images is None:
        raise ValueError("--test-masks goes with --test-images")
    if synthetic is not None and synthetic < 2:
        raise ValueError("--synthetic needs at least 2 images")
    if initial_labeled is not None and not 0 < initial_labeled <= 1:
        raise ValueError(f"--initial-labeled must be in (0, 1] (1 = everything labeled), "
                         f"not {initial_labeled}")
    # Checked first, and held to the end: --force replaces only a seglearn workspace that no
    # process is using (its locks are held until the new one is in place), never the sources.
    naming = {"image_pattern": image_pattern, "mask_pattern": mask_pattern,
              "test_images": test_images, "test_masks": test_masks}
    tiling = ({"tile": tile, "level": level, "tissue_threshold": tissue_threshold}
              if slides is not None else None)
    with workspace_target(path, force, protect=(glas, images, masks, test_images,
                                                test_masks, slides)) as install:
        _build_into(path, install, cfg, glas, images, masks, synthetic, initial_labeled, seed,
                    progress, naming, slides, tiling)
    return Workspace.open(path)


def _build_into(path: Path, install, cfg: Config, glas, images, masks, synthetic, initial_labeled,
                seed: int, progress: bool, naming: dict, slides: Path | None = None,
                tiling: dict | None = None) -> None:
    """Scan the sources, build the workspace in a staging folder, ``install`` it at ``path``."""
    # Scan (and fail on bad layouts) before anything is written.
    if glas is not None:
        sources = scan_glas(Path(glas))
    elif images is not None:
        # With --initial-labeled the masks are the oracle of a simulated pool, else real labels.
        sources = scan_folders(Path(images), Path(masks) if masks is not None else None,
                               mask_split="pool" if initial_labeled is not None else "train",
                               image_pattern=naming["image_pattern"],
                               mask_pattern=naming["mask_pattern"])
        if naming["test_images"] is not None:
            sources = sources + _test_sources(sources, naming)
    elif slides is not None:
        tiles = _slide_records(Path(slides), **tiling, progress=progress)
    staging = path.parent / f".{path.name}.staging-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    try:
        ws = Workspace.create(staging)
        if synthetic is not None:
            sc = cfg.synthetic
            sources = make_synthetic(synthetic, staging / "data", size=(sc.size, sc.size),
                                     seed=sc.seed, test_fraction=sc.test_fraction, kind=sc.kind)
        oracle_mode = glas is not None or synthetic is not None or initial_labeled is not None
        frac = initial_labeled if initial_labeled is not None else cfg.active.initial_labeled
        if slides is not None:
            (records, summary), conversions = tiles, {}
            ws.set_meta("slides", summary)  # {slide: tiles kept of the grid ...}: init shows it
        else:
            records, conversions = _records(staging, sources, oracle_mode, cfg, progress)
        if naming["test_images"] is not None:  # GlaS's published split is taken as it is
            _check_held_out(records)
        ws.add_items(records)
        if oracle_mode:
            _label_start_set(ws, frac, seed)
        ws.set_meta("config", cfg.to_dict())
        ws.set_meta("conversions", conversions)  # {item name: [notes]}: `seglearn init` shows them
        ws.set_meta("source", {"glas": str(glas) if glas else None,
                               "images": str(images) if images else None,
                               "masks": str(masks) if masks else None, "synthetic": synthetic,
                               "slides": str(slides) if slides else None, "tiling": tiling,
                               **{k: str(v) if v is not None else None for k, v in naming.items()},
                               "initial_labeled": frac if oracle_mode else None, "seed": seed})
        ws.close()
        install(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _check_slide_options(tile, level, threshold, initial_labeled) -> None:
    if isinstance(tile, bool) or not isinstance(tile, int) or tile < 16:
        raise ValueError(f"--tile must be a whole number of pixels >= 16, not {tile!r}")
    if isinstance(level, bool) or not isinstance(level, int) or level < 0:
        raise ValueError(f"--level must be a pyramid level >= 0, not {level!r}")
    if not 0 <= threshold <= 1:
        raise ValueError(f"--tissue-threshold is a fraction of a tile, in [0, 1], not {threshold}")
    if initial_labeled is not None:
        raise ValueError("--initial-labeled needs masks to label from; slides come without: "
                         "label the suggested tiles with `seglearn label`")


def _slide_records(folder: Path, tile: int, level: int, tissue_threshold: float,
                   progress: bool):
    """(ItemRecords of the tissue tiles of every slide in ``folder``, {slide: summary}). Each
    slide file is hashed once; its tiles share the hash and (size, mtime) stamp."""
    paths = list_slides(folder)
    keys: dict[str, Path] = {}
    for p in paths:
        if slide_key(p) in keys:  # the tile names and slide-wide GeoJSON go by the key
            raise DataError(f"slides {display_path(keys[slide_key(p)])} and {display_path(p)} "
                            f"have the same name {slide_key(p)!r}; rename one")
        keys[slide_key(p)] = p
    records, summary = [], {}
    with Progress(transient=True, disable=not progress) as prog:
        task = prog.add_task(f"finding tissue in {len(paths)} slide(s)", total=len(paths))
        for p in paths:
            if display_path(p) != str(p):
                raise DataError(f"slide {display_path(p)}: its file name is not valid UTF-8; "
                                "rename it first")
            found = slide_tiles(p, tile, level, tissue_threshold)
            stamp = file_digest(p)
            for t in found.kept:
                records.append(ItemRecord(
                    name=tile_name(p, t), image_path=str(p.resolve()), split="pool", height=tile,
                    width=tile, sha256=stamp.sha256, image_size=stamp.size,
                    image_mtime_ns=stamp.mtime_ns,
                    tile=SlideTile(t.x, t.y, t.level, t.downsample, t.tissue)))
            summary[p.name] = {"kept": len(found.kept), "tiles": found.total, "level": level,
                               "tile": tile, "dimensions": list(found.dimensions),
                               "margin": list(found.margin)}
            prog.advance(task)
    if not records:
        raise DataError(f"no tile of the slides in {display_path(folder)} has a tissue fraction "
                        f">= {tissue_threshold} ({sum(s['tiles'] for s in summary.values())} "
                        "tiles looked at); lower --tissue-threshold")
    return records, summary


def _test_sources(sources, naming: dict):
    """The ``--test-images`` folder as split "test" (importers.scan_test_folders), refused when
    an item name or an image file is also in the other images: a test image must be held out."""
    tests = scan_test_folders(Path(naming["test_images"]),
                              Path(naming["test_masks"]) if naming["test_masks"] else None,
                              naming["image_pattern"], naming["mask_pattern"], what="test images")
    by_name = {s.name: s for s in sources}
    by_file = {Path(s.image_path).resolve(): s for s in sources}
    for t in tests:
        other = by_name.get(t.name) or by_file.get(Path(t.image_path).resolve())
        if other is not None:
            raise DataError(f"test image {display_path(t.image_path)} has the name or the file of "
                            f"image {display_path(other.image_path)}; item names are unique and a "
                            "test image must be held out (rename it or leave it out of one folder)")
    return tests


def _check_held_out(records) -> None:
    """A ``--test-images`` image whose content (SHA-256) is also a training/pool image would be
    scored on what the model may have trained on: refused, naming both."""
    seen = {r.sha256: r for r in records if r.split != "test"}
    for r in records:
        if r.split == "test" and r.sha256 in seen:
            raise DataError(f"test image {r.image_path} is a copy of image "
                            f"{seen[r.sha256].image_path} (same content); a test image must be "
                            "held out of the training and pool images")


def _records(root: Path, sources, oracle_mode: bool, cfg: Config, progress: bool):
    """ItemRecords of ``sources`` (every image and mask read and checked) and the conversions made
    while reading them ({item name: [note, ...]}, e.g. "16-bit image scaled to 8-bit ...")."""
    if not sources:
        raise ValueError("no images found")
    (root / "oracle").mkdir(exist_ok=True)
    records, conversions = [], {}
    with Progress(transient=True, disable=not progress) as prog:
        task = prog.add_task(f"checking {len(sources)} images", total=len(sources))
        for s in sources:
            where = display_path(s.image_path)
            if where != os.fspath(s.image_path):  # SQLite text cannot hold undecodable bytes
                raise DataError(f"image {where}: its file name (or a folder above it) is not valid "
                                "UTF-8; seglearn stores paths as text, so rename it first")
            img, notes = read_image_info(s.image_path, max_pixels=cfg.data.max_pixels)
            if notes:
                conversions[s.name] = notes
            h, w = img.shape[:2]
            mask_rel, split, labeled = None, s.split, False
            if s.mask_path is not None:
                inst = read_mask(s.mask_path, shape=(h, w))
                dest = root / "oracle" / f"{s.name}.png"
                write_mask(dest, inst)
                mask_rel = str(dest)
                if not oracle_mode and split != "test":
                    split, labeled = "train", True
            # hash + (size, mtime) stamp: a later read re-hashes only if the stamp changed
            stamp = file_digest(s.image_path)
            records.append(ItemRecord(name=s.name, image_path=str(Path(s.image_path).resolve()),
                                      split=split, height=h, width=w, sha256=stamp.sha256,
                                      mask_path=mask_rel, labeled=labeled,
                                      image_size=stamp.size, image_mtime_ns=stamp.mtime_ns))
            prog.advance(task)
    return records, conversions


def _label_start_set(ws, fraction: float, seed: int) -> None:
    """Label a random ``fraction`` of the pool (at least one image) from the hidden masks."""
    pool = [it for it in ws.items(split="pool") if it.oracle_mask_path]
    if not pool:
        return
    n = max(1, math.ceil(fraction * len(pool)))
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(pool), size=min(n, len(pool)), replace=False)
    entries = oracle_entries(ws, [pool[i].id for i in sorted(chosen)])
    entries = [type(e)(e.item_id, e.mask, "initial", None) for e in entries]
    ws.add_labels(entries)
