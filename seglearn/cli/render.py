"""Rich tables the commands print."""

from __future__ import annotations

from typing import Any, Iterable

from rich.console import Console
from rich.table import Table

console = Console(highlight=False)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1000 else f"{v:.1f}"
    return str(v)


def print_status(ws) -> None:
    s = ws.status()
    t = Table(title=f"workspace {ws.root}")
    t.add_column("what")
    t.add_column("value", justify="right")
    for key, val in s.items():
        if isinstance(val, dict):
            for k2, v2 in val.items():
                t.add_row(f"{key}.{k2}", _fmt(v2))
        elif isinstance(val, (list, tuple)):
            t.add_row(key, str(len(val)))
        else:
            t.add_row(key, _fmt(val))
    console.print(t)


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
