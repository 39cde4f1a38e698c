"""seglearn evaluate WS [--images DIR --masks DIR [--image-pattern P --mask-pattern P]]"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from seglearn.cli.app import app
from seglearn.cli.common import (ConfigOpt, ImagePatternOpt, MaskPatternOpt, ProgressOpt, SetOpt,
                                 workspace_config)
from seglearn.cli.errors import friendly
from seglearn.cli.render import console, print_metrics


@app.command("evaluate")
@friendly
def evaluate_cmd(
    workspace: Path = typer.Argument(..., help="Workspace folder."),
    images: Optional[Path] = typer.Option(
        None, help="Score on this folder of images instead of the test split (not added to the "
                   "workspace); with --masks."),
    masks: Optional[Path] = typer.Option(None, help="The masks of --images, paired as init pairs."),
    image_pattern: Optional[str] = ImagePatternOpt,
    mask_pattern: Optional[str] = MaskPatternOpt,
    config: Optional[Path] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
    progress: bool = ProgressOpt,
) -> None:
    """GlaS object metrics (F1, object Dice, object Hausdorff) where the objects are blob-like
    (evaluate.metrics), and pixel Dice/IoU always, on the test split or a labeled folder."""
    # lazy: the command's implementation (numpy, the store, torch for most) loads when the command
    # runs, so --help and the other commands start without it
    from seglearn.app.evaluate import evaluate_workspace
    from seglearn.store import Workspace

    with Workspace.open(workspace) as ws:  # closed on errors too (in-process callers)
        cfg = workspace_config(ws, config, set_)
        result = evaluate_workspace(ws, cfg, progress=progress, images=images, masks=masks,
                                    image_pattern=image_pattern, mask_pattern=mask_pattern)
        where = "test split" if images is None else f"folder {images}"
        print_metrics(result.metrics, title=f"{where} ({result.n_images} images)")
        if result.kind == "pixels":
            console.print("pixel metrics only: the masks' objects are thin (evaluate.metrics)",
                          markup=False)
        console.print(f"overlays and metrics: {result.report_dir}", markup=False, soft_wrap=True)
