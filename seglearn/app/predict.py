"""`seglearn predict`: segment image files with the integer-only runtime (torch is never imported)."""

from __future__ import annotations

from pathlib import Path

from rich.progress import Progress

from seglearn.data.importers import IMAGE_SUFFIXES


def _is_image(p: Path) -> bool:
    name = p.name.lower()
    return p.is_file() and any(name.endswith(s) for s in IMAGE_SUFFIXES) and not name.startswith(".")


def expand_images(images: list[Path]) -> list[Path]:
    """Files as given, and the image files (sorted) inside any folder given."""
    out: list[Path] = []
    for p in map(Path, images):
        if p.is_dir():
            out.extend(sorted(q for q in p.iterdir() if _is_image(q)))
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"no such image or folder: {p}")
    return out


def _stem(p: Path) -> str:
    name = p.name
    return name[:-7] if name.lower().endswith(".nii.gz") else p.stem


def predict_files(model_path, images: list[Path], out_dir, overlay: bool = False,
                  progress: bool = True, kernels: str = "fast") -> int:
    """Write ``<stem>.png`` (uint16 instance labels) per image into ``out_dir``; returns the count.

    With ``overlay`` also ``<stem>_overlay.png`` (``seglearn.report.sheets.save_overlay``).
    """
    from seglearn.data.io import read_image, write_mask
    from seglearn.runtime.model import load_model

    model = load_model(model_path, kernels=kernels)
    files = expand_images(images)
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
