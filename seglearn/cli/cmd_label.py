"""seglearn label WS --masks DIR [--image-pattern P --mask-pattern P] | --geojson DIR [--class NAME]
| --item ID --mask FILE | --oracle"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from seglearn.cli.app import app
from seglearn.cli.common import (ConfigOpt, ImagePatternOpt, MaskPatternOpt, SetOpt,
                                 workspace_config)
from seglearn.cli.errors import friendly
from seglearn.cli.render import console


@app.command("label")
@friendly
def label_cmd(
    workspace: Path = typer.Argument(..., help="Workspace folder."),
    masks: Optional[Path] = typer.Option(
        None, help="Folder of masks named after the items (or paired by --image/--mask-pattern; "
                   "default: the patterns given to init)."),
    image_pattern: Optional[str] = ImagePatternOpt,
    mask_pattern: Optional[str] = MaskPatternOpt,
    geojson: Optional[Path] = typer.Option(
        None, "--geojson", help="Folder of QuPath GeoJSON exports, <item>.geojson or <item>.json "
                                "(polygons rasterised to instance masks)."),
    class_: Optional[str] = typer.Option(None, "--class",
                                         help="Only GeoJSON features of this classification."),
    item: Optional[str] = typer.Option(None, help="One item, by name or id."),
    mask: Optional[Path] = typer.Option(None, help="The mask file (or GeoJSON file) for --item."),
    oracle: bool = typer.Option(False, "--oracle", help="Label the last round's suggestions with "
                                                        "the hidden masks (simulation)."),
    config: Optional[Path] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
) -> None:
    """Import the expert's masks; all of them are committed in one transaction or none is.

    A mask that started as a pre-annotation (select --pre-annotate) is stored with source
    'pre-annotation' and whether it was changed."""
    # lazy: the command's implementation (numpy, the store, torch for most) loads when the command
    # runs, so --help and the other commands start without it
    from seglearn.app.label import label_workspace
    from seglearn.store import Workspace

    with Workspace.open(workspace) as ws:  # closed on errors too (in-process callers)
        cfg = workspace_config(ws, config, set_, torch_checks=False)  # builds no model
        n = label_workspace(ws, masks_dir=masks, item=item, mask=mask, oracle=oracle,
                            image_pattern=image_pattern, mask_pattern=mask_pattern,
                            geojson_dir=geojson, class_filter=class_,
                            max_pixels=cfg.data.max_pixels)
        console.print(f"labeled {n} item(s); {len(ws.training_items())} training images now")
