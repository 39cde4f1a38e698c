"""`seglearn simulate`: the whole annotation loop with the hidden masks as the oracle.

For every strategy and seed: start from the same random start set, then per round train the
suggestive ensemble (not needed by ``random``), select ``active.budget`` images, label them from
the oracle, and train + evaluate the final segmenter, until ``simulate.target_fraction`` of the pool
is labeled. Output: ``curves.csv``, ``curves.json`` and ``curves.png`` (object F1 and pixel Dice vs
the fraction labeled). The suggestive ensemble trains and scores at ``data.scale *
ensemble.scale`` and the final segmenter at ``data.scale`` (``config.role_scale``), as in the
commands.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Collection

from seglearn import atomic
from seglearn.app.evaluate import evaluate_workspace
from seglearn.app.init import init_workspace
from seglearn.app.label import oracle_entries
from seglearn.app.outputs import check_output_folder
from seglearn.app.select import select_workspace
from seglearn.app.train import train_workspace
from seglearn.config import Config, config_from_dict
from seglearn.report.sheets import learning_curves
from seglearn.store import Workspace
from seglearn.store.workspace import DB_NAME


@dataclass
class SimulateResult:
    rows: list[dict]
    csv_path: Path
    json_path: Path
    png_path: Path


def _point(ws, cfg: Config, progress: bool, resume: bool = False):
    _train(ws, cfg, True, progress, resume)
    return evaluate_workspace(ws, cfg, progress=progress, overlays=False)


def run_strategy(cfg: Config, ws_dir: Path, strategy: str, seed: int, source: dict,
                 progress: bool = True, on_point: Callable | None = None,
                 every_round: bool = True, eval_every: int = 1,
                 skip_start: bool = False, resume: bool = False,
                 done_rounds: Collection[int] = (), on_round: Callable | None = None
                 ) -> list[dict]:
    """One strategy, one seed: the annotation loop from the random start set to the target fraction.

    ``source`` is init's data source (``{"glas": DIR}`` or ``{"synthetic": N}``). With
    ``every_round`` the final segmenter is trained and evaluated after every ``eval_every``-th
    round (a learning curve), else only at the end; the end is always evaluated. ``skip_start``
    skips round 0 (the random start set, the same for every strategy of a seed: a caller that has
    it from another strategy need not train it again). ``on_point(ws, row, eval_result)`` sees
    every evaluation; ``on_round(ws, info)`` every annotation round once its labels are in
    (``info``: round, n_labeled, cpu_seconds and wall_seconds of its ensemble training and
    selection). Rows carry ``cpu_seconds`` and ``wall_seconds`` of their final segmenter's
    training and evaluation (``time.process_time``: every thread of this process).

    ``resume``: continue the loop in the workspace ``ws_dir`` left (a killed run; the state on
    disk is the labels and rounds of the workspace), see :func:`_reopen`; ``done_rounds``: rounds
    whose points the caller already has (not evaluated again).
    """
    if eval_every < 1:
        raise ValueError(f"eval_every must be >= 1, not {eval_every}")
    t0 = time.perf_counter()
    c = _with(cfg, strategy, int(seed))
    sim = cfg.simulate
    if resume and (Path(ws_dir) / DB_NAME).is_file():
        ws = Workspace.open(ws_dir)
        rnd = _reopen(ws)
    else:
        ws = init_workspace(ws_dir, c, seed=int(seed), force=True, progress=progress, **source)
        rnd, resume = 0, False
    n_pool = len(ws.items(split="pool"))
    rows: list[dict] = []
    while True:
        frac = len(ws.labeled("pool")) / n_pool
        done = frac >= sim.target_fraction - 1e-9 or not ws.unlabeled("pool") or (
            sim.rounds and rnd >= sim.rounds)
        scheduled = every_round and rnd % eval_every == 0 and not (skip_start and rnd == 0)
        if (scheduled or done) and rnd not in done_rounds:
            cpu, wall = time.process_time(), time.perf_counter()
            ev = _point(ws, c, progress, resume)
            row = {"strategy": strategy, "seed": int(seed), "round": rnd, "fraction": frac,
                   "n_labeled": len(ws.training_items()), **ev.metrics,
                   "final_steps": _final_steps(ws),
                   "seconds": time.perf_counter() - t0,
                   "cpu_seconds": time.process_time() - cpu,
                   "wall_seconds": time.perf_counter() - wall}
            rows.append(row)
            if on_point is not None:
                on_point(ws, row, ev)
        if done:
            ws.close()
            return rows
        # ceil, matching the stop test above: round() (42 of 85 for 50%) stopped one short of
        # the target and cost a whole extra round of 1 image.
        want = min(c.active.budget, len(ws.unlabeled("pool")),
                   max(1, math.ceil(sim.target_fraction * n_pool - 1e-9) - len(ws.labeled("pool"))))
        step_cfg = config_from_dict(c.to_dict())
        step_cfg.active.budget = want
        cpu, wall = time.process_time(), time.perf_counter()
        if strategy != "random":
            _train(ws, step_cfg, False, progress, resume)
        res = select_workspace(ws, step_cfg, progress=progress)
        with ws.writer():
            ws.add_labels(oracle_entries(ws, [r["item_id"] for r in res.rows]))
        rnd += 1
        resume = False  # what a killed run left is used up by its first round
        if on_round is not None:
            on_round(ws, {"strategy": strategy, "seed": int(seed), "round": rnd,
                          "n_labeled": len(ws.training_items()),
                          "cpu_seconds": time.process_time() - cpu,
                          "wall_seconds": time.perf_counter() - wall})


def _final_steps(ws) -> int | None:
    """Training steps of the newest final segmenter (summed over its members): what a minutes
    budget bought, so a curve shows whether its points had the same training."""
    rounds = [m.round_id for m in ws.models(role="final")]
    if not rounds:
        return None
    return sum(int((m.metrics or {}).get("steps") or 0)
               for m in ws.models(role="final", round_id=max(rounds)))


def _reopen(ws) -> int:
    """The loop's round in a workspace a killed run left: the number of suggestion rounds, after
    labeling the newest one's suggestions when the run died between select and label."""
    sugg = ws.suggestions()
    ids = sorted({s.round_id for s in sugg})
    if ids:
        unlabeled = {it.id for it in ws.unlabeled("pool")}
        pending = [s.item_id for s in sugg if s.round_id == ids[-1] and s.item_id in unlabeled]
        if pending:
            with ws.writer():
                ws.add_labels(oracle_entries(ws, pending))
    return len(ids)


