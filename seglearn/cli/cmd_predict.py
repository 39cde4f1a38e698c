"""seglearn predict MODEL.slq IMAGES... --out DIR [--overlay] [--geojson]"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from seglearn.cli.app import app
from seglearn.cli.common import FileConfigOpt, ProgressOpt, SetOpt, file_config
from seglearn.cli.errors import friendly
from seglearn.cli.render import console


@app.command("predict")
@friendly
def predict_cmd(
    model: Path = typer.Argument(..., help="An exported .slq model."),
    images: list[Path] = typer.Argument(..., help="Images (or folders of images)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder for label PNGs."),
    overlay: bool = typer.Option(False, "--overlay", help="Also write overlay pictures."),
    geojson: bool = typer.Option(False, "--geojson",
                                 help="Also write <name>.geojson: the objects as QuPath "
                                      "annotations (File > Import objects)."),
    allow_empty: bool = typer.Option(False, "--allow-empty",
                                     help="A folder with no images is not an error."),
    overwrite: bool = typer.Option(False, "--overwrite",
                                   help="Replace output files that already exist."),
    config: Optional[Path] = FileConfigOpt,
    set_: Optional[list[str]] = SetOpt,
    progress: bool = ProgressOpt,
) -> None:
    """Segment images with the integer-only runtime (numpy + numba; torch is not used).

    The model file holds everything the runtime needs; of a config only data.max_pixels applies
    (larger images are refused)."""
    # lazy: the command's implementation (numpy, the store, torch for most) loads when the command
    # runs, so --help and the other commands start without it
    from seglearn.app.predict import predict_files
    from seglearn.runtime.slq import SlqFormatError

    max_pixels = file_config(config, set_, torch_checks=False).data.max_pixels
    try:
        n = predict_files(model, images, out, overlay=overlay, progress=progress,
                          allow_empty=allow_empty, overwrite=overwrite, geojson=geojson,
                          max_pixels=max_pixels)
    except SlqFormatError as e:  # some format errors say what is wrong but not in which file
        if str(model) in str(e):
            raise
        raise SlqFormatError(f"model file {model}: {e}") from None
    console.print(f"wrote {n} instance-label PNG(s){' and GeoJSON file(s)' if geojson else ''} "
                  f"to {out}")
