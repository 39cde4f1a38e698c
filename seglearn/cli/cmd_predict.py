"""seglearn predict MODEL.slq IMAGES... --out DIR [--overlay] [--geojson]"""

from __future__ import annotations

from pathlib import Path

import typer

from seglearn.cli.app import app
from seglearn.cli.common import ProgressOpt
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
    progress: bool = ProgressOpt,
) -> None:
    """Segment images with the integer-only runtime (numpy + numba; torch is not used)."""
    from seglearn.app.predict import predict_files
    from seglearn.runtime.slq import SlqFormatError

    try:
        n = predict_files(model, images, out, overlay=overlay, progress=progress,
                          allow_empty=allow_empty, overwrite=overwrite, geojson=geojson)
    except SlqFormatError as e:  # some format errors say what is wrong but not in which file
        if str(model) in str(e):
            raise
        raise SlqFormatError(f"model file {model}: {e}") from None
    console.print(f"wrote {n} instance-label PNG(s){' and GeoJSON file(s)' if geojson else ''} "
                  f"to {out}")
