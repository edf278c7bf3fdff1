"""Evaluate a model as a screening test: confusion matrices per slide and pooled, metrics, ROC, threshold.

The study reports, per slide and pooled, a confusion matrix laid out as a screening test against the
true diagnosis, with totals::

                      true diagnosis
                      cancer   benign   total
    test positive       TP       FP      TP+FP
    test negative       FN       TN      FN+TN
    total              TP+FN    FP+TN      n

A tile is *test positive* when its screening score reaches the threshold. The score is the
probability of the positive classes (every class except ``"benign"`` unless told otherwise), which is
p(cancer) for today's two classes and stays meaningful when more cancer types are added. A false
negative is far worse than a false positive, so the threshold is chosen on the validation split to
reach a target sensitivity (default 0.99), not left at 0.5.

This module is the evaluation stage; the metrics themselves (confusion counts and rates, ROC curve,
AUC, the threshold for a target sensitivity) belong to :mod:`prostate_fast.metrics`, shared with
training, and are re-exported here. :func:`evaluate_predictions` turns predictions into an
:class:`Evaluation` (pooled and per slide, as tables and JSON); :func:`evaluate_model` runs an
exported model (``prostate_fast.train``) on a dataset split, chooses the threshold on val and writes
the report folder atomically. MXNet is imported only there.

Honest validation (issue 14):

* the threshold is tuned on the calibration split (``val``); reporting another split (``test``)
  gives an unbiased estimate. Reporting ``val`` itself with the tuned threshold is allowed but
  labelled "optimistic (tuned on this split)" in the report (text and JSON
  ``threshold_optimistic``) and warned about;
* a split (reported or calibration) with fewer than :data:`MIN_CLASS_TILES` tiles of a class
  gives a :class:`SmallSplitWarning` (``prostate-fast: warning: ...`` in the CLI); AUC and the
  threshold are "n/a" when a class is absent;
* the pooled AUC, sensitivity and specificity carry bootstrap 95 % percentile intervals
  (:func:`~prostate_fast.metrics.bootstrap_intervals`: slides resampled when there are several);
* ``predictions.csv`` holds full-precision scores (``repr`` of float64: they round-trip), so
  the AUC recomputed from it equals the reported one exactly.

Several classes (more than two): the report adds per-class precision, recall and F1, the C x C
confusion matrix and the quadratic weighted kappa of the slides' primary grades
(:mod:`prostate_fast.grading`).
"""

from __future__ import annotations

import csv
import math
import os
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._util import csv_cell
from .errors import DatasetError
from .grading import class_section, class_section_text
from .metrics import (
    MIN_CLASS_TILES,
    Confusion,
    SmallSplitWarning,
    bootstrap_intervals,
    confusion,
    roc_auc,
    roc_curve,
    screening_labels,
    screening_score,
    sensitivity_at_specificity,
    threshold_for_sensitivity,
)

if TYPE_CHECKING:
    from .model import ModelInfo

__all__ = [
    "MIN_CLASS_TILES",
    "Confusion",
    "Evaluation",
    "SmallSplitWarning",
    "evaluate_model",
    "evaluate_predictions",
    "roc_auc",
    "roc_curve",
    "screening_score",
    "sensitivity_at_specificity",
    "threshold_for_sensitivity",
]


def _na(v: float, fmt: str = ".4f") -> str:
    """``v`` formatted, or "n/a" when it is NaN (a class absent)."""
    return "n/a" if isinstance(v, float) and math.isnan(v) else format(v, fmt)


