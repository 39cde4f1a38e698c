"""The workspace datastore: a folder plus an SQLite database of items, labels, rounds and models.

    from seglearn.store import Workspace, WorkspaceError, ItemRecord, LabelEntry
    ws = Workspace.create("ws")            # or Workspace.open("ws")
    ids = ws.add_items([ItemRecord("a", "images/a.png", "pool", 64, 64, sha)])
    ws.add_labels([LabelEntry(ids[0], mask, source="expert", round=1)])   # all or nothing
    ws.image_file(ids[0])                  # the image's path, refused if edited since import
    ws.backup("copy.db")                   # SQLite online backup; DamagedDatabaseError if damaged
"""

from .errors import WorkspaceError
from .integrity import DamagedDatabaseError
from .records import (LABEL_SOURCES, MODEL_ROLES, SPLITS, Item, ItemRecord, Label, LabelEntry,
                      ModelRow, PreAnnotation, Round, SlideTile, Suggestion)
from .schema import SCHEMA_VERSION
from .workspace import DB_NAME, LOCK_NAME, SUBDIRS, Workspace

__all__ = ["Workspace", "WorkspaceError", "DamagedDatabaseError", "ItemRecord", "LabelEntry", "Item",
           "Label", "SlideTile", "Round", "ModelRow", "Suggestion", "PreAnnotation", "SPLITS", "LABEL_SOURCES", "MODEL_ROLES", "SCHEMA_VERSION",
           "DB_NAME", "LOCK_NAME", "SUBDIRS"]
