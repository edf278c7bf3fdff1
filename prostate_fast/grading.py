"""The evaluation of a model of several classes: per-class rates, confusion matrix, slide grades.

:func:`class_section` is what :func:`~prostate_fast.evaluate.evaluate_predictions` adds to its
report when the model has more than two classes, and :func:`class_section_text` prints it:

* each tile's *decided* class (:func:`~prostate_fast.metrics.decided_classes`): the most probable
  positive class when the screening score reaches the threshold, else the most probable negative
  one, so the per-class view agrees with the screening test;
* each class's one-vs-rest precision, recall and F1, and the C x C confusion matrix (rows true
  class, columns decided class), from :func:`~prostate_fast.metrics.class_metrics`;
* each slide's *primary grade* (:func:`~prostate_fast.metrics.primary_grades`): the most frequent
  Gleason (positive) class among its cancer tiles, the more severe on a tie, benign when it has
  none; from the true labels and from the decided classes, on the scale of
  :func:`~prostate_fast.metrics.grade_scale` (benign < gleason3 < gleason4 < gleason5);
* the quadratic weighted kappa of the two over the slides
  (:func:`~prostate_fast.metrics.quadratic_weighted_kappa`, equal to scikit-learn's
  ``cohen_kappa_score(weights="quadratic")`` on the full scale). NaN ("n/a") when undefined, e.g.
  one slide.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .metrics import (
    class_metrics,
    decided_classes,
    grade_scale,
    primary_grades,
    quadratic_weighted_kappa,
)

__all__ = ["class_section", "class_section_text"]


def _na(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def _none(v: Any) -> Any:
    """NaN as None (JSON null)."""
    return None if isinstance(v, float) and math.isnan(v) else v


def class_section(
    y_idx: np.ndarray,
    prob: np.ndarray,
    slides: np.ndarray,
    classes: list[str],
    positive: Sequence[str],
    threshold: float,
) -> dict[str, Any]:
    """The per-class section of an evaluation of several classes (JSON-able; None where undefined).

    Parameters
    ----------
    y_idx : ndarray of int, shape (n,)
        True class index of each tile.
    prob : ndarray, shape (n, C)
        Class probabilities.
    slides : ndarray of str, shape (n,)
        Slide of each tile.
    classes, positive : sequence of str
        Class names (the columns of ``prob``) and the positive ones.
    threshold : float
        The screening threshold (:func:`~prostate_fast.metrics.decided_classes`).

    Returns
    -------
    dict
        ``names``, ``matrix`` (C x C, rows true class, columns decided class), ``per_class``
        (name -> precision, recall, f1, support), ``grade_scale`` (class names, ascending),
        ``primary_grade`` (slide -> truth, predicted class name) and ``kappa`` (quadratic
        weighted, over the slides).
    """
    decided = decided_classes(prob, classes, threshold, positive)
    matrix, rows = class_metrics(y_idx, decided, classes)
    scale = [classes[i] for i in grade_scale(classes)]
    truth, pred = primary_grades(y_idx, slides, classes), primary_grades(decided, slides, classes)
    kappa = quadratic_weighted_kappa(list(truth.values()), list(pred.values()), len(classes))
    grades = {s: {"truth": scale[truth[s]], "predicted": scale[pred[s]]} for s in truth}
    rows = {c: {k: _none(v) for k, v in r.items()} for c, r in rows.items()}
    out = {"names": classes, "matrix": matrix.tolist(), "per_class": rows, "grade_scale": scale}
    return {**out, "primary_grade": grades, "kappa": _none(kappa)}


def class_section_text(g: dict[str, Any]) -> str:
    """The per-class section of the report (empty for two classes)."""
    if not g:
        return ""
    w = max(9, *map(len, g["names"])) + 2
    lines = ["\nper class, one-vs-rest", "class".ljust(w) + "precision   recall       F1  support"]
    for n, r in g["per_class"].items():
        rates = "".join(_na(r[k]).rjust(9) for k in ("precision", "recall", "f1"))
        lines.append(n.ljust(w) + rates + str(r["support"]).rjust(9))
    lines.append("\nconfusion matrix: rows true class, columns decided class")
    lines.append(" " * w + "".join(n.rjust(w) for n in g["names"]))
    for n, row in zip(g["names"], g["matrix"], strict=True):
        lines.append(n.ljust(w) + "".join(str(v).rjust(w) for v in row))
    scale, kappa = " < ".join(g["grade_scale"]), _na(g["kappa"])
    n = len(g["primary_grade"])
    lines.append(
        f"\nprimary grade of {n} slide(s), scale {scale}: quadratic weighted kappa {kappa}"
    )
    grades = g["primary_grade"].items()
    lines += [f"  {s}: truth {v['truth']}, predicted {v['predicted']}" for s, v in grades]
    return "\n".join(lines) + "\n"
