"""seglearn tune WS [--round N]"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from seglearn.cli.app import app
from seglearn.cli.common import ConfigOpt, ProgressOpt, SetOpt, workspace_config
from seglearn.cli.errors import friendly
from seglearn.cli.render import console


@app.command("tune")
@friendly
def tune_cmd(
    workspace: Path = typer.Argument(..., help="Workspace folder."),
    round_id: Optional[int] = typer.Option(None, "--round", help="Final round (default: newest)."),
    config: Optional[Path] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
    progress: bool = ProgressOpt,
) -> None:
    """Pick the final segmenter's post-processing on its training labels and store it.

    `train --final` does this already (postprocess.tune, on by default); run it again after
    changing the configured post-processing. evaluate, export and predict use the stored values.
    """
    # lazy: the command's implementation (numpy, the store, torch for most) loads when the command
    # runs, so --help and the other commands start without it
    from seglearn.app.tune import tune_final
    from seglearn.models.ensemble import load_ensemble
    from seglearn.store import Workspace

    with Workspace.open(workspace) as ws:  # closed on errors too (in-process callers)
        cfg = workspace_config(ws, config, set_)
        ens = load_ensemble(ws, "final", cfg, round_id=round_id)
        record = tune_final(ws, cfg, ens, progress, ens.device)
        params = ", ".join(f"{k}={v}" for k, v in record["params"].items())
        console.print(f"final round {record['round']}: {params} ({record['objective_name']} "
                      f"{record['score']:.3f} on {record['images']} training images); evaluate, "
                      "export and predict use these",
                      soft_wrap=True)
