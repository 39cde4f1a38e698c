"""Rounds, models, scores, suggestions, meta and status."""

from __future__ import annotations

import numpy as np
import pytest

from seglearn.store import WorkspaceError


def test_rounds(ws):
    assert ws.current_round() == 0 and ws.rounds() == []
    r1 = ws.start_round("suggestive", "cfg1")
    r2 = ws.start_round("final", "cfg2")
    assert (r1, r2, ws.current_round()) == (1, 2, 2)
    ws.finish_round(r1, {"dice": np.float32(0.75), "per_member": np.array([1, 2])})
    rounds = ws.rounds()
    assert rounds[0].metrics == {"dice": 0.75, "per_member": [1, 2]} and rounds[0].finished
    assert rounds[1].finished is None and rounds[1].metrics is None
    assert ws.status()["last_metrics"] == {"dice": 0.75, "per_member": [1, 2]}
    with pytest.raises(WorkspaceError, match="unknown round 9"):
        ws.finish_round(9, {})
    with pytest.raises(WorkspaceError, match="finite"):
        ws.finish_round(r2, {"loss": float("nan")})
    with pytest.raises(WorkspaceError, match="round kind"):
        ws.start_round("", "cfg")
    assert ws.current_round() == 2


def test_models(ws):
    r = ws.start_round("suggestive", "h")
    ids = [ws.add_model(r, "suggestive", m, str(ws.root / "models" / f"m{m}.pt"), "h",
                        {"quantizer": "inq", "bits": 7}, {"val_dice": 0.5 + m}) for m in range(3)]
    fid = ws.add_model(r, "final", 0, "/elsewhere/f.pt", "h", {}, {})
    assert ids == [1, 2, 3] and fid == 4
    sug = ws.models(role="suggestive")
    assert [m.member for m in sug] == [0, 1, 2] and sug[1].path == "models/m1.pt"
    assert sug[2].scheme == {"quantizer": "inq", "bits": 7} and sug[2].metrics == {"val_dice": 2.5}
    assert [m.id for m in ws.models(round_id=r)] == [1, 2, 3, 4] and ws.models(round_id=r + 1) == []
    assert ws.models(role="final")[0].path == "/elsewhere/f.pt"
    with pytest.raises(WorkspaceError, match="already has a suggestive model member 1"):
        ws.add_model(r, "suggestive", 1, "x.pt", "h", {}, {})
    with pytest.raises(WorkspaceError, match="unknown model role"):
        ws.add_model(r, "teacher", 0, "x.pt", "h", {}, {})
    with pytest.raises(WorkspaceError, match="unknown round 5"):
        ws.add_model(5, "final", 0, "x.pt", "h", {}, {})
    assert ws.status()["models"] == 4


def test_scores_round_trip(pool_ws):
    ws = pool_ws
    rng = np.random.default_rng(0)
    rows = [(i, {"uncertainty": float(rng.random()), "area": float(i)}, rng.normal(size=16))
            for i in (1, 2, 3)]
    ws.set_scores("r1-abc", rows)
    got = ws.scores("r1-abc")
    assert sorted(got) == [1, 2, 3]
    for item_id, scores, desc in rows:
        s, d = got[item_id]
        assert s == scores
        assert d.dtype == np.float32 and np.array_equal(d, desc.astype(np.float32))
    assert ws.scores("other") == {}
    ws.set_scores("r1-abc", [(2, {"uncertainty": 9.0}, np.arange(3))])  # replaces item 2 only
    got = ws.scores("r1-abc")
    assert got[2][0] == {"uncertainty": 9.0} and np.array_equal(got[2][1], [0, 1, 2])
    assert got[1][0] == rows[0][1]
    ws.set_scores("r2", [(1, {}, np.zeros(0))])
    assert ws.score_versions() == ["r1-abc", "r2"] and got[3][1].shape == (16,)


@pytest.mark.parametrize("row, message", [
    ((99, {"u": 1.0}, np.zeros(2)), r"unknown item ids \[99\]"),
    ((1, {"u": float("inf")}, np.zeros(2)), "must be finite"),
    ((1, {"u": "high"}, np.zeros(2)), "not a number"),
    ((1, {"u": 1.0}, np.zeros((2, 2))), "must be 1-D"),
])
def test_bad_scores_store_nothing(pool_ws, row, message):
    with pytest.raises(WorkspaceError, match=message):
        pool_ws.set_scores("v", [(2, {"u": 0.1}, np.zeros(2)), row])
    assert pool_ws.scores("v") == {}


