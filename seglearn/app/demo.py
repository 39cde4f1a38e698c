"""`seglearn demo`: the embedded default, end to end on synthetic glands.

init (synthetic, 10% random start) -> two annotation rounds (suggestive ensemble, select, oracle
labels) -> final segmenter -> evaluation -> export to the integer-only runtime -> predict.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from seglearn.app.evaluate import evaluate_workspace
from seglearn.app.export import export_workspace
from seglearn.app.init import init_workspace
from seglearn.app.label import label_workspace
from seglearn.app.outputs import check_output_folder
from seglearn.app.predict import predict_files
from seglearn.app.select import select_workspace
from seglearn.app.train import train_workspace
from seglearn.config import Config

DEMO_ROUNDS = 2


@dataclass
class DemoRound:
    """One annotation round of the demo: what ``select`` suggested and how many the oracle labeled."""
    index: int        # 1-based
    of: int           # the number of rounds
    suggestions: Any  # app.select.SelectResult
    labeled: int


# What ``run_demo`` reports as it goes (``on_step(step, payload)``), for the CLI to print:
#   "workspace"  the new Workspace, after init
#   "round"      (index, rounds) before a round's training (1-based)
#   "suggested"  a DemoRound, after the oracle labeled its suggestions
#   "final"      None, before the final segmenter's training
#   "evaluated"  the EvalResult of the final segmenter on the synthetic test images
STEPS = ("workspace", "round", "suggested", "final", "evaluated")


def run_demo(directory: Path, cfg: Config, progress: bool = True, rounds: int = DEMO_ROUNDS,
             on_step: Callable[[str, Any], None] | None = None) -> dict:
    """Run the demo into ``directory``; returns its summary ({line name: text}: workspace,
    metrics, report, exported, integer ops, predicted, seconds). Prints nothing: ``on_step`` is
    told of each step of ``STEPS`` as it is done (the CLI prints them)."""
    step = on_step or (lambda name, payload: None)
    t0 = time.perf_counter()
    directory = Path(directory)
    check_output_folder(directory, r"workspace|model\.slq|predictions", "demo")
    ws = init_workspace(directory / "workspace", cfg, synthetic=cfg.synthetic.n,
                        seed=cfg.active.seed, force=True, progress=progress)
    step("workspace", ws)
    for r in range(rounds):
        step("round", (r + 1, rounds))
        train_workspace(ws, cfg, progress=progress)
        result = select_workspace(ws, cfg, progress=progress)
        step("suggested", DemoRound(r + 1, rounds, result, label_workspace(ws, oracle=True)))
    step("final", None)
    train_workspace(ws, cfg, final=True, progress=progress)
    ev = evaluate_workspace(ws, cfg, progress=progress)
    step("evaluated", ev)
    summary = {"workspace": str(ws.root),
               "metrics": ", ".join(f"{k} {v:.3f}" for k, v in ev.metrics.items()),
               "report": str(ev.report_dir)}
    summary.update(_export_and_predict(ws, directory, progress))
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    return summary


def _export_and_predict(ws, directory: Path, progress: bool) -> dict:
    """Export the final segmenter and segment the test images with the integer-only runtime."""
    model_path = directory / "model.slq"
    info = export_workspace(ws, model_path, overwrite=True)
    images = [ws.resolve(it.image_path) for it in ws.items(split="test")]
    out = directory / "predictions"
    # The demo's own folder: a rerun replaces its earlier outputs (the workspace too, force=True).
    n = predict_files(model_path, images, out, overlay=True, progress=progress, overwrite=True)
    ops = ", ".join(f"{k} x{v}" for k, v in info.get("ops", {}).items())
    exactness = "exact" if info.get("exact") else (
        f"{len(info.get('calibrated_inputs', []))} layer input(s) calibrated to 8 bits (float "
        "activations in training)")
    return {"exported": f"{model_path} ({info.get('bytes', 0) / 1e6:.2f} MB; {exactness})",
            "integer ops": ops, "predicted": f"{n} images -> {out}"}
