"""seglearn init WS (--glas DIR | --images DIR [--masks DIR] [--test-images DIR [--test-masks DIR]]
[--image-pattern P --mask-pattern P] | --slides DIR [--tile PX --level L --tissue-threshold T]
| --synthetic N [--synthetic-kind glands|vessels])"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from seglearn.cli.app import app
from seglearn.cli.common import FileConfigOpt, ImagePatternOpt, MaskPatternOpt, SetOpt
from seglearn.cli.errors import friendly
from seglearn.cli.render import console, print_status
from seglearn.config import load_config, with_values


@app.command("init")
@friendly
def init_cmd(
    workspace: Path = typer.Argument(..., help="Workspace folder to create."),
    glas: Optional[Path] = typer.Option(None, help="GlaS folder (train_N + train_N_anno, testA_*)."),
    images: Optional[Path] = typer.Option(None, help="Folder of images."),
    masks: Optional[Path] = typer.Option(
        None, help="Folder of masks, matched to images by stem (or by --image/--mask-pattern)."),
    image_pattern: Optional[str] = ImagePatternOpt,
    mask_pattern: Optional[str] = MaskPatternOpt,
    test_images: Optional[Path] = typer.Option(
        None, help="Folder of held-out labeled images: the test split `seglearn evaluate` scores."),
    test_masks: Optional[Path] = typer.Option(
        None, help="The masks of --test-images (default: beside them), paired like --masks."),
    slides: Optional[Path] = typer.Option(
        None, help="Folder of whole-slide images (pyramidal TIFF/SVS): their tissue tiles become "
                   "the pool, read from the slides on demand."),
    tile: int = typer.Option(512, help="--slides: tile side in pixels of --level."),
    level: int = typer.Option(0, help="--slides: pyramid level the tiles are cut from (0: full "
                                      "resolution)."),
    tissue_threshold: float = typer.Option(
        0.25, help="--slides: keep a tile when this fraction of it is tissue (Otsu on the "
                   "slide's lowest-resolution level)."),
    synthetic: Optional[int] = typer.Option(
        None, help="Generate N synthetic images (gland instances, or --synthetic-kind vessels)."),
    synthetic_kind: Optional[str] = typer.Option(
        None, "--synthetic-kind", help="--synthetic: glands (default) or vessels (thin branching "
                                       "trees, binary masks; config key synthetic.kind)."),
    initial_labeled: Optional[float] = typer.Option(
        None, help="Fraction of the pool labeled at random at the start (default: config)."),
    seed: int = typer.Option(0, help="Seed of the random start set."),
    force: bool = typer.Option(False, "--force", help="Replace an existing workspace."),
    config: Optional[Path] = FileConfigOpt,
    set_: Optional[list[str]] = SetOpt,
) -> None:
    """Create a workspace from a dataset and label a random start set."""
    # lazy: the command's implementation (numpy, the store, torch for most) loads when the command
    # runs, so --help and the other commands start without it
    from seglearn.app.init import init_workspace
    cfg = load_config(config, set_ or [])
    if synthetic_kind is not None:  # the option is the config key, checked as --set would be
        cfg = with_values(cfg, {"synthetic.kind": synthetic_kind}, where="--synthetic-kind")
    ws = init_workspace(workspace, cfg, glas=glas, images=images, masks=masks, synthetic=synthetic,
                        initial_labeled=initial_labeled, seed=seed, force=force,
                        image_pattern=image_pattern, mask_pattern=mask_pattern,
                        test_images=test_images, test_masks=test_masks, slides=slides,
                        tile=tile, level=level, tissue_threshold=tissue_threshold)
    print_status(ws)
    for name, s in (ws.meta("slides") or {}).items():
        console.print(f"slide {name}: {s['kept']} of {s['tiles']} {s['tile']}px tiles of level "
                      f"{s['level']} kept (tissue >= {tissue_threshold})"
                      + (f"; right/bottom margin of {s['margin'][0]}/{s['margin'][1]} px not "
                         "tiled" if any(s["margin"]) else ""), markup=False, soft_wrap=True)
    notes = ws.meta("conversions") or {}
    if notes:  # accepted but changed on reading: the user should know
        console.print(f"converted while reading ({len(notes)} image(s); the files are unchanged):",
                      markup=False, soft_wrap=True)
        for name, what in list(notes.items())[:20]:
            console.print(f"  {name}: {'; '.join(what)}", markup=False, soft_wrap=True)
        if len(notes) > 20:
            console.print(f"  ... and {len(notes) - 20} more", markup=False)
