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

The metric functions are pure numpy (no MXNet, no scikit-learn): the ROC AUC is the Mann-Whitney
rank statistic with ties averaged, which equals the trapezoid area under the ROC curve.
:func:`evaluate_model` runs an exported model (``prostate_fast.train``) on a dataset split and
writes the report; MXNet is imported only there.
"""

from __future__ import annotations

import csv
import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DatasetError

__all__ = [
    "Confusion",
    "Evaluation",
    "evaluate_model",
    "evaluate_predictions",
    "roc_auc",
    "roc_curve",
    "screening_score",
    "sensitivity_at_specificity",
    "threshold_for_sensitivity",
]


def _ratio(a: int, b: int) -> float:
    return a / b if b else math.nan


@dataclass(frozen=True)
class Confusion:
    """Counts of a screening test against the true diagnosis, with the derived rates (NaN if 0/0)."""

    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def n(self) -> int:
        """Number of tiles."""
        return self.tp + self.fp + self.fn + self.tn

    @property
    def accuracy(self) -> float:
        """(TP + TN) / n."""
        return _ratio(self.tp + self.tn, self.n)

    @property
    def sensitivity(self) -> float:
        """TP / (TP + FN): the share of cancer tiles the test finds."""
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def specificity(self) -> float:
        """TN / (TN + FP): the share of benign tiles the test clears."""
        return _ratio(self.tn, self.tn + self.fp)

    @property
    def ppv(self) -> float:
        """TP / (TP + FP): positive predictive value."""
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def npv(self) -> float:
        """TN / (TN + FN): negative predictive value."""
        return _ratio(self.tn, self.tn + self.fn)

    def matrix(self) -> np.ndarray:
        """The study's 3 x 3 layout: rows test +/-/total, columns cancer/benign/total (int64)."""
        m = np.array([[self.tp, self.fp], [self.fn, self.tn]], dtype=np.int64)
        m = np.vstack([m, m.sum(axis=0)])
        return np.hstack([m, m.sum(axis=1, keepdims=True)])

    def metrics(self) -> dict[str, float | int]:
        """Counts and rates as a flat dictionary."""
        names = (
            "n",
            "tp",
            "fp",
            "fn",
            "tn",
            "accuracy",
            "sensitivity",
            "specificity",
            "ppv",
            "npv",
        )
        return {k: getattr(self, k) for k in names}

    def table(self, positive: str = "cancer", negative: str = "benign") -> str:
        """The confusion matrix as text, laid out as in the study (see the module docstring)."""
        m = self.matrix()
        heads = [positive, negative, "total"]
        w = max(8, *(len(h) for h in heads)) + 2
        lines = [" " * 16 + "true diagnosis", " " * 16 + "".join(h.rjust(w) for h in heads)]
        for name, row in zip(("test positive", "test negative", "total"), m, strict=True):
            lines.append(name.ljust(16) + "".join(str(v).rjust(w) for v in row))
        return "\n".join(lines)


def _positive_mask(classes: Sequence[str], positive: Sequence[str] | str | None) -> np.ndarray:
    classes = list(classes)
    if positive is None:
        neg = classes.index("benign") if "benign" in classes else 0
        return np.arange(len(classes)) != neg
    names = [positive] if isinstance(positive, str) else list(positive)
    unknown = [c for c in names if c not in classes]
    if unknown or not names:
        raise ValueError(f"positive must name classes among {classes}, got {positive!r}")
    mask = np.isin(np.array(classes), names)
    if mask.all():
        raise ValueError(f"positive must leave at least one negative class, got {positive!r}")
    return mask


