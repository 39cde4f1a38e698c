"""`seglearn predict`: segment image files with the integer-only runtime (torch is never imported)."""

from __future__ import annotations

import warnings
from pathlib import Path

from rich.progress import Progress

from seglearn.data.errors import DataError, display_path
from seglearn.data.importers import IMAGE_SUFFIXES, list_images, warn_skipped


def expand_images(images: list[Path], allow_empty: bool = False) -> list[Path]:
    """Files as given, and the image files (sorted) inside any folder given; what else a folder
    holds is named in a warning. A folder without any image is a DataError (a mistyped folder must
    not pass for a finished run) unless ``allow_empty``, where it is a warning."""
    out: list[Path] = []
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
            out.extend(files)
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"no such image or folder: {p}")
    return out


def _stem(p: Path) -> str:
    name = p.name
    return name[:-7] if name.lower().endswith(".nii.gz") else p.stem


def predict_files(model_path, images: list[Path], out_dir, overlay: bool = False,
                  progress: bool = True, kernels: str = "fast", allow_empty: bool = False) -> int:
    """Write ``<stem>.png`` (uint16 instance labels) per image into ``out_dir``; returns the count.

    With ``overlay`` also ``<stem>_overlay.png`` (``seglearn.report.sheets.save_overlay``).
    ``allow_empty``: a folder with no images is a warning, not an error (:func:`expand_images`).
    """
    from seglearn.data.io import read_image, write_mask
    from seglearn.runtime.model import load_model

    model = load_model(model_path, kernels=kernels)
    files = expand_images(images, allow_empty)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n = 0
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("segmenting", total=len(files))
        for f in files:
            img = read_image(f)
            labels = model.predict(img)
            if labels.max(initial=0) > 65535:
                raise ValueError(f"{f}: more than 65535 objects do not fit a 16-bit label PNG")
            write_mask(out_dir / f"{_stem(f)}.png", labels.astype("uint16"))
            if overlay:
                from seglearn.report.sheets import save_overlay

                save_overlay(out_dir / f"{_stem(f)}_overlay.png", img, labels, title=f.name)
            n += 1
            bar.advance(task)
    return n
