"""seglearn simulate [CONFIG | --config CONFIG] [--set KEY=VALUE ...]"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from seglearn.cli.app import app
from seglearn.cli.common import FileConfigOpt, ProgressOpt, SetOpt, file_config
from seglearn.cli.errors import friendly
from seglearn.cli.render import console
from seglearn.config import ConfigError


@app.command("simulate")
@friendly
def simulate_cmd(
    config: Optional[Path] = typer.Argument(None, help="YAML config (default: the embedded demo)."),
    out: Path = typer.Option(Path("seglearn-simulate"), help="Output folder."),
    glas: Optional[Path] = typer.Option(None, help="Run on a GlaS folder instead of synthetic data."),
    config_opt: Optional[Path] = FileConfigOpt,
    set_: Optional[list[str]] = SetOpt,
    progress: bool = ProgressOpt,
) -> None:
    """Run the whole loop with the hidden masks as the oracle: learning curves per strategy/seed."""
    # lazy: the command's implementation (numpy, the store, torch for most) loads when the command
    # runs, so --help and the other commands start without it
    from seglearn.app.simulate import simulate
    if config is not None and config_opt is not None:
        raise ConfigError(f"simulate: the config is given twice ({config} and --config "
                          f"{config_opt}); give one")
    cfg = file_config(config if config is not None else config_opt, set_)
    result = simulate(cfg, out, glas=glas, progress=progress)
    console.print(f"learning curves: {result.png_path}\nnumbers: {result.csv_path}, "
                  f"{result.json_path}")
