"""seglearn export WS OUT.slq [--format slq|onnx]"""

from __future__ import annotations

from pathlib import Path

import typer

from seglearn.cli.app import app
from seglearn.cli.errors import friendly
from seglearn.cli.render import console


@app.command("export")
@friendly
def export_cmd(
    workspace: Path = typer.Argument(..., help="Workspace folder."),
    out: Path = typer.Argument(..., help="Output file (.slq, or .onnx with --format onnx)."),
    format: str = typer.Option("slq", help="slq (integer-only runtime) | onnx (QDQ)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it exists."),
) -> None:
    """Lower the final segmenter to the integer-only runtime's .slq file (or a QDQ ONNX model)."""
    from seglearn.app.export import export_workspace
    from seglearn.store import Workspace

    info = export_workspace(Workspace.open(workspace), out, fmt=format, overwrite=overwrite)
    console.print(info)
