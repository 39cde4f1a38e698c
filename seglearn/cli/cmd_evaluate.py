"""seglearn evaluate WS"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from seglearn.cli.app import app
from seglearn.cli.common import ConfigOpt, ProgressOpt, SetOpt, workspace_config
from seglearn.cli.errors import friendly
from seglearn.cli.render import console, print_metrics


@app.command("evaluate")
@friendly
def evaluate_cmd(
    workspace: Path = typer.Argument(..., help="Workspace folder."),
    config: Optional[Path] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
    progress: bool = ProgressOpt,
) -> None:
    """GlaS object metrics (F1, object Dice, object Hausdorff) and pixel Dice/IoU on the test split."""
    from seglearn.app.evaluate import evaluate_workspace
    from seglearn.store import Workspace

    ws = Workspace.open(workspace)
    cfg = workspace_config(ws, config, set_)
    result = evaluate_workspace(ws, cfg, progress=progress)
    print_metrics(result.metrics, title=f"test split ({result.n_images} images)")
    console.print(f"overlays and metrics: {result.report_dir}")
