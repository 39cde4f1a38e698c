"""The one error type of the workspace datastore."""

from __future__ import annotations


class WorkspaceError(Exception):
    """A workspace cannot be created, opened or changed as asked.

    The message names the workspace (or item, or file) and says what to do, so the CLI can print it
    as is. Bad arguments (a mask of the wrong size, an unknown item) raise it too, so callers have one
    error to catch around every store call.
    """