def test_suggestions(pool_ws):
    ws = pool_ws
    r = ws.start_round("suggestive", "h")
    rows = [dict(rank=k, item_id=i, uncertainty=0.1 * i, coverage_gain=1.0 / (k + 1), strategy="suggestive")
            for k, i in enumerate([3, 1])]
    ws.add_suggestions(r, rows)
    got = ws.suggestions(r)
    assert [(s.rank, s.item_id, s.strategy) for s in got] == [(0, 3, "suggestive"), (1, 1, "suggestive")]
    assert got[0].uncertainty == pytest.approx(0.3) and got[1].coverage_gain == 0.5
    ws.add_suggestions(r, rows[:1])  # recomputing a round's selection replaces it
    assert len(ws.suggestions(r)) == 1
    r2 = ws.start_round("suggestive", "h")
    ws.add_suggestions(r2, [dict(rows[1], rank=0)])
    assert [(s.round_id, s.item_id) for s in ws.suggestions()] == [(1, 3), (2, 1)]
    with pytest.raises(WorkspaceError, match="ranks of round 2 repeat"):
        ws.add_suggestions(r2, [rows[0], dict(rows[1], rank=0)])
    with pytest.raises(WorkspaceError, match=r"suggestions for unknown item ids \[77\]"):
        ws.add_suggestions(r2, [dict(rows[0], item_id=77)])
    assert [s.item_id for s in ws.suggestions(r2)] == [1]  # unchanged by the failed calls
    with pytest.raises(WorkspaceError, match="lacks"):
        ws.add_suggestions(r2, [{"rank": 0}])
    with pytest.raises(WorkspaceError, match="unknown round 7"):
        ws.add_suggestions(7, [])


def test_meta(ws):
    ws.set_meta("config", {"a": [1, 2]})
    ws.set_meta("config", {"a": [3]})
    assert ws.meta("config") == {"a": [3]}
    with pytest.raises(WorkspaceError, match="JSON"):
        ws.set_meta("bad", object())


# ---------------------------------------------------------------- Runs composed into Workspace

def test_runs_is_owned_and_its_writes_are_workspace_transactions(pool_ws, monkeypatch):
    """``ws.runs`` writes through the workspace's own transaction: its commit hook runs, and a
    failure there rolls the round back; the Workspace names are shortcuts to the same object."""
    from seglearn.store.runs import Runs

    ws = pool_ws
    assert isinstance(ws.runs, Runs) and ws.runs.root == ws.root
    seen = []

    def boom(self, what):
        seen.append(what)
        raise RuntimeError("killed at commit")

    monkeypatch.setattr(type(ws), "_before_commit", boom)
    with pytest.raises(RuntimeError, match="killed at commit"):
        ws.runs.start_round("suggestive", "cfg")
    with pytest.raises(RuntimeError, match="killed at commit"):
        ws.set_meta("k", 1)
    assert seen == ["start round", "set meta"]
    assert ws.runs.current_round() == 0 and ws.meta("k") is None  # nothing committed
    monkeypatch.undo()
    rid = ws.runs.start_round("suggestive", "cfg")
    assert (rid, ws.current_round()) == (1, 1) and ws.rounds() == ws.runs.rounds()
    ws.set_meta("k", [1, 2])
    assert ws.runs.meta("k") == [1, 2]


def test_runs_stores_paths_relative_to_the_root(ws, tmp_path):
    rid = ws.start_round("suggestive", "cfg")
    ws.add_model(rid, "suggestive", 0, ws.root / "models" / "m0.pt", "cfg", {}, {})
    outside = tmp_path / "elsewhere" / "m1.pt"
    ws.runs.add_model(rid, "suggestive", 1, outside, "cfg", {}, {})
    ws.add_model(rid, "suggestive", 2, "models/m2.pt", "cfg", {}, {})
    assert [m.path for m in ws.models()] == ["models/m0.pt", str(outside), "models/m2.pt"]


def test_workspace_shortcuts_keep_the_runs_signatures():
    import inspect

    from seglearn.store import Workspace
    from seglearn.store.runs import Runs

    for name in ("start_round", "add_model", "set_scores", "add_pre_annotation", "meta", "status"):
        assert inspect.signature(getattr(Workspace, name)) == inspect.signature(getattr(Runs, name))
        assert getattr(Workspace, name).__doc__ == getattr(Runs, name).__doc__


def test_a_dropped_workspace_is_freed_at_once(tmp_path):
    """No reference cycle through ``ws.runs``: dropping the last reference frees the Workspace
    (and so its connection and folder lock) without waiting for the garbage collector."""
    import gc
    import weakref

    from seglearn.store import Workspace

    Workspace.create(tmp_path / "ws").close()
    ws = Workspace.open(tmp_path / "ws")
    ws.start_round("suggestive", "cfg")
    assert ws.runs.current_round() == 1
    ref = weakref.ref(ws)
    gc.disable()
    try:
        del ws
        assert ref() is None
    finally:
        gc.enable()
