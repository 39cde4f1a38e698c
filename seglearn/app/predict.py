"""`seglearn predict`: segment image files with the integer-only runtime (torch is never imported)."""

from __future__ import annotations

import warnings
from pathlib import Path

from rich.progress import Progress

from seglearn.data.errors import DataError, display_path
from seglearn.data.geojson import write_geojson
from seglearn.data.importers import IMAGE_SUFFIXES, list_images, warn_skipped
from seglearn.data.io import DEFAULT_MAX_PIXELS, read_image, write_mask
from seglearn.runtime.model import load_model
from seglearn.store.workspace import managed_by


def expand_images(images: list[Path], allow_empty: bool = False) -> list[Path]:
    """Files as given, and the image files (sorted) inside any folder given, each file once; what
    else a folder holds is named in a warning. A folder without any image is a DataError (a
    mistyped folder must not pass for a finished run) unless ``allow_empty``, where it is a
    warning."""
    out: list[Path] = []
    seen: set[Path] = set()
    for p in map(Path, images):
        if p.is_dir():
            files, skipped = list_images(p, "images")
            where = f"images folder {display_path(p)}"
            warn_skipped(skipped, where)
            if not files:
                msg = f"{where} holds no images (looked for {', '.join(IMAGE_SUFFIXES)})"
                if not allow_empty:
                    raise DataError(f"{msg}; pass --allow-empty if that is expected")
                warnings.warn(msg, stacklevel=2)
            found = files
        elif p.is_file():
            found = [p]
        else:
            raise FileNotFoundError(f"no such image or folder: {p}")
        for q in found:  # a file given twice (or with its folder) is segmented once
            key = q.resolve()
            if key not in seen:
                seen.add(key)
                out.append(q)
    return out


def _stem(p: Path) -> str:
    name = p.name
    return name[:-7] if name.lower().endswith(".nii.gz") else p.stem


def _outputs(base: str, overlay: bool, geojson: bool = False) -> list[str]:
    return ([f"{base}.png"] + ([f"{base}_overlay.png"] if overlay else [])
            + ([f"{base}.geojson"] if geojson else []))


def output_names(files: list[Path], overlay: bool = False, geojson: bool = False) -> list[str]:
    """One output base name per input, never two the same: ``<stem>`` when no other input has that
    stem, else the whole file name (``a.png``, ``a.tif`` -> ``a.png``, ``a.tif``), and ``~2``,
    ``~3`` ... if that still collides (same name in two folders). Compared case-insensitively,
    overlays included, so no output overwrites another on any filesystem."""
    stems: dict[str, int] = {}
    for f in files:
        stems[_stem(f).casefold()] = stems.get(_stem(f).casefold(), 0) + 1
    taken: set[str] = set()
    names: list[str] = []
    for f in files:
        base = _stem(f) if stems[_stem(f).casefold()] == 1 else f.name
        cand, k = base, 2
        while any(n.casefold() in taken for n in _outputs(cand, overlay, geojson)):
            cand, k = f"{base}~{k}", k + 1
        taken.update(n.casefold() for n in _outputs(cand, overlay, geojson))
        names.append(cand)
    return names


def check_output_dir(out_dir: Path, images: list[Path]) -> None:
    """Refuse an output folder that is, is inside, or contains an input folder: label PNGs
    written there would replace the images, or be read back as inputs by the next run. A
    workspace's managed folders (labels/, images/ ...) are refused too."""
    owner = managed_by(out_dir)
    if owner is not None:
        raise ValueError(f"output folder {out_dir} is inside the managed files of workspace "
                         f"{owner}; choose an --out folder outside them")
    out = out_dir.resolve()
    for p in map(Path, images):
        if not p.is_dir():
            continue
        src = p.resolve()
        if out == src or src in out.parents or out in src.parents:
            how = "is" if out == src else ("is inside" if src in out.parents else "contains")
            raise ValueError(f"output folder {out_dir} {how} the input folder {p}: label PNGs "
                             "would overwrite or mix with the images; choose another --out folder")


def predict_files(model_path, images: list[Path], out_dir, overlay: bool = False,
                  progress: bool = True, kernels: str = "fast", overwrite: bool = False,
                  allow_empty: bool = False, geojson: bool = False,
                  max_pixels: int | None = None) -> int:
    """Write ``<name>.png`` (uint16 instance labels) per image into ``out_dir``; returns the count.

    With ``overlay`` also ``<name>_overlay.png`` (``seglearn.report.sheets.save_overlay``); with
    ``geojson`` also ``<name>.geojson``, the instances as QuPath annotations
    (``seglearn.data.geojson``, which needs shapely: imported only then; the runtime never). Names
    come from ``output_names`` (distinct inputs never share an output). Everything is checked before
    anything is written: the output folder must not be, be inside or contain an input folder, no
    output may be an input file, and an existing output file is an error unless ``overwrite``.
    Each file is written atomically (``seglearn.atomic``). ``allow_empty``: a folder with no
    images is a warning, not an error (:func:`expand_images`). ``max_pixels``: larger images are
    refused before they are decoded (None: ``seglearn.data.io.DEFAULT_MAX_PIXELS``, the default of
    ``data.max_pixels``).
    """
    out_dir = Path(out_dir)
    files = expand_images(images, allow_empty)
    check_output_dir(out_dir, images)
    names = output_names(files, overlay, geojson)
    targets = [[out_dir / n for n in _outputs(base, overlay, geojson)] for base in names]
    inputs = {f.resolve() for f in files}
    for f, outs in zip(files, targets):
        for t in outs:
            if t.resolve() in inputs:
                raise ValueError(f"output {t} would overwrite the input image {t}; choose another "
                                 "--out folder")
            if t.exists() and (not overwrite or t.is_dir()):
                raise FileExistsError(f"output {t} (for {f}) already exists; nothing was written: "
                                      "choose an empty --out folder or pass --overwrite")
    model = load_model(model_path, kernels=kernels)
    out_dir.mkdir(parents=True, exist_ok=True)
    n = 0
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("segmenting", total=len(files))
        for f, outs in zip(files, targets):
            img = read_image(f, max_pixels=max_pixels or DEFAULT_MAX_PIXELS)
            labels = model.predict(img)
            if labels.max(initial=0) > 65535:
                raise ValueError(f"{f}: more than 65535 objects do not fit a 16-bit label PNG")
            write_mask(outs[0], labels.astype("uint16"))
            if overlay:
                # lazy: matplotlib and scikit-image, only when overlays are written
                from seglearn.report.sheets import save_overlay

                save_overlay(outs[1], img, labels, title=f.name)
            if geojson:
                write_geojson(outs[-1], labels)
            n += 1
            bar.advance(task)
    return n
