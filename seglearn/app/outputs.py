"""Output folders of commands that write fixed names and replace them on a rerun (demo, simulate).

Such a command may write into a folder only when it is missing, empty, or holds nothing but what
the command itself writes there: then a rerun replaces its own earlier outputs and can never
replace a file of the user's that happens to share a name (``model.slq``, ``curves.csv``). Hidden
entries are ignored (the command's interrupted staging folders; a user's never share a name with
an output). A workspace's managed files are never an output folder.
"""

from __future__ import annotations

import re
from pathlib import Path

from seglearn.store.workspace import managed_by


def check_output_folder(folder: Path, own: str, what: str) -> None:
    """Raise ValueError unless ``folder`` may take the outputs of ``what``; ``own`` is a regular
    expression matching the (top-level) names ``what`` writes."""
    folder = Path(folder)
    owner = managed_by(folder)
    if owner is not None:
        raise ValueError(f"{what} output folder {folder} is inside the managed files of workspace "
                         f"{owner}; choose a folder outside it")
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{what} output folder {folder} is a file, not a folder")
    if not folder.is_dir():
        return
    foreign = sorted(p.name for p in folder.iterdir()
                     if not p.name.startswith(".") and not re.fullmatch(own, p.name))
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise ValueError(f"{what} output folder {folder} holds files that {what} did not write "
                         f"({shown}); {what} replaces its own outputs there on a rerun, so give it "
                         "a new or empty folder")
