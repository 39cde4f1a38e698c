"""Pictures people would rather see than read: suggestion sheets, overlays, learning curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from skimage.color import label2rgb  # noqa: E402
from skimage.segmentation import find_boundaries  # noqa: E402

from seglearn import atomic  # noqa: E402


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic.output(path) as fh:
            fig.savefig(fh, format=path.suffix.lstrip(".") or "png", dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def suggestion_sheet(rows: list[dict], path: Path, title: str) -> Path:
    """One row per suggestion: the image, its uncertainty heat map, the ensemble's mean prediction.

    rows: dict(rank, item, image uint8 (H,W,3), uncertainty_map (H,W), mean_prob (H,W),
    uncertainty float, coverage_gain float).
    """
    n = max(len(rows), 1)
    # constrained layout: the default margins leave 12% of a tall sheet blank above the first row
    fig, axes = plt.subplots(n, 3, figsize=(9, 3 * n), squeeze=False, layout="constrained")
    for r, ax in zip(rows, axes):
        ax[0].imshow(r["image"])
        ax[0].set_title(f"#{r['rank']} {r['item']}", fontsize=9)
        im = ax[1].imshow(r["uncertainty_map"], cmap="magma")
        ax[1].set_title(f"uncertainty {r['uncertainty']:.4f}", fontsize=9)
        fig.colorbar(im, ax=ax[1], fraction=0.046)
        ax[2].imshow(r["mean_prob"], cmap="viridis", vmin=0, vmax=1)
        ax[2].set_title(f"mean prediction; cover gain {r['coverage_gain']:.3f}", fontsize=9)
        for a in ax:
            a.axis("off")
    fig.suptitle(title)
    return _save(fig, path)


def overlay(image: np.ndarray, pred: np.ndarray, gt: np.ndarray | None = None) -> np.ndarray:
    """uint8 RGB: predicted instances tinted, ground-truth outlines in green."""
    out = label2rgb(pred, image=image, bg_label=0, alpha=0.35, image_alpha=1.0)
    out = (np.clip(out, 0, 1) * 255).astype(np.uint8)
    if gt is not None:
        out[find_boundaries(gt, mode="inner")] = (0, 255, 0)
    out[find_boundaries(pred, mode="inner")] = (255, 255, 0)
    return out


def save_overlay(path: Path, image: np.ndarray, pred: np.ndarray, gt: np.ndarray | None = None,
                 title: str = "") -> Path:
    fig, ax = plt.subplots(figsize=(6, 6 * image.shape[0] / max(image.shape[1], 1)))
    ax.imshow(overlay(image, pred, gt))
    ax.set_title(title or "prediction (yellow), ground truth (green)", fontsize=9)
    ax.axis("off")
    return _save(fig, path)


def learning_curves(curves: dict[str, list[tuple[float, float]]], path: Path, metric: str,
                    title: str = "") -> Path:
    """curves: name -> [(fraction labeled, metric), ...] (several seeds: points averaged per x)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, pts in sorted(curves.items()):
        pts = np.asarray(sorted(pts), dtype=float)
        xs = np.unique(pts[:, 0])
        mean = np.array([pts[pts[:, 0] == x, 1].mean() for x in xs])
        std = np.array([pts[pts[:, 0] == x, 1].std() for x in xs])
        _mean_band(ax, name, xs, mean, std)
    _curve_axes(ax, metric)
    ax.set_title(title or f"{metric} vs annotation")
    return _save(fig, path)


def _mean_band(ax, name: str, xs, mean, std) -> None:
    """A mean curve with its +-std band shaded (std None: no band)."""
    line, = ax.plot(xs, mean, marker="o", label=name)
    if std is not None:
        ax.fill_between(xs, mean - std, mean + std, alpha=0.15, color=line.get_color())


def _curve_axes(ax, metric: str) -> None:
    ax.set_xlabel("fraction of the pool labeled")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def spread_panels(panels: dict[str, dict[str, list[dict]]], path: Path, title: str = "",
                  references: dict[str, float] | None = None) -> Path:
    """One panel per metric (e.g. F1, ObjDice): per strategy the mean over seeds at each fraction
    with the +-std band shaded; ``references``: metric -> full-data value (dashed line).

    panels: metric -> strategy -> [{fraction, mean, std (None for one seed)}] (the ``curve`` of
    ``seglearn.report.alstats.summarize``)."""
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for ax, (metric, curves) in zip(axes[0], panels.items()):
        for name, pts in sorted(curves.items()):
            xs = np.array([p["fraction"] for p in pts], dtype=float)
            mean = np.array([p["mean"] for p in pts], dtype=float)
            std = np.array([np.nan if p["std"] is None else p["std"] for p in pts], dtype=float)
            _mean_band(ax, name, xs, mean, None if np.isnan(std).all() else np.nan_to_num(std))
        ref = (references or {}).get(metric)
        if ref is not None:
            ax.axhline(ref, color="black", linestyle="--", linewidth=1, label="full data")
        _curve_axes(ax, metric)
    if title:
        fig.suptitle(title)
    return _save(fig, path)
