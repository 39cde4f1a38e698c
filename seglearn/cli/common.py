"""Options shared by several commands, and config resolution for a workspace."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from seglearn.config import Config, apply_overrides, config_from_dict, load_config

ConfigOpt = typer.Option(None, "--config", "-c", help="YAML config (default: the workspace's own).")
SetOpt = typer.Option(None, "--set", "-s", help="Override a config key: --set train.steps=100 "
                                                "(repeatable).")
ProgressOpt = typer.Option(True, "--progress/--no-progress", help="Show progress bars.")


def workspace_config(ws, config: Optional[Path], sets: Optional[list[str]]) -> Config:
    """The config a command runs with: --config if given, else the one saved at `init`; then --set."""
    if config is not None:
        return load_config(config, sets or [])
    saved = ws.meta("config") if ws is not None else None
    cfg = config_from_dict(saved, where=f"{ws.root}/seglearn.db (saved config)") if saved \
        else Config()
    return apply_overrides(cfg, sets or [])
