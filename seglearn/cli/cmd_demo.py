"""seglearn demo [DIR]"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from seglearn.cli.app import app
from seglearn.cli.common import FileConfigOpt, ProgressOpt, SetOpt
from seglearn.cli.errors import friendly
from seglearn.cli.render import console, print_metrics, print_status, print_suggestions
from seglearn.config import load_config


@app.command("demo")
@friendly
def demo_cmd(
    directory: Path = typer.Argument(Path("seglearn-demo"), help="Where the demo writes."),
    config: Optional[Path] = FileConfigOpt,
    set_: Optional[list[str]] = SetOpt,
    progress: bool = ProgressOpt,
) -> None:
    """The embedded default: synthetic glands, two annotation rounds, final segmenter, evaluation,
    export and integer-only prediction."""
    # lazy: the command's implementation (numpy, the store, torch for most) loads when the command
    # runs, so --help and the other commands start without it
    from seglearn.app.demo import run_demo
    summary = run_demo(directory, load_config(config, set_ or []), progress=progress,
                       on_step=_print_step)
    console.rule("summary")
    for k, v in summary.items():
        console.print(f"{k}: {v}")


def _print_step(step: str, payload) -> None:
    """What the demo prints as it goes (``app.demo.STEPS``)."""
    if step == "workspace":
        console.rule("[bold]seglearn demo[/]: synthetic glands")
        print_status(payload)
    elif step == "round":
        console.rule(f"annotation round {payload[0]}/{payload[1]}")
    elif step == "suggested":
        print_suggestions(payload.suggestions)
        console.print(f"oracle labeled {payload.labeled} suggested images; sheet: "
                      f"{payload.suggestions.sheet_path}")
    elif step == "final":
        console.rule("final segmenter")
    elif step == "evaluated":
        print_metrics(payload.metrics, title=f"final segmenter on {payload.n_images} synthetic "
                                             "test images")
