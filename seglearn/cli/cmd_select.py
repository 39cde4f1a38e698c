"""seglearn select WS --budget k [--candidates K] [--strategy NAME] [--pre-annotate]"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from seglearn.cli.app import app
from seglearn.cli.common import ConfigOpt, ProgressOpt, SetOpt, workspace_config
from seglearn.cli.errors import friendly
from seglearn.cli.render import console, print_suggestions


@app.command("select")
@friendly
def select_cmd(
    workspace: Path = typer.Argument(..., help="Workspace folder."),
    budget: Optional[int] = typer.Option(None, "--budget", "-k", help="How many images to suggest."),
    candidates: Optional[int] = typer.Option(None, "--candidates", "-K",
                                             help="K most uncertain images given to max-cover."),
    strategy: Optional[str] = typer.Option(None, help="suggestive | uncertainty | representative "
                                                      "| coreset | random"),
    pre_annotate: Optional[bool] = typer.Option(
        None, "--pre-annotate/--no-pre-annotate",
        help="Also write the model's masks of the suggested images (<item>_pre.png and "
             "<item>_pre.geojson for QuPath) to correct instead of drawing "
             "(config: active.pre_annotate)."),
    config: Optional[Path] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
    progress: bool = ProgressOpt,
) -> None:
    """Score the unlabeled pool with the suggestive ensemble and suggest images to annotate."""
    # lazy: the command's implementation (numpy, the store, torch for most) loads when the command
    # runs, so --help and the other commands start without it
    from seglearn.app.select import select_workspace
    from seglearn.store import Workspace

    with Workspace.open(workspace) as ws:  # closed on errors too (in-process callers)
        cfg = workspace_config(ws, config, set_, {
            "active.budget": budget, "active.candidates": candidates, "active.strategy": strategy,
            "active.pre_annotate": pre_annotate})
        result = select_workspace(ws, cfg, progress=progress)
        print_suggestions(result)
        console.print(f"suggestions: {result.csv_path}\npicture sheet: {result.sheet_path}")
        if result.pre_annotations is not None:
            console.print(f"pre-annotations to correct: {result.pre_annotations} (<item>_pre.png, "
                          f"<item>_pre.geojson); import the corrected files with `seglearn label`")
