"""The ``seglearn`` command: a typer app whose commands are thin wrappers over seglearn.app.*."""

from __future__ import annotations

import warnings

import typer

app = typer.Typer(
    name="seglearn",
    help="Active learning for 2D biomedical segmentation: quantized FCN ensembles suggest which "
         "images to annotate; the final quantized segmenter exports to an integer-only runtime.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Each module registers its command(s) on `app` when imported.
from seglearn.cli import (cmd_backup, cmd_demo, cmd_evaluate, cmd_export, cmd_init,  # noqa: E402,F401
                          cmd_label, cmd_predict, cmd_select, cmd_simulate, cmd_status, cmd_train,
                          cmd_tune)


def main() -> None:
    # A warning is a message to the user, not a pointer into seglearn's source.
    warnings.formatwarning = lambda message, category, *args, **kw: f"warning: {message}\n"
    app()


if __name__ == "__main__":
    # `python -m seglearn.cli.app`: this file then runs as __main__, a second copy of the module;
    # the commands registered themselves on the imported seglearn.cli.app, so run that one.
    from seglearn.cli.app import main as _main

    _main()
