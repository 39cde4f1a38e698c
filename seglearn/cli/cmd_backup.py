"""seglearn backup WS [OUT]"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from seglearn.cli.app import app
from seglearn.cli.errors import friendly
from seglearn.cli.render import console


@app.command("backup")
@friendly
def backup_cmd(
    workspace: Path = typer.Argument(..., help="Workspace folder."),
    out: Optional[Path] = typer.Argument(None, help="Backup file to create, or a folder for it "
                                                    "(default: WS/backups/seglearn-<time>.db)."),
) -> None:
    """Copy the workspace database to a new file (safe while other commands run)."""
    # lazy: the command's implementation (numpy, the store, torch for most) loads when the command
    # runs, so --help and the other commands start without it
    from seglearn.app.backup import backup_workspace
    from seglearn.store import Workspace

    with Workspace.open(workspace) as ws:  # closed on errors too (in-process callers)
        path = backup_workspace(ws, out)
        console.print(f"backed up {ws.db_path} to {path}", soft_wrap=True)
        console.print(f"to restore it (no seglearn command running): copy it over {ws.db_path} and "
                      f"delete {ws.db_path.name}-wal and {ws.db_path.name}-shm", soft_wrap=True)
