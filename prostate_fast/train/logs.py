"""Training's per-epoch record: ``log.csv`` (one row per epoch) and ``accuracy.png``.

Internal to :mod:`prostate_fast.train`: :func:`write_log_timed` rewrites the CSV after every
epoch (under a unique temporary name, then renamed) and redraws the plot at the end and at most
once a minute.
"""

from __future__ import annotations

import csv
import math
import os
import time
from pathlib import Path

from .._outputs import temp_path

_LOG_COLUMNS = (
    "epoch",
    "lr",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "val_sensitivity",
    "val_specificity",
    "val_balanced_accuracy",
    "val_auc",
    "val_select",
    "val_both",
    "time_s",
    "samples_per_s",
)


def write_log_timed(work: Path, history: list[dict[str, float]], last: bool, t: float) -> float:
    """Write log.csv; redraw accuracy.png (0.5 s with matplotlib) at the end and once a minute."""
    tmp = temp_path(work / "log.csv")  # unique, never a fixed name (prostate_fast._outputs)
    with tmp.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(_LOG_COLUMNS)
        for row in history:
            w.writerow([row["epoch"]] + [fmt_number(row[k]) for k in _LOG_COLUMNS[1:]])
    os.replace(tmp, work / "log.csv")
    if not (last or time.time() - t > 60):
        return t
    from .._plot import line_chart_png

    def col(k: str) -> list[float]:
        return [math.nan if r[k] is None else r[k] for r in history]

    series = {
        "train accuracy": col("train_accuracy"),
        "validation accuracy": col("val_accuracy"),
        "validation sensitivity": col("val_sensitivity"),
        "validation specificity": col("val_specificity"),
    }
    line_chart_png(work / "accuracy.png", col("epoch"), series, title="accuracy per epoch")
    return time.time()


def fmt_number(v: float | None) -> str:
    """A log value: 6 significant digits, empty for None or NaN."""
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.6g}"
