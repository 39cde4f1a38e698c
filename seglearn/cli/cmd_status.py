"""seglearn status WS"""

from __future__ import annotations

from pathlib import Path

import typer

from seglearn.cli.app import app
from seglearn.cli.errors import friendly
from seglearn.cli.render import print_status


@app.command("status")
@friendly
def status_cmd(workspace: Path = typer.Argument(..., help="Workspace folder.")) -> None:
    """Counts, rounds, models and the last metrics of a workspace."""
    from seglearn.store import Workspace

    print_status(Workspace.open(workspace))