def _sides(classes: Sequence[str], mask: np.ndarray) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The positive and the negative class names of a positive-class ``mask``."""
    pos = tuple(c for c, m in zip(classes, mask, strict=True) if m)
    return pos, tuple(c for c, m in zip(classes, mask, strict=True) if not m)


def _class_notes(y: np.ndarray, classes: Sequence[str], mask: np.ndarray, where: str) -> list[str]:
    """Warnings for a split whose binary truth ``y`` has fewer than MIN_CLASS_TILES of a class."""
    notes = []
    pos, neg = ("+".join(side) for side in _sides(classes, mask))
    for name, n in ((pos, int(np.sum(y))), (neg, int(np.sum(~y)))):
        if n == 0:
            notes.append(f"{where} has no {name} tile: AUC and threshold are not available")
        elif n < MIN_CLASS_TILES:
            notes.append(
                f"{where} has only {n} {name} tile(s) (< {MIN_CLASS_TILES}): its AUC, "
                "threshold and rates are unreliable"
            )
    return notes


@dataclass(frozen=True)
class Evaluation:
    """The screening evaluation of one set of predictions (see :func:`evaluate_predictions`)."""

    pooled: Confusion
    per_slide: dict[str, Confusion]
    auc: float
    per_slide_auc: dict[str, float]
    threshold: float
    target_sensitivity: float
    threshold_for_target: float
    positive: tuple[str, ...]
    negative: tuple[str, ...]
    fpr: np.ndarray = field(repr=False)
    tpr: np.ndarray = field(repr=False)
    intervals: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    grading: dict[str, Any] = field(default_factory=dict)  # several classes: class_section

    def metrics(self) -> dict[str, Any]:
        """Pooled counts, rates, AUC and thresholds."""
        out: dict[str, Any] = dict(self.pooled.metrics())
        out.update(auc=self.auc, threshold=self.threshold)
        out.update(target_sensitivity=self.target_sensitivity)
        out.update(threshold_for_target=self.threshold_for_target)
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dictionary (NaN written as null)."""

        def clean(d: dict[str, Any]) -> dict[str, Any]:
            return {
                k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()
            }

        boot = {
            k: ([None if math.isnan(x) else x for x in v] if isinstance(v, list) else v)
            for k, v in self.intervals.items()
        }
        return {
            "positive": list(self.positive),
            "negative": list(self.negative),
            "pooled": clean(self.metrics()),
            "bootstrap": boot,
            "warnings": list(self.notes),
            "matrix": self.pooled.matrix().tolist(),
            **({"classes": self.grading} if self.grading else {}),
            "per_slide": {
                s: clean(
                    {**c.metrics(), "auc": self.per_slide_auc[s], "matrix": c.matrix().tolist()}
                )
                for s, c in self.per_slide.items()
            },
        }

    def report(self) -> str:
        """The study's tables (pooled, then per slide) with the metrics, as text."""
        pos, neg = "+".join(self.positive), "+".join(self.negative)

        def block(title: str, c: Confusion, auc: float) -> str:
            rates = (
                f"accuracy {_na(c.accuracy)}  sensitivity {_na(c.sensitivity)}  "
                f"specificity {_na(c.specificity)}  PPV {_na(c.ppv)}  NPV {_na(c.npv)}  "
                f"AUC {_na(auc)}"
            )
            return f"{title}\n{c.table(pos, neg)}\n{rates}\n"

        head = "".join(f"warning: {n}\n" for n in self.notes) + (
            f"threshold {self.threshold:.6g} (positive when p({pos}) >= threshold); "
            f"threshold reaching sensitivity {self.target_sensitivity:g} here: "
            f"{_na(self.threshold_for_target, '.6g')}\n\n"
        )
        pooled = block(f"all slides ({self.pooled.n} tiles)", self.pooled, self.auc)
        parts = [pooled + self._interval_line() + class_section_text(self.grading)]
        for s, c in self.per_slide.items():
            parts.append(block(f"slide {s} ({c.n} tiles)", c, self.per_slide_auc[s]))
        return head + "\n".join(parts)

    def _interval_line(self) -> str:
        """The bootstrap intervals of the pooled AUC, sensitivity and specificity, as text."""
        b = self.intervals
        if not b:
            return ""
        unit = f"{b['clusters']} slides" if b["unit"] == "slide" else "tiles"
        names = {"auc": "AUC", "sensitivity": "sensitivity", "specificity": "specificity"}
        ci = "  ".join(f"{t} [{_na(b[k][0])}, {_na(b[k][1])}]" for k, t in names.items())
        return (
            f"{b['level']:.0%} bootstrap interval ({b['replicates']} replicates of {unit}): {ci}\n"
        )


