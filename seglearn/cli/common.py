"""Options shared by several commands, and config resolution for a workspace."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from seglearn.config import Config, apply_overrides, config_from_dict, load_config, with_values

ConfigOpt = typer.Option(None, "--config", "-c", help="YAML config (default: the workspace's own).")
FileConfigOpt = typer.Option(None, "--config", "-c",  # commands without a workspace
                             help="YAML config (default: the embedded defaults).")
SetOpt = typer.Option(None, "--set", "-s", help="Override a config key: --set train.steps=100 "
                                                "(repeatable).")
ProgressOpt = typer.Option(True, "--progress/--no-progress", help="Show progress bars.")
# Pairing images with masks by a key read from their names (seglearn.data.importers.NamePattern)
ImagePatternOpt = typer.Option(
    None, "--image-pattern", help="Key of an image file name: a template such as '{id}_training.tif' "
                                  "or a regex with a group (?P<id>...) (default: the stem).")
MaskPatternOpt = typer.Option(
    None, "--mask-pattern", help="Key of a mask file name, paired with the image's key: e.g. "
                                 "'{id}_manual1.gif' or a regex with (?P<id>...).")


def workspace_config(ws, config: Optional[Path], sets: Optional[list[str]],
                     values: Optional[dict[str, Any]] = None, torch_checks: bool = True) -> Config:
    """The config a command runs with: --config if given, else the one saved at `init`; then the
    --set strings; then ``values``: {dotted key: value} of a command's own typed options (e.g.
    select's --budget), already parsed by typer, so set as they are (``config.with_values``),
    None meaning the option was not given. ``torch_checks=False`` for commands that build no
    model (``config.validate``)."""
    if config is not None:
        cfg = load_config(config, sets or [], torch_checks)
    else:
        saved = ws.meta("config") if ws is not None else None
        # the saved config holds its resolved post-processing sizes; without one, the defaults
        # (sizes following data.scale, also when --set changes it)
        cfg = apply_overrides(config_from_dict(saved, f"{ws.root}/seglearn.db (saved config)",
                                               torch_checks), sets or [], torch_checks) \
            if saved else load_config(None, sets or [], torch_checks)
    given = {k: v for k, v in (values or {}).items() if v is not None}
    # a refused value names the options the user typed (--budget for active.budget, ...)
    where = ", ".join(f"--{k.rsplit('.', 1)[-1].replace('_', '-')}" for k in given)
    return with_values(cfg, given, where=where) if given else cfg


def file_config(config: Optional[Path], sets: Optional[list[str]],
                torch_checks: bool = True) -> Config:
    """The config of a command without a workspace: --config (default: the embedded defaults),
    then --set."""
    return load_config(config, sets or [], torch_checks)
