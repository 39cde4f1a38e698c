"""seglearn demo [DIR]"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from seglearn.cli.app import app
from seglearn.cli.common import ConfigOpt, ProgressOpt, SetOpt
from seglearn.cli.errors import friendly


@app.command("demo")
@friendly
def demo_cmd(
    directory: Path = typer.Argument(Path("seglearn-demo"), help="Where the demo writes."),
    config: Optional[Path] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
    progress: bool = ProgressOpt,
) -> None:
    """The embedded default: synthetic glands, two annotation rounds, final segmenter, evaluation,
    export and integer-only prediction."""
    from seglearn.app.demo import run_demo
    from seglearn.config import load_config

    run_demo(directory, load_config(config, set_ or []), progress=progress)
