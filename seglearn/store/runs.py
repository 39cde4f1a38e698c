"""Rounds, models, the score cache, suggestions and metadata: the workspace's bookkeeping tables.

``Runs`` is owned by a ``Workspace`` (``ws.runs``), which hands it the three things it needs: the
connection, the workspace's write transaction (``tx(what)``: BEGIN IMMEDIATE, quick-checked
database, busy and integrity errors as WorkspaceError) and the root (to store paths relative to
it). It never imports workspace.py: workspace.py owns items and labels, this file everything the
loop records.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from .errors import WorkspaceError
from .records import MODEL_ROLES, ModelRow, PreAnnotation, Round, Suggestion, now, stored_path


def _default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def to_json(value: Any, what: str) -> str:
    """JSON text of ``value`` (numpy scalars/arrays allowed); NaN/inf are refused, not written as
    non-standard JSON."""
    try:
        return json.dumps(value, default=_default, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise WorkspaceError(f"{what} must be JSON-serialisable with finite numbers: {exc}") from exc


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise WorkspaceError(f"{what} must be a non-empty string, got {value!r}")
    return value


def _int(value: Any, what: str, lo: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise WorkspaceError(f"{what} must be an integer >= {lo}, got {value!r}")
    return int(value)


class Runs:
    """Rounds, models, scores, suggestions, meta and status of a workspace.

    ``conn``: the workspace's SQLite connection (reads); ``tx``: its transaction context manager
    (every write goes through it); ``root``: the workspace folder."""

    def __init__(self, conn: sqlite3.Connection,
                 tx: Callable[[str], AbstractContextManager[sqlite3.Connection]], root: Path):
        self._conn, self._tx, self.root = conn, tx, root

    # ---------------------------------------------------------------- rounds
    def start_round(self, kind: str, config_hash: str) -> int:
        """Open a new round (ids 1, 2, ...); returns its id."""
        with self._tx("start round") as conn:
            cur = conn.execute("INSERT INTO rounds (kind, config_hash, started) VALUES (?, ?, ?)",
                               (_text(kind, "round kind"), _text(config_hash, "config hash"), now()))
        return int(cur.lastrowid)

    def finish_round(self, round_id: int, metrics: dict) -> None:
        """Mark a round finished and record its metrics (a JSON object)."""
        if not isinstance(metrics, dict):
            raise WorkspaceError(f"round metrics must be a dict, got {type(metrics).__name__}")
        text = to_json(metrics, f"metrics of round {round_id}")
        with self._tx("finish round") as conn:
            cur = conn.execute("UPDATE rounds SET finished = ?, metrics = ? WHERE id = ?",
                               (now(), text, _int(round_id, "round id", 1)))
            if cur.rowcount != 1:
                raise WorkspaceError(f"unknown round {round_id} in workspace {self.root}")

    def rounds(self) -> list[Round]:
        rows = self._conn.execute(
            "SELECT id, kind, config_hash, started, finished, metrics FROM rounds ORDER BY id")
        return [Round(*r[:5], None if r[5] is None else json.loads(r[5])) for r in rows]

    def current_round(self) -> int:
        """The newest round id, 0 before any round."""
        return int(self._conn.execute("SELECT COALESCE(MAX(id), 0) FROM rounds").fetchone()[0])

    def _require_round(self, round_id: int) -> int:
        rid = _int(round_id, "round id", 1)
        if not self._conn.execute("SELECT 1 FROM rounds WHERE id = ?", (rid,)).fetchone():
            raise WorkspaceError(f"unknown round {round_id} in workspace {self.root}; "
                                 f"the current round is {self.current_round()}")
        return rid

    def _require_items(self, conn, ids: set[int], what: str) -> None:
        known: set[int] = set()
        ordered = sorted(ids)
        for start in range(0, len(ordered), 500):  # stay under SQLite's bound-parameter limit
            chunk = ordered[start:start + 500]
            known.update(r[0] for r in conn.execute(
                f"SELECT id FROM items WHERE id IN ({','.join('?' * len(chunk))})", chunk))
        if ids - known:
            raise WorkspaceError(f"{what} for unknown item ids {sorted(ids - known)[:10]} "
                                 f"in workspace {self.root}")

    # ---------------------------------------------------------------- models
    def add_model(self, round_id: int, role: str, member: int, path: str, config_hash: str,
                  scheme: dict, metrics: dict) -> int:
        """Record a trained model file (one ensemble member) of a round; returns its id."""
        if role not in MODEL_ROLES:
            raise WorkspaceError(f"unknown model role {role!r}; known: {', '.join(MODEL_ROLES)}")
        rid = self._require_round(round_id)
        member = _int(member, "ensemble member")
        path = os.fspath(path) if isinstance(path, os.PathLike) else path
        values = (rid, role, member, stored_path(self.root, _text(path, "model path")),
                  _text(config_hash, "config hash"), to_json(scheme, "model scheme"),
                  to_json(metrics, "model metrics"), now())
        with self._tx("add model") as conn:
            if conn.execute("SELECT 1 FROM models WHERE round_id = ? AND role = ? AND member = ?",
                            values[:3]).fetchone():
                raise WorkspaceError(f"round {rid} already has a {role} model member {member}")
            cur = conn.execute("INSERT INTO models (round_id, role, member, path, config_hash, scheme, "
                               "metrics, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", values)
        return int(cur.lastrowid)

    def models(self, role: str | None = None, round_id: int | None = None) -> list[ModelRow]:
        where, args = [], []
        if role is not None:
            if role not in MODEL_ROLES:
                raise WorkspaceError(f"unknown model role {role!r}; known: {', '.join(MODEL_ROLES)}")
            where.append("role = ?")
            args.append(role)
        if round_id is not None:
            where.append("round_id = ?")
            args.append(int(round_id))
        sql = ("SELECT id, round_id, role, member, path, config_hash, scheme, metrics, created FROM models"
               + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id")
        return [ModelRow(*r[:6], json.loads(r[6]), json.loads(r[7]), r[8])
                for r in self._conn.execute(sql, args)]

    # ---------------------------------------------------------------- scores
    def set_scores(self, model_version: str,
                   rows: Iterable[tuple[int, dict[str, float], np.ndarray]]) -> None:
        """Store per-item scores and descriptors of one model version (one transaction; an item's
        earlier entry for the same version is replaced)."""
        version = _text(model_version, "model version")
        values = []
        for item_id, scores, descriptor in rows:
            iid = _int(item_id, "item id", 1)
            if not isinstance(scores, dict) or not all(isinstance(k, str) for k in scores):
                raise WorkspaceError(f"scores of item {iid} must be a dict of name -> float")
            clean = {}
            for k, v in scores.items():
                try:
                    clean[k] = float(v)
                except (TypeError, ValueError):
                    raise WorkspaceError(f"score {k!r} of item {iid} is not a number: {v!r}") from None
                if not math.isfinite(clean[k]):
                    raise WorkspaceError(f"score {k!r} of item {iid} is {v}; scores must be finite")
            desc = np.asarray(descriptor, dtype=np.float32)
            if desc.ndim != 1:
                raise WorkspaceError(f"descriptor of item {iid} must be 1-D, got shape {desc.shape}")
            values.append((version, iid, to_json(clean, f"scores of item {iid}"),
                           desc.astype("<f4").tobytes(), int(desc.size)))
        with self._tx("set scores") as conn:
            self._require_items(conn, {v[1] for v in values}, "scores")
            conn.executemany("INSERT OR REPLACE INTO scores (model_version, item_id, scores, descriptor, "
                             "dim) VALUES (?, ?, ?, ?, ?)", values)

    def scores(self, model_version: str) -> dict[int, tuple[dict[str, float], np.ndarray]]:
        """item id -> (scores, float32 descriptor) for one model version ({} if none stored)."""
        return {iid: (sc, desc) for iid, sc, desc in self.iter_scores(model_version)}

    def iter_scores(self, model_version: str, block: int = 4096
                    ) -> Iterator[tuple[int, dict[str, float], np.ndarray]]:
        """(item id, scores, float32 descriptor) of one model version in item-id order, read
        ``block`` rows at a time: a pool of 10^6 items is never all in memory at once."""
        cur = self._conn.execute(
            "SELECT item_id, scores, descriptor, dim FROM scores WHERE model_version = ? "
            "ORDER BY item_id", (model_version,))
        while rows := cur.fetchmany(block):
            for iid, text, blob, dim in rows:
                if len(blob) != 4 * dim:
                    raise WorkspaceError(f"stored descriptor of item {iid} (model version "
                                         f"{model_version!r}) has {len(blob)} bytes, expected "
                                         f"{4 * dim}")
                yield int(iid), json.loads(text), np.frombuffer(blob, dtype="<f4").astype(np.float32)

    def scored_ids(self, model_version: str) -> set[int]:
        """Ids of the items with scores stored under ``model_version`` (what a resumed select
        skips), without reading the descriptors."""
        return {int(r[0]) for r in self._conn.execute(
            "SELECT item_id FROM scores WHERE model_version = ?", (model_version,))}

    def score_versions(self) -> list[str]:
        return [r[0] for r in self._conn.execute(
            "SELECT DISTINCT model_version FROM scores ORDER BY model_version")]

    # ---------------------------------------------------------------- suggestions
    def add_suggestions(self, round_id: int, rows: Iterable[dict]) -> None:
        """Store a round's ranked suggestions, replacing any stored for that round (one transaction)."""
        rid = self._require_round(round_id)
        values = []
        for row in rows:
            missing = {"rank", "item_id", "uncertainty", "coverage_gain", "strategy"} - set(row)
            if missing:
                raise WorkspaceError(f"suggestion row {row!r} lacks {sorted(missing)}")
            values.append((rid, _int(row["rank"], "suggestion rank"), _int(row["item_id"], "item id", 1),
                           float(row["uncertainty"]), float(row["coverage_gain"]),
                           _text(row["strategy"], "strategy")))
        ranks = [v[1] for v in values]
        if len(set(ranks)) != len(ranks):
            raise WorkspaceError(f"suggestion ranks of round {rid} repeat: {ranks}")
        with self._tx("add suggestions") as conn:
            self._require_items(conn, {v[2] for v in values}, "suggestions")
            conn.execute("DELETE FROM suggestions WHERE round_id = ?", (rid,))
            conn.executemany("INSERT INTO suggestions (round_id, rank, item_id, uncertainty, coverage_gain, "
                             "strategy) VALUES (?, ?, ?, ?, ?, ?)", values)

    def suggestions(self, round_id: int | None = None) -> list[Suggestion]:
        """Suggestions of one round (all rounds when None), ordered by round then rank."""
        sql = "SELECT round_id, rank, item_id, uncertainty, coverage_gain, strategy FROM suggestions"
        args: tuple = ()
        if round_id is not None:
            sql, args = sql + " WHERE round_id = ?", (int(round_id),)
        return [Suggestion(*r) for r in self._conn.execute(sql + " ORDER BY round_id, rank", args)]

    # ---------------------------------------------------------------- pre-annotations
    _PRE_COLS = ("id, item_id, round_id, mask_path, mask_sha256, geojson_path, geojson_sha256, "
                 "instances, model, created")

    def add_pre_annotation(self, round_id: int, item_id: int, mask_path, mask_sha256: str,
                           geojson_path=None, geojson_sha256: str | None = None,
                           instances: int = 0, model: str = "") -> int:
        """Record a pre-annotation written for ``item_id`` in ``round_id`` (replacing one written
        there before, e.g. by a rerun of select); returns its id. The checksums are those of the
        files as written: a label file with the same hash is the pre-annotation accepted as is."""
        rid = self._require_round(round_id)
        values = (_int(item_id, "item id", 1), rid, stored_path(self.root, os.fspath(mask_path)),
                  _text(mask_sha256, "mask checksum"),
                  None if geojson_path is None else stored_path(self.root, os.fspath(geojson_path)),
                  geojson_sha256, _int(instances, "instance count"), _text(model, "model"), now())
        with self._tx("add pre-annotation") as conn:
            self._require_items(conn, {values[0]}, "pre-annotation")
            cur = conn.execute(
                "INSERT INTO pre_annotations (item_id, round_id, mask_path, mask_sha256, geojson_path, "
                "geojson_sha256, instances, model, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (round_id, item_id) DO UPDATE SET mask_path = excluded.mask_path, "
                "mask_sha256 = excluded.mask_sha256, geojson_path = excluded.geojson_path, "
                "geojson_sha256 = excluded.geojson_sha256, instances = excluded.instances, "
                "model = excluded.model, created = excluded.created RETURNING id", values)
            pid = int(cur.fetchone()[0])
        return pid

    def pre_annotations(self, item_id: int | None = None) -> list[PreAnnotation]:
        """Pre-annotations (of one item when given), oldest first."""
        sql, args = f"SELECT {self._PRE_COLS} FROM pre_annotations", ()
        if item_id is not None:
            sql, args = sql + " WHERE item_id = ?", (int(item_id),)
        return [PreAnnotation(*r) for r in self._conn.execute(sql + " ORDER BY id", args)]

    # ---------------------------------------------------------------- meta and status
    def set_meta(self, key: str, value: Any) -> None:
        text = to_json(value, f"meta value {key!r}")
        with self._tx("set meta") as conn:
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                         (_text(key, "meta key"), text))

    def meta(self, key: str, default: Any = None) -> Any:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def status(self) -> dict:
        """Counts by split (total, labeled, unlabeled), rounds, models and the last round's metrics."""
        counts = {s: {"total": 0, "labeled": 0, "unlabeled": 0} for s in ("train", "pool", "test")}
        for split, has_label, n in self._conn.execute(
                "SELECT split, EXISTS (SELECT 1 FROM labels WHERE item_id = items.id) AS lab, COUNT(*) "
                "FROM items GROUP BY split, lab"):
            counts[split]["total"] += n
            counts[split]["labeled" if has_label else "unlabeled"] += n
        finished = [r for r in self.rounds() if r.finished is not None]
        return {
            "root": str(self.root),
            "items": sum(c["total"] for c in counts.values()),
            "splits": counts,
            "labeled": sum(c["labeled"] for c in counts.values()),
            "unlabeled": sum(c["unlabeled"] for c in counts.values()),
            "rounds": len(self.rounds()),
            "current_round": self.current_round(),
            "models": int(self._conn.execute("SELECT COUNT(*) FROM models").fetchone()[0]),
            "last_metrics": finished[-1].metrics if finished else None,
        }
