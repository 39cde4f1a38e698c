"""`seglearn demo`: the embedded default, end to end on synthetic glands.

init (synthetic, 10% random start) -> two annotation rounds (suggestive ensemble, select, oracle
labels) -> final segmenter -> evaluation -> export to the integer-only runtime -> predict.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from seglearn.config import Config

console = Console(highlight=False)

DEMO_ROUNDS = 2


def run_demo(directory: Path, cfg: Config, progress: bool = True, rounds: int = DEMO_ROUNDS) -> dict:
    from seglearn.app.evaluate import evaluate_workspace
    from seglearn.app.init import init_workspace
    from seglearn.app.label import label_workspace
    from seglearn.app.select import select_workspace
    from seglearn.app.train import train_workspace
    from seglearn.cli.render import print_metrics, print_suggestions

    t0 = time.perf_counter()
    from seglearn.app.outputs import check_output_folder

    directory = Path(directory)
    check_output_folder(directory, r"workspace|model\.slq|predictions", "demo")
    ws_path = directory / "workspace"
    console.rule("[bold]seglearn demo[/]: synthetic glands")
    ws = init_workspace(ws_path, cfg, synthetic=cfg.synthetic.n, seed=cfg.active.seed, force=True,
                        progress=progress)
    from seglearn.cli.render import print_status

    print_status(ws)
    for r in range(rounds):
        console.rule(f"annotation round {r + 1}/{rounds}")
        train_workspace(ws, cfg, progress=progress)
        result = select_workspace(ws, cfg, progress=progress)
        print_suggestions(result)
        n = label_workspace(ws, oracle=True)
        console.print(f"oracle labeled {n} suggested images; sheet: {result.sheet_path}")
    console.rule("final segmenter")
    train_workspace(ws, cfg, final=True, progress=progress)
    ev = evaluate_workspace(ws, cfg, progress=progress)
    print_metrics(ev.metrics, title=f"final segmenter on {ev.n_images} synthetic test images")
    summary = {"workspace": str(ws.root),
               "metrics": ", ".join(f"{k} {v:.3f}" for k, v in ev.metrics.items()),
               "report": str(ev.report_dir)}
    summary.update(_export_and_predict(ws, directory, progress))
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    console.rule("summary")
    for k, v in summary.items():
        console.print(f"{k}: {v}")
    return summary


def _export_and_predict(ws, directory: Path, progress: bool) -> dict:
    """Export the final segmenter and segment the test images with the integer-only runtime."""
    from seglearn.app.export import export_workspace
    from seglearn.app.predict import predict_files

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
