"""Turn the errors a user can cause into one clear paragraph and a non-zero exit, no traceback.

Set SEGLEARN_DEBUG=1 to see the traceback anyway.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import sys
from typing import Callable

from rich.console import Console

err_console = Console(stderr=True, highlight=False)

# Errors raised for bad input: every seglearn error type derives from ValueError (ConfigError,
# DataError, WorkspaceError, CheckpointError, SlqFormatError ...); OSError covers missing and
# unreadable files; sqlite3.DatabaseError a damaged workspace database.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, sqlite3.DatabaseError)


def friendly(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - filtered just below
            # seglearn's own error types (WorkspaceError, DataError, ...) are user-facing by design.
            ours = type(e).__module__.startswith("seglearn.")
            if os.environ.get("SEGLEARN_DEBUG") or not (ours or isinstance(e, USER_ERRORS)):
                raise
            msg = str(e) or type(e).__name__
            if isinstance(e, OSError) and e.filename and str(e.filename) not in msg:
                msg = f"{e.filename}: {msg}"
            err_console.print(f"[bold red]error:[/] {msg}", soft_wrap=True)
            sys.exit(2)
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]: committed work is kept; "
                              "`seglearn train --resume` continues an interrupted training")
            sys.exit(130)

    return wrapper