def evaluate_predictions(
    y_true: np.ndarray,
    prob: np.ndarray,
    slides: Sequence[str] | np.ndarray | None = None,
    *,
    classes: Sequence[str] = ("benign", "cancer"),
    positive: Sequence[str] | str | None = None,
    threshold: float = 0.5,
    target_sensitivity: float = 0.99,
    split: str | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
) -> Evaluation:
    """Evaluate tile predictions as a screening test, pooled and per slide.

    Parameters
    ----------
    y_true : ndarray of int, shape (n,)
        True class index of each tile (index into ``classes``).
    prob : ndarray, shape (n, C) or (n,)
        Class probabilities (softmax output), or an already computed screening score.
    slides : sequence of str, optional
        Slide name of each tile (per-slide matrices); None puts every tile on one slide "all".
    classes : sequence of str
        Class names, in the order of ``prob``'s columns.
    positive : str or sequence of str, optional
        The classes that make a tile positive (default: every class but ``"benign"``).
    threshold : float
        A tile is test positive when its score is >= ``threshold``.
    target_sensitivity : float
        The evaluation also reports the largest threshold that reaches this sensitivity here.
    split : str, optional
        Name of the split, for the warnings.
    bootstrap : int
        Bootstrap replicates of the pooled intervals (1000; 0: none), resampling slides when
        there are several, else tiles (:func:`~prostate_fast.metrics.bootstrap_intervals`).
    seed : int
        Seed of the bootstrap (0).

    Returns
    -------
    Evaluation

    Raises
    ------
    ValueError
        Mismatched lengths, labels outside the classes, non-finite scores, no tile.

    Warns
    -----
    SmallSplitWarning
        Fewer than :data:`MIN_CLASS_TILES` positive or negative tiles (AUC and the threshold
        for the target are NaN, "n/a" in the report, when a class is absent).
    """
    y_idx = np.asarray(y_true).ravel()
    if y_idx.size == 0:
        raise ValueError("no prediction to evaluate")
    classes = list(classes)
    score, mask = screening_score(prob, classes, positive)
    if y_idx.dtype.kind not in "iu" or y_idx.min() < 0 or y_idx.max() >= len(classes):
        raise ValueError(f"y_true must be class indices in [0, {len(classes)}), got {y_idx.dtype}")
    if score.size != y_idx.size:
        raise ValueError(f"y_true has {y_idx.size} labels but prob has {score.size} rows")
    y = mask[y_idx]
    test = score >= threshold
    slide_arr = np.asarray(["all"] * y.size if slides is None else list(slides), dtype=object)
    if slide_arr.size != y.size:
        raise ValueError(f"slides has {slide_arr.size} names for {y.size} predictions")
    per_slide: dict[str, Confusion] = {}
    per_auc: dict[str, float] = {}
    for s in sorted(set(slide_arr.tolist()), key=str):
        sel = slide_arr == s
        per_slide[str(s)] = confusion(y[sel], test[sel])
        per_auc[str(s)] = roc_auc(y[sel], score[sel])
    fpr, tpr, _ = roc_curve(y, score)
    t_target = threshold_for_sensitivity(y, score, target_sensitivity) if y.any() else math.nan
    notes = _class_notes(y, classes, mask, f"split {split!r}" if split else "the evaluated set")
    for note in notes:
        warnings.warn(note, SmallSplitWarning, stacklevel=2)
    boot = (
        bootstrap_intervals(y, score, threshold, slide_arr, n_boot=bootstrap, seed=seed)
        if bootstrap
        else {}
    )
    positive, negative = _sides(classes, mask)
    several = len(classes) > 2 and np.ndim(prob) == 2
    grading = class_section(y_idx, prob, slide_arr, classes, positive, threshold) if several else {}
    return Evaluation(
        pooled=confusion(y, test),
        per_slide=per_slide,
        auc=roc_auc(y, score),
        per_slide_auc=per_auc,
        threshold=float(threshold),
        target_sensitivity=float(target_sensitivity),
        threshold_for_target=t_target,
        positive=positive,
        negative=negative,
        fpr=fpr,
        tpr=tpr,
        intervals=boot,
        notes=tuple(notes),
        grading=grading,
    )


# -- running an exported model on a dataset split --------------------------------------------------
def _split_slides(dataset_dir: Path, split: str, n: int) -> np.ndarray:
    """Slide name of each record of a split, from its side-car table."""
    from .dataset import load_side_car

    side = load_side_car(dataset_dir, split)
    if len(side["record"]) != n or not np.array_equal(side["record"], np.arange(n)):
        raise DatasetError(f"{dataset_dir / (split + '.csv')}: does not list records 0..{n - 1}")
    return np.asarray(side["slide"], dtype=object)


