"""Rich tables the commands print."""

from __future__ import annotations

from typing import Any, Iterable

from rich.console import Console
from rich.table import Table

from seglearn.config import Config, get_key, valid_keys

console = Console(highlight=False)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1000 else f"{v:.1f}"
    return str(v)


def print_status(ws) -> None:
    """Counts by split, the rounds so far, models by role, and the last evaluation."""
    s = ws.status()
    t = Table(title=f"workspace {ws.root}")
    for col in ("split", "images", "labeled", "unlabeled"):
        t.add_column(col, justify="left" if col == "split" else "right")
    for split, c in s.get("splits", {}).items():
        if c.get("total"):
            t.add_row(split, str(c["total"]), str(c["labeled"]), str(c["unlabeled"]))
    console.print(t)
    rounds = ws.rounds()
    if rounds:
        rt = Table(title="rounds")
        for col in ("round", "kind", "finished", "summary"):
            rt.add_column(col)
        for r in rounds[-8:]:
            summary = ", ".join(f"{k}={_fmt(v)}" for k, v in (r.metrics or {}).items())
            rt.add_row(str(r.id), r.kind, "yes" if r.finished else "no (resume with --resume)",
                       summary)
        console.print(rt)
    models = ws.models()
    if models:
        by_role: dict = {}
        for m in models:
            by_role[m.role] = by_role.get(m.role, 0) + 1
        console.print("models: " + ", ".join(f"{n} {role}" for role, n in by_role.items()))
    last = ws.meta("last_metrics")
    if last:
        print_metrics(last, title=f"last evaluation (final segmenter of round {last.get('round')})")


def print_config(cfg) -> None:
    """One line: the config's hash (recorded with every round and model) and its keys that differ
    from the defaults."""
    default = Config()
    changed = [f"{k}={get_key(cfg, k)!r}" for k in valid_keys()
               if get_key(cfg, k) != get_key(default, k)]
    console.print(f"config {cfg.hash()}: " + (", ".join(changed) if changed else "the defaults"),
                  soft_wrap=True)


def print_check(report: dict) -> None:
    """``Workspace.check()``'s findings: the database, label files missing, orphan label files."""
    console.print(f"database: integrity_check {report['integrity']}")
    missing, orphans = report["missing"], report["orphans"]
    console.print(f"label files missing: {len(missing)}" + "".join(f"\n  {p}" for p in missing),
                  soft_wrap=True)
    # orphans: files of label transactions that never committed (a killed process); not labels
    console.print(f"orphan label files (never committed, safe to delete): {len(orphans)}"
                  + "".join(f"\n  {p}" for p in orphans), soft_wrap=True)


def print_models(rows: Iterable[dict], title: str) -> None:
    rows = list(rows)
    t = Table(title=title)
    keys = [k for k in ("round", "role", "member", "scheme", "steps", "loss", "seconds", "path")
            if any(k in r for r in rows)]
    for k in keys:
        t.add_column(k)
    for r in rows:
        t.add_row(*[_fmt(r.get(k, "")) for k in keys])
    console.print(t)


def print_suggestions(result) -> None:
    t = Table(title=f"round {result.round} suggestions ({result.strategy})")
    for col in ("rank", "item", "uncertainty", "coverage gain"):
        t.add_column(col, justify="right" if col != "item" else "left")
    for r in result.rows:
        t.add_row(str(r["rank"]), r["item"], f"{r['uncertainty']:.4f}", f"{r['coverage_gain']:.4f}")
    console.print(t)


def print_metrics(metrics: dict, title: str) -> None:
    t = Table(title=title)
    t.add_column("metric")
    t.add_column("value", justify="right")
    for k, v in metrics.items():
        if isinstance(v, (int, float)):
            t.add_row(k, _fmt(v))
    console.print(t)
