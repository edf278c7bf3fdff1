"""PNG figures with matplotlib (Agg backend, imported lazily): accuracy curves, confusion, ROC."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._util import atomic_path

__all__ = ["confusion_png", "line_chart_png", "roc_png"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | os.PathLike[str]) -> Path:
    plt = _pyplot()
    path = Path(path)
    with atomic_path(path, overwrite=True) as tmp:
        fig.savefig(  # the tEXt Software chunk marks the PNG as ours (prostate_fast._outputs)
            tmp, format="png", dpi=100, bbox_inches="tight", metadata={"Software": "prostate-fast"}
        )
    plt.close(fig)
    return path


def line_chart_png(
    path: str | os.PathLike[str],
    x: Sequence[float],
    series: Mapping[str, Sequence[float]],
    *,
    title: str = "",
    xlabel: str = "epoch",
    ylabel: str = "accuracy",
    ylim: tuple[float, float] | None = (0.0, 1.0),
) -> Path:
    """Write a line chart (one line per entry of ``series``, with legend) to ``path``."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = ["-", "-", "--", ":", "-."]
    for i, (name, ys) in enumerate(series.items()):
        ax.plot(
            list(x),
            list(ys),
            styles[i % len(styles)],
            marker="." if len(x) < 40 else None,
            label=name,
        )
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    return _save(fig, path)


def confusion_png(
    path: str | os.PathLike[str],
    matrix: np.ndarray,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    *,
    title: str = "",
) -> Path:
    """Write a confusion-matrix heat map with counts (the last row/column may be totals)."""
    plt = _pyplot()
    m = np.asarray(matrix, dtype=float)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    shade = m.copy()
    shade[-1, :] = np.nan if len(row_labels) > 2 else shade[-1, :]
    shade[:, -1] = np.nan if len(col_labels) > 2 else shade[:, -1]
    ax.imshow(np.nan_to_num(shade, nan=0.0), cmap="Blues")
    top = np.nanmax(shade) if np.isfinite(shade).any() else 1.0
    for (r, c), value in np.ndenumerate(m):
        colour = "white" if np.isfinite(shade[r, c]) and shade[r, c] > top / 2 else "black"
        ax.text(c, r, f"{value:g}", ha="center", va="center", color=colour, fontsize=12)
    ax.set_xticks(range(len(col_labels)), col_labels)
    ax.set_yticks(range(len(row_labels)), row_labels)
    ax.set_xlabel("true diagnosis")
    ax.set_ylabel("screening test")
    ax.xaxis.set_label_position("top")
    ax.xaxis.tick_top()
    if title:
        ax.set_title(title, pad=30)
    return _save(fig, path)


def roc_png(
    path: str | os.PathLike[str],
    fpr: np.ndarray,
    tpr: np.ndarray,
    *,
    auc: float,
    point: tuple[float, float] | None = None,
    point_label: str = "threshold",
    title: str = "",
) -> Path:
    """Write an ROC curve (sensitivity vs 1 - specificity) with the chance line and a point."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], ":", color="grey", label="chance")
    ax.plot(fpr, tpr, "-", label=f"ROC (AUC = {auc:.3f})")
    if point is not None:
        ax.plot([point[0]], [point[1]], "o", color="red", label=point_label)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("1 - specificity (false positive rate)")
    ax.set_ylabel("sensitivity (true positive rate)")
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    return _save(fig, path)
