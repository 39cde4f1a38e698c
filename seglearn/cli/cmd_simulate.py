"""seglearn simulate [CONFIG]"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from seglearn.cli.app import app
from seglearn.cli.common import ProgressOpt, SetOpt
from seglearn.cli.errors import friendly
from seglearn.cli.render import console


@app.command("simulate")
@friendly
def simulate_cmd(
    config: Optional[Path] = typer.Argument(None, help="YAML config (default: the embedded demo)."),
    out: Path = typer.Option(Path("seglearn-simulate"), help="Output folder."),
    glas: Optional[Path] = typer.Option(None, help="Run on a GlaS folder instead of synthetic data."),
    set_: Optional[list[str]] = SetOpt,
    progress: bool = ProgressOpt,
) -> None:
    """Run the whole loop with the hidden masks as the oracle: learning curves per strategy/seed."""
    from seglearn.app.simulate import simulate
    from seglearn.config import load_config

    cfg = load_config(config, set_ or [])
    result = simulate(cfg, out, glas=glas, progress=progress)
    console.print(f"learning curves: {result.png_path}\nnumbers: {result.csv_path}, "
                  f"{result.json_path}")
