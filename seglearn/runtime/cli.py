"""``seglearn-predict MODEL.slq IMAGES... --out DIR`` (also ``python -m seglearn.runtime``).

The deploy-side command: segment image files with the integer-only runtime, writing one 16-bit
instance-label PNG ``<stem>.png`` per image. It needs only what ``pip install seglearn[runtime]``
installs (numpy, numba, scipy, Pillow): no torch, MONAI, scikit-image, typer or rich. The full
app's ``seglearn predict`` adds overlays, GeoJSON and folder checks on top of the same runtime.

Bad input (a missing or damaged file, an unreadable image, an output that exists) is one line
``error: ...`` on stderr and exit status 2; nothing is written before every input is checked.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

from seglearn.data.importers import list_images, split_suffix, warn_skipped
from seglearn.data.io import read_image, write_mask
from seglearn.runtime.model import load_model

EXIT_USER_ERROR = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="seglearn-predict",
                                description="Segment images with an exported .slq model (integer runtime).")
    p.add_argument("model", type=Path, help="an exported .slq model")
    p.add_argument("images", type=Path, nargs="+", help="image files, or folders of images")
    p.add_argument("--out", "-o", type=Path, required=True, help="output folder for the label PNGs")
    p.add_argument("--overwrite", action="store_true", help="replace output files that already exist")
    p.add_argument("--kernels", choices=("fast", "ref"), default="fast",
                   help="numba kernels (default) or the numpy reference kernels")
    return p


def _inputs(images: list[Path]) -> list[Path]:
    """The files given and the images directly inside the folders given, each once."""
    files: list[Path] = []
    seen: set[Path] = set()
    for p in images:
        if p.is_dir():
            found, skipped = list_images(p, "images")
            warn_skipped(skipped, f"images folder {p}")
            if not found:
                raise ValueError(f"images folder {p} holds no images")
        elif p.is_file():
            found = [p]
        else:
            raise FileNotFoundError(f"no such image or folder: {p}")
        for f in found:  # a file given twice (or with its folder) is segmented once
            if f.resolve() not in seen:
                seen.add(f.resolve())
                files.append(f)
    return files


def _targets(files: list[Path], out: Path, overwrite: bool) -> list[Path]:
    """``out/<stem>.png`` per input; two inputs of one stem, an input as output or (without
    ``overwrite``) an existing output is an error."""
    sources: dict[str, Path] = {}
    targets: list[Path] = []
    inputs = {f.resolve() for f in files}
    for f in files:
        name = split_suffix(f)[0] + ".png"  # (``.nii.gz`` is one suffix)
        key = name.casefold()  # one output per name on case-insensitive file systems too
        if key in sources:
            raise ValueError(f"{sources[key]} and {f} would both be written to {out / name}; "
                             "segment them in separate runs")
        t = out / name
        if t.resolve() in inputs:
            raise ValueError(f"output {t} would overwrite the input image {t}; choose another --out folder")
        if t.exists() and (not overwrite or t.is_dir()):
            raise FileExistsError(f"output {t} (for {f}) already exists; nothing was written: choose an "
                                  "empty --out folder or pass --overwrite")
        sources[key] = f
        targets.append(t)
    return targets


def predict(model_path: Path, images: list[Path], out: Path, overwrite: bool = False,
            kernels: str = "fast") -> int:
    """Write the instance labels of every image; returns how many were written."""
    files = _inputs(images)
    targets = _targets(files, out, overwrite)
    model = load_model(model_path, kernels=kernels)
    out.mkdir(parents=True, exist_ok=True)
    for f, t in zip(files, targets):
        labels = model.predict(read_image(f))
        if labels.max(initial=0) > 65535:
            raise ValueError(f"{f}: more than 65535 objects do not fit a 16-bit label PNG")
        write_mask(t, labels.astype(np.uint16))
    return len(files)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    warnings.showwarning = lambda msg, *a, **k: print(f"warning: {msg}", file=sys.stderr)
    try:
        n = predict(args.model, args.images, args.out, args.overwrite, args.kernels)
    except (ValueError, OSError) as e:  # seglearn's errors (SlqFormatError, DataError ...) are ValueErrors
        msg = str(e) or type(e).__name__
        if isinstance(e, OSError) and e.filename and str(e.filename) not in msg:
            msg = f"{e.filename}: {msg}"
        print(f"error: {msg}", file=sys.stderr)
        return EXIT_USER_ERROR
    print(f"wrote {n} instance-label PNG(s) to {args.out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