def screening_score(
    prob: np.ndarray,
    classes: Sequence[str] | None = None,
    positive: Sequence[str] | str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Return (score, positive-class mask) from (n, C) class probabilities or an (n,) score.

    The score is the summed probability of the ``positive`` classes (default: every class except
    ``"benign"``, or except the first class when there is no ``"benign"``). An (n,) input is taken
    as the score already (two classes, or ``classes`` when given).

    Raises
    ------
    ValueError
        Bad shape, or a ``positive`` name that is not in ``classes``.
    """
    p = np.asarray(prob, dtype=np.float64)
    if p.ndim == 1:
        names = list(classes) if classes is not None else ["benign", "cancer"]
        return p, _positive_mask(names, positive)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"prob must have shape (n,) or (n, C >= 2), got {p.shape}")
    names = list(classes) if classes is not None else [str(i) for i in range(p.shape[1])]
    if len(names) != p.shape[1]:
        raise ValueError(f"classes has {len(names)} names but prob has {p.shape[1]} columns")
    mask = _positive_mask(names, positive)
    return p[:, mask].sum(axis=1), mask


def _check_binary(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y).astype(bool).ravel()
    s = np.asarray(score, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length: {y.shape[0]} vs {s.shape[0]}")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    return y, s


def roc_curve(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC points for "positive when score >= t", t over every distinct score, descending.

    Returns
    -------
    fpr, tpr, thresholds : ndarray
        Starting at (0, 0) with threshold +inf and ending at (1, 1). NaN rates when a class is
        absent.
    """
    y, s = _check_binary(y, score)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1] if s.size else np.array([], int)
    tps = np.cumsum(y)[last] if s.size else np.array([], int)
    fps = (last + 1) - tps
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    tpr = np.r_[0, tps] / n_pos if n_pos else np.full(last.size + 1, math.nan)
    fpr = np.r_[0, fps] / n_neg if n_neg else np.full(last.size + 1, math.nan)
    return fpr.astype(float), tpr.astype(float), np.r_[np.inf, s[last]]


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U / (P N), ties count one half); NaN if a class is absent."""
    y, s = _check_binary(y, score)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(s.size)
    sorted_s = s[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_s)) + 1]
    ends = np.r_[starts[1:], s.size]
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def threshold_for_sensitivity(y: np.ndarray, score: np.ndarray, target: float = 0.99) -> float:
    """The largest threshold t such that "positive when score >= t" reaches ``target`` sensitivity.

    Raises
    ------
    ValueError
        ``target`` outside (0, 1], or no positive sample.
    """
    if not 0 < target <= 1:
        raise ValueError(f"target sensitivity must be in (0, 1], got {target!r}")
    y, s = _check_binary(y, score)
    pos = np.sort(s[y])[::-1]
    if pos.size == 0:
        raise ValueError("no positive sample: cannot choose a threshold for a target sensitivity")
    k = max(1, math.ceil(target * pos.size - 1e-9))
    return float(pos[k - 1])


def sensitivity_at_specificity(y: np.ndarray, score: np.ndarray, floor: float = 0.5) -> float:
    """The best sensitivity over thresholds whose specificity is at least ``floor`` (NaN if undefined)."""
    fpr, tpr, _ = roc_curve(y, score)
    if np.isnan(fpr).any() or np.isnan(tpr).any():
        return math.nan
    ok = fpr <= 1.0 - floor + 1e-12
    return float(tpr[ok].max())


def _confusion(y: np.ndarray, test: np.ndarray) -> Confusion:
    return Confusion(
        tp=int(np.sum(y & test)),
        fp=int(np.sum(~y & test)),
        fn=int(np.sum(y & ~test)),
        tn=int(np.sum(~y & ~test)),
    )


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

        return {
            "positive": list(self.positive),
            "negative": list(self.negative),
            "pooled": clean(self.metrics()),
            "matrix": self.pooled.matrix().tolist(),
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
                f"accuracy {c.accuracy:.4f}  sensitivity {c.sensitivity:.4f}  "
                f"specificity {c.specificity:.4f}  PPV {c.ppv:.4f}  NPV {c.npv:.4f}  AUC {auc:.4f}"
            )
            return f"{title}\n{c.table(pos, neg)}\n{rates}\n"

        head = (
            f"threshold {self.threshold:.6g} (positive when p({pos}) >= threshold); "
            f"threshold reaching sensitivity {self.target_sensitivity:g} here: "
            f"{self.threshold_for_target:.6g}\n\n"
        )
        parts = [block(f"all slides ({self.pooled.n} tiles)", self.pooled, self.auc)]
        for s, c in self.per_slide.items():
            parts.append(block(f"slide {s} ({c.n} tiles)", c, self.per_slide_auc[s]))
        return head + "\n".join(parts)


def evaluate_predictions(
    y_true: np.ndarray,
    prob: np.ndarray,
    slides: Sequence[str] | np.ndarray | None = None,
    *,
    classes: Sequence[str] = ("benign", "cancer"),
    positive: Sequence[str] | str | None = None,
    threshold: float = 0.5,
    target_sensitivity: float = 0.99,
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

    Returns
    -------
    Evaluation

    Raises
    ------
    ValueError
        Mismatched lengths, labels outside the classes, non-finite scores, no tile.
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
        per_slide[str(s)] = _confusion(y[sel], test[sel])
        per_auc[str(s)] = roc_auc(y[sel], score[sel])
    fpr, tpr, _ = roc_curve(y, score)
    t_target = threshold_for_sensitivity(y, score, target_sensitivity) if y.any() else math.nan
    return Evaluation(
        pooled=_confusion(y, test),
        per_slide=per_slide,
        auc=roc_auc(y, score),
        per_slide_auc=per_auc,
        threshold=float(threshold),
        target_sensitivity=float(target_sensitivity),
        threshold_for_target=t_target,
        positive=tuple(c for c, m in zip(classes, mask, strict=True) if m),
        negative=tuple(c for c, m in zip(classes, mask, strict=True) if not m),
        fpr=fpr,
        tpr=tpr,
    )


# -- running an exported model on a dataset split --------------------------------------------------
def _split_slides(dataset_dir: Path, split: str, n: int) -> np.ndarray:
    """Slide name of each record of a split, from its side-car table."""
    from .dataset.build import load_side_car

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
    target_sensitivity: float = 0.99,
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
        validation split (computed here, running the model on ``val`` too when needed).
    target_sensitivity : float
        Sensitivity the chosen threshold must reach on the validation split (default 0.99).
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
    Cost: one forward pass over the split (and over ``val`` when the threshold is derived).
    """
    from ._plot import confusion_png, roc_png
    from ._util import write_json as _write_json
    from .model import read_model_info, write_model_json
    from .train.io import load_exported, predict_split

    model_dir, dataset_dir = Path(model_dir), Path(dataset_dir)
    info = read_model_info(model_dir)
    out = Path(out_dir) if out_dir is not None else model_dir / f"evaluation-{split}"
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out}: already exists; refusing to overwrite it")
    classes = list(info.classes)
    net, mx_ctx = load_exported(model_dir, info, ctx=ctx)

    def run(name: str) -> tuple[np.ndarray, np.ndarray]:
        return predict_split(
            net, dataset_dir, name, ctx=mx_ctx, batch_size=batch_size, classes=classes,
            tile_size=info.tile_size, scale=info.scale,
            n_threads=n_threads, softmax=False,
        )  # fmt: skip

    labels, prob = run(split)
    source = "given"
    if threshold is None:
        vl, vp = (labels, prob) if split == "val" else run("val")
        vy = screening_score(vp, classes)[1][vl]
        if not vy.any():
            raise DatasetError(
                f"{dataset_dir}: the val split has no positive tile; give --threshold"
            )
        threshold = threshold_for_sensitivity(
            vy, screening_score(vp, classes)[0], target_sensitivity
        )
        source = f"sensitivity {target_sensitivity:g} on val"
    slides = _split_slides(dataset_dir, split, labels.size)
    ev = evaluate_predictions(
        labels, prob, slides, classes=classes, threshold=threshold,
        target_sensitivity=target_sensitivity,
    )  # fmt: skip
    tmp = out.with_name(f".{out.name}.part")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        report = {
            "model": str(model_dir), "dataset": str(dataset_dir), "split": split,
            "epoch": info.epoch, "threshold_source": source, **ev.to_dict(),
        }  # fmt: skip
        _write_json(tmp / "report.json", report)
        (tmp / "report.txt").write_text(f"{split} split, threshold from {source}\n{ev.report()}")
        with (tmp / "slides.csv").open("w", newline="") as fh:
            w = csv.writer(fh)
            keys = list(ev.pooled.metrics())
            w.writerow(["slide", *keys, "auc"])
            for s, c in [*ev.per_slide.items(), ("all", ev.pooled)]:
                auc = ev.auc if s == "all" and c is ev.pooled else ev.per_slide_auc[s]
                w.writerow([s, *(c.metrics()[k] for k in keys), auc])
        score = screening_score(prob, classes)[0]
        with (tmp / "predictions.csv").open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["record", "slide", "label", "score", "test_positive", *classes])
            for i in range(labels.size):
                row = [
                    i,
                    slides[i],
                    classes[labels[i]],
                    f"{score[i]:.6f}",
                    int(score[i] >= threshold),
                ]
                w.writerow(row + [f"{p:.6f}" for p in prob[i]])
        pos, neg = "+".join(ev.positive), "+".join(ev.negative)
        confusion_png(
            tmp / "confusion.png", ev.pooled.matrix(), ["test positive", "test negative", "total"],
            [pos, neg, "total"], title=f"{split}: screening test vs true diagnosis",
        )  # fmt: skip
        c = ev.pooled
        point = (1 - c.specificity, c.sensitivity) if c.tp + c.fn and c.tn + c.fp else None
        if not math.isnan(ev.auc):
            roc_png(tmp / "roc.png", ev.fpr, ev.tpr, auc=ev.auc, point=point,
                    point_label=f"threshold {threshold:.3g}", title=f"ROC, {split} split")  # fmt: skip
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if write_threshold:
        new_threshold = {
            pos: float(threshold),
            "target_sensitivity": target_sensitivity,
            "source": source,
        }
        write_model_json(model_dir, {**info.meta, "threshold": new_threshold})
    return ev
