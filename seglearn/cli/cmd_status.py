"""seglearn status WS [--check] [--config FILE] [--set KEY=VALUE ...]"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from seglearn.cli.app import app
from seglearn.cli.common import ConfigOpt, SetOpt, workspace_config
from seglearn.cli.errors import friendly
from seglearn.cli.render import print_check, print_config, print_status


@app.command("status")
@friendly
def status_cmd(
    workspace: Path = typer.Argument(..., help="Workspace folder."),
    check: bool = typer.Option(False, "--check", help="Run SQLite's full integrity_check (not only "
                                                      "quick_check) and look for missing and "
                                                      "orphan label files."),
    config: Optional[Path] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
) -> None:
    """Counts, rounds, models and the last metrics of a workspace; a damaged database is an error.

    Also the config the other commands run with (the saved one, or --config; then --set): its
    hash and the keys that differ from the defaults, so an override can be checked before a
    command spends time on it."""
    # lazy: the command's implementation (numpy, the store, torch for most) loads when the command
    # runs, so --help and the other commands start without it
    from seglearn.store import Workspace
    from seglearn.store.integrity import DamagedDatabaseError

    with Workspace.open(workspace) as ws:  # closed on errors too (in-process callers)
        # A damaged page that no count below reads would otherwise let a damaged workspace look
        # normal.
        found = ws.verify_database(full=check)
        if found:
            kind = "integrity_check: " if check else "quick_check: "
            raise DamagedDatabaseError(ws.db_path, kind + "; ".join(found))
        # builds no model: no torch import (seconds) for a status; a bad override is refused
        # before any output
        cfg = workspace_config(ws, config, set_, torch_checks=False)
        print_status(ws)
        print_config(cfg)
        if check:
            print_check(ws.check())
