"""seglearn export WS OUT.slq [--format slq|onnx]"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from seglearn.cli.app import app
from seglearn.cli.common import ConfigOpt, SetOpt, workspace_config
from seglearn.cli.errors import friendly
from seglearn.cli.render import console


@app.command("export")
@friendly
def export_cmd(
    workspace: Path = typer.Argument(..., help="Workspace folder."),
    out: Path = typer.Argument(..., help="Output file (.slq, or .onnx with --format onnx)."),
    format: str = typer.Option("slq", help="slq (integer-only runtime) | onnx (QDQ)."),
    config: Optional[Path] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it exists."),
) -> None:
    """Lower the final segmenter to the integer-only runtime's .slq file (or a QDQ ONNX model)."""
    # lazy: the command's implementation (numpy, the store, torch for most) loads when the command
    # runs, so --help and the other commands start without it
    from seglearn.app.export import export_workspace
    from seglearn.store import Workspace

    with Workspace.open(workspace) as ws:  # closed on errors too (in-process callers)
        info = export_workspace(ws, out, fmt=format, cfg=workspace_config(ws, config, set_),
                                overwrite=overwrite)
        console.print(info)
