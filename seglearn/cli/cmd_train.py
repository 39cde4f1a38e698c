"""seglearn train WS [--final] [--resume]"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from seglearn.cli.app import app
from seglearn.cli.common import ConfigOpt, ProgressOpt, SetOpt, workspace_config
from seglearn.cli.errors import friendly
from seglearn.cli.render import console, print_models


@app.command("train")
@friendly
def train_cmd(
    workspace: Path = typer.Argument(..., help="Workspace folder."),
    final: bool = typer.Option(False, "--final", help="Train the final segmenter (QNT) instead of "
                                                      "the round's suggestive ensemble (QSA)."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted training from its "
                                                        "last checkpoint."),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda (overrides train.device)."),
    config: Optional[Path] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
    progress: bool = ProgressOpt,
) -> None:
    """Train the suggestive ensemble on what is labeled (or, with --final, the final segmenter)."""
    # lazy: the command's implementation (numpy, the store, torch for most) loads when the command
    # runs, so --help and the other commands start without it
    from seglearn.app.train import train_workspace
    from seglearn.store import Workspace

    with Workspace.open(workspace) as ws:  # closed on errors too (in-process callers)
        cfg = workspace_config(ws, config, set_, {"train.device": device or None})
        rows = train_workspace(ws, cfg, final=final, resume=resume, progress=progress)
        print_models(rows, title="final segmenter" if final else "suggestive ensemble")
        console.print(f"models saved under {ws.root / 'models'}")