def evaluate_model(
    model_dir: str | os.PathLike[str],
    dataset_dir: str | os.PathLike[str],
    split: str = "val",
    *,
    out_dir: str | os.PathLike[str] | None = None,
    threshold: float | None = None,
    target_sensitivity: float | None = None,
    ctx: str = "cpu",
    batch_size: int = 64,
    n_threads: int | None = None,
    write_threshold: bool = False,
    overwrite: bool = False,
) -> Evaluation:
    """Run an exported model on a dataset split and write its screening report.

    Parameters
    ----------
    model_dir : path
        A model folder written by :func:`prostate_fast.train.train`.
    dataset_dir : path
        A dataset folder (``prostate_fast.dataset``) with the same classes and tile size.
    split : str
        The split to evaluate (``"val"`` or ``"test"``).
    out_dir : path, optional
        Report folder (default ``MODEL_DIR/evaluation-SPLIT``): ``report.json``, ``report.txt``,
        ``slides.csv``, ``predictions.csv``, ``roc.png``, ``confusion.png``; written atomically.
    threshold : float, optional
        Decision threshold. Default: the threshold reaching ``target_sensitivity`` on the
        validation (calibration) split, computed here, running the model on ``val`` too when
        needed. Evaluating ``val`` itself with it is labelled "optimistic (tuned on this split)"
        (``threshold_optimistic`` in report.json) and warned about: report ``test`` for an
        unbiased estimate.
    target_sensitivity : float, optional
        Sensitivity the chosen threshold must reach on the validation split (default: the
        model's own, ``model.json`` threshold.target_sensitivity, which its training recipe set;
        0.99 when not recorded).
    ctx, batch_size, n_threads
        Where and how to run the model.
    write_threshold : bool
        Store the chosen threshold in ``model.json`` (read by prediction).
    overwrite : bool
        Replace an existing report folder.

    Returns
    -------
    Evaluation

    Raises
    ------
    ModelError
        Unreadable model, or classes / tile size that do not match the dataset.
    DatasetError
        Missing dataset description, empty split, corrupt records.
    FileExistsError
        ``out_dir`` exists and ``overwrite`` is false.

    Notes
    -----
    Cost: one forward pass over the split (and over ``val`` when the threshold is derived),
    and 1,000 bootstrap replicates (O(n) each).

    Warns
    -----
    SmallSplitWarning
        The evaluated split or the calibration split has fewer than :data:`MIN_CLASS_TILES`
        tiles of a class.
    UserWarning
        The threshold is tuned on the split it is reported on (optimistic).
    """
    from .model import read_model_info
    from .train.io import load_exported, predict_split

    model_dir, dataset_dir = Path(model_dir), Path(dataset_dir)
    info = read_model_info(model_dir)
    out = Path(out_dir) if out_dir is not None else model_dir / f"evaluation-{split}"
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out}: already exists; refusing to overwrite it")
    classes = list(info.classes)
    net, mx_ctx = load_exported(model_dir, info, ctx=ctx)
    run = partial(
        predict_split,
        net,
        dataset_dir,
        ctx=mx_ctx,
        batch_size=batch_size,
        classes=classes,
        tile_size=info.tile_size,
        scale=info.scale,
        n_threads=n_threads,
        softmax=False,
    )
    labels, prob = run(split)
    if target_sensitivity is None:  # the model's own (its recipe's) target
        stored = (info.meta.get("threshold") or {}).get("target_sensitivity", 0.99)
        target_sensitivity = float(stored) if isinstance(stored, int | float) else 0.99
    source, calibration = "given", None
    if threshold is None:
        calibration = "val"
        val = (labels, prob) if split == calibration else run(calibration)
        threshold = _val_threshold(*val, classes, dataset_dir, target_sensitivity, split)
        source = f"sensitivity {target_sensitivity:g} on {calibration}"
    optimistic = calibration == split
    if optimistic:
        source += ", optimistic (tuned on this split)"
        warnings.warn(
            f"the threshold is tuned on the reported split {split!r}: its sensitivity and "
            "specificity are optimistic; evaluate --split test for an unbiased estimate",
            UserWarning,
            stacklevel=2,
        )
    slides = _split_slides(dataset_dir, split, labels.size)
    ev = evaluate_predictions(
        labels,
        prob,
        slides,
        classes=classes,
        threshold=threshold,
        target_sensitivity=target_sensitivity,
        split=split,
    )
    head = {"model": str(model_dir), "dataset": str(dataset_dir), "split": split}
    head.update(epoch=info.epoch, threshold_source=source, calibration_split=calibration)
    head.update(threshold_optimistic=optimistic)
    _write_report(out, ev, head, (labels, prob, slides, classes))
    if write_threshold:
        _store_threshold(model_dir, info, ev, target_sensitivity, source)
    return ev