def _train(ws, cfg: Config, final: bool, progress: bool, resume: bool) -> None:
    """train_workspace, or in a reopened loop (``resume``) what a killed run left undone: an
    interrupted round of the role (the newest of its kind) continues from its checkpoints, and a
    finished one trained on exactly the current labels and not yet used (the run died after
    training) is kept."""
    if resume:
        role = "final" if final else "suggestive"
        ours = [r for r in ws.rounds() if r.kind == f"train-{role}"]
        last = ours[-1] if ours else None
        if last is not None and not last.finished:
            train_workspace(ws, cfg, final=final, resume=True, progress=progress)
            return
        used = {s.round_id for s in ws.suggestions()} if not final else set()
        if last is not None and last.id not in used and \
                (last.metrics or {}).get("n_labeled") == len(ws.training_items()):
            return
    train_workspace(ws, cfg, final=final, progress=progress)


def simulate(cfg: Config, out: Path, glas: Path | None = None, progress: bool = True,
             synthetic: int | None = None) -> SimulateResult:
    out = Path(out)
    # curves.* and one workspace per strategy and seed (replaced on a rerun): nothing else
    check_output_folder(out, r"curves\.(csv|json|png)|[A-Za-z0-9_.-]+-seed-?[0-9]+", "simulate")
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    sim = cfg.simulate
    source = {"glas": glas} if glas else {"synthetic": synthetic or cfg.synthetic.n}

    def checkpoint(ws, row, ev) -> None:  # keep the CSV/JSON current while the loop runs
        rows.append(row)
        _write(out, rows, cfg)

    for seed in sim.seeds:
        for strategy in sim.strategies:
            run_strategy(cfg, out / f"{strategy}-seed{seed}", strategy, int(seed), source,
                         progress, on_point=checkpoint)
    csv_path, json_path = _write(out, rows, cfg)
    curves: dict[str, list] = {}
    # object F1, or pixel Dice where evaluate.metrics leaves object metrics out (thin structures)
    key, axis = ("f1", "object F1") if all("f1" in r for r in rows) else ("pixel_dice", "pixel Dice")
    for r in rows:
        curves.setdefault(r["strategy"], []).append((r["fraction"], r[key]))
    png = learning_curves(curves, out / "curves.png", axis,
                          title=f"simulated annotation ({len(sim.seeds)} seed(s))")
    return SimulateResult(rows, csv_path, json_path, png)


def _with(cfg: Config, strategy: str, seed: int) -> Config:
    c = config_from_dict(cfg.to_dict())
    c.active.strategy = strategy
    c.active.seed = seed
    c.train.seed = seed
    return c


def _write(out: Path, rows: list[dict], cfg: Config) -> tuple[Path, Path]:
    keys = sorted({k for r in rows for k in r}, key=lambda k: (k not in ("strategy", "seed",
                                                                          "round", "fraction"), k))
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(rows)
    csv_path = atomic.write_text(out / "curves.csv", buf.getvalue())
    json_path = atomic.write_text(out / "curves.json", json.dumps(
        {"config_hash": cfg.hash(), "config": cfg.to_dict(), "rows": rows}, indent=2))
    return csv_path, json_path