def _val_threshold(
    labels: np.ndarray,
    prob: np.ndarray,
    classes: Sequence[str],
    dataset_dir: Path,
    target_sensitivity: float,
    reported: str,
) -> float:
    """The threshold reaching ``target_sensitivity`` on the val split's predictions.

    Warns (:class:`SmallSplitWarning`) when val, not also the ``reported`` split, is small.
    """
    y, score = screening_labels(labels, prob, classes)
    if reported != "val":
        mask = screening_score(prob, classes)[1]
        for note in _class_notes(y, classes, mask, "calibration split 'val'"):
            warnings.warn(note, SmallSplitWarning, stacklevel=3)
    if not y.any():
        raise DatasetError(f"{dataset_dir}: the val split has no positive tile; give --threshold")
    return threshold_for_sensitivity(y, score, target_sensitivity)


def _write_report(
    out: Path,
    ev: Evaluation,
    head: dict[str, Any],
    predictions: tuple[np.ndarray, np.ndarray, np.ndarray, Sequence[str]],
) -> None:
    """Write the report folder ``out`` atomically (built as ``.OUT.part``, then renamed).

    ``head`` opens report.json (model, dataset, split, epoch, threshold_source); ``predictions``
    (labels, probabilities, slide names, classes) fill predictions.csv.
    """
    from ._util import write_json as _write_json

    split, source = head["split"], head["threshold_source"]
    tmp = out.with_name(f".{out.name}.part")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        _write_json(tmp / "report.json", {**head, **ev.to_dict()})
        (tmp / "report.txt").write_text(f"{split} split, threshold from {source}\n{ev.report()}")
        _write_slides_csv(tmp / "slides.csv", ev)
        _write_predictions(tmp / "predictions.csv", *predictions, ev.threshold)
        _write_plots(tmp, ev, split)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_plots(folder: Path, ev: Evaluation, split: str) -> None:
    """``confusion.png`` (pooled matrix) and, when the AUC is defined, ``roc.png``."""
    from ._plot import confusion_png, roc_png

    pos, neg = "+".join(ev.positive), "+".join(ev.negative)
    confusion_png(
        folder / "confusion.png",
        ev.pooled.matrix(),
        ["test positive", "test negative", "total"],
        [pos, neg, "total"],
        title=f"{split}: screening test vs true diagnosis",
    )
    c = ev.pooled
    point = (1 - c.specificity, c.sensitivity) if c.tp + c.fn and c.tn + c.fp else None
    if not math.isnan(ev.auc):
        roc_png(
            folder / "roc.png",
            ev.fpr,
            ev.tpr,
            auc=ev.auc,
            point=point,
            point_label=f"threshold {ev.threshold:.3g}",
            title=f"ROC, {split} split",
        )


def _write_slides_csv(path: Path, ev: Evaluation) -> None:
    """One row of counts, rates and AUC per slide, then the pooled row "all"."""
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        keys = list(ev.pooled.metrics())
        w.writerow(["slide", *keys, "auc"])
        for s, c in [*ev.per_slide.items(), ("all", ev.pooled)]:
            auc = ev.auc if s == "all" and c is ev.pooled else ev.per_slide_auc[s]
            w.writerow([csv_cell(s), *(c.metrics()[k] for k in keys), auc])


def _write_predictions(
    path: Path,
    labels: np.ndarray,
    prob: np.ndarray,
    slides: np.ndarray,
    classes: Sequence[str],
    threshold: float,
) -> None:
    """One row per tile: record, slide, true class, score, test result, class probabilities.

    Numbers are written in full precision (``repr`` of float64, which round-trips).
    """
    score = screening_score(prob, classes)[0]
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["record", "slide", "label", "score", "test_positive", *map(csv_cell, classes)])
        for i in range(labels.size):
            name, label = csv_cell(str(slides[i])), csv_cell(classes[labels[i]])
            row = [i, name, label, repr(float(score[i])), int(score[i] >= threshold)]
            w.writerow(row + [repr(float(p)) for p in prob[i]])


def _store_threshold(
    model_dir: Path, info: ModelInfo, ev: Evaluation, target: float, source: str
) -> None:
    """Write the evaluation's threshold into ``MODEL_DIR/model.json`` (read by prediction)."""
    from .model import write_model_json

    new_threshold = {
        "+".join(ev.positive): float(ev.threshold),
        "target_sensitivity": target,
        "source": source,
    }
    write_model_json(model_dir, {**info.meta, "threshold": new_threshold})
