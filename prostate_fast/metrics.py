"""Screening metrics shared by training (epoch selection) and evaluation (reports): the one owner.

A tile is *positive* when its true class is one of the positive classes (every class except
``"benign"`` unless told otherwise) and *test positive* when its screening score, the summed
probability of those classes (:func:`screening_score`), reaches a threshold. Everything here works
on that binary view:

* :class:`Confusion`, :func:`confusion`: the screening test against the true diagnosis, with
  accuracy, sensitivity, specificity, PPV and NPV; :func:`roc_curve` (every distinct score a
  threshold), :func:`roc_auc`; :func:`threshold_for_sensitivity` (``model.json``'s threshold);
* :func:`bootstrap_intervals`: percentile intervals of AUC, sensitivity and specificity,
  resampling slides (the cluster) or tiles;
* training's model selection: :func:`sensitivity_at_specificity`, :func:`both_rates`,
  :data:`SELECT_DEFAULT`, :func:`check_select`, :func:`validation_metrics`, :func:`selection_key`;
* several classes: :func:`decided_classes`, :func:`class_metrics` (C x C matrix, per-class
  precision, recall, F1), :func:`primary_grades` and :func:`quadratic_weighted_kappa`.

Rates of an empty denominator are NaN, never an error. Only numpy is imported at module level;
scikit-learn loads inside the functions that use it, so ``import prostate_fast`` stays fast.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "MIN_CLASS_TILES",
    "SELECT_DEFAULT",
    "Confusion",
    "SmallSplitWarning",
    "both_rates",
    "bootstrap_intervals",
    "check_select",
    "class_metrics",
    "confusion",
    "decided_classes",
    "grade_scale",
    "primary_grades",
    "quadratic_weighted_kappa",
    "roc_auc",
    "roc_curve",
    "screening_labels",
    "screening_score",
    "selection_key",
    "sensitivity_at_specificity",
    "threshold_for_sensitivity",
    "validation_metrics",
]

#: The validation metric that picks training's exported epoch unless told otherwise.
SELECT_DEFAULT = "sensitivity@specificity>=0.5"
_SELECT_RE = re.compile(r"sensitivity@specificity>=(0(?:\.\d+)?|1(?:\.0*)?)$")
# select name -> the validation_metrics key it maximises (sensitivity@... -> "val_select")
_SELECT_KEYS = {
    "accuracy": "val_accuracy",
    "balanced_accuracy": "val_balanced_accuracy",
    "auc": "val_auc",
    "loss": "val_loss",
}


def _ratio(a: int, b: int) -> float:
    return a / b if b else math.nan


@dataclass(frozen=True)
class Confusion:
    """Counts of a screening test against the true diagnosis, with derived rates (NaN if 0/0)."""

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
        """The matrix as text: columns true diagnosis, rows test positive, negative, total."""
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
    ``"benign"``, or except the first class when there is no ``"benign"``), clipped to [0, 1] when
    there are several (rounding must not lift it past 1). An (n,) input is taken
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
    # several positive classes: float32 softmax outputs can sum past 1 (a threshold > 1 stored)
    score = p[:, mask].sum(axis=1) if mask.sum() == 1 else np.clip(p[:, mask].sum(axis=1), 0, 1)
    return score, mask


def screening_labels(
    labels: np.ndarray, prob: np.ndarray, classes: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Return (positive truth (n,) bool, screening score (n,)) of class-index ``labels``.

    The default positive classes of :func:`screening_score`; ``labels`` index ``classes``.

    Raises
    ------
    ValueError
        As :func:`screening_score`.
    """
    score, mask = screening_score(prob, classes)
    return mask[np.asarray(labels)], score


def _check_binary(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y).astype(bool).ravel()
    s = np.asarray(score, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length: {y.shape[0]} vs {s.shape[0]}")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    return y, s


def confusion(y: np.ndarray, test: np.ndarray) -> Confusion:
    """The :class:`Confusion` of a binary ``test`` against the binary truth ``y`` (same length).

    Raises
    ------
    ValueError
        ``y`` and ``test`` differ in length.
    """
    from sklearn.metrics import confusion_matrix

    y, t = np.asarray(y).astype(bool).ravel(), np.asarray(test).astype(bool).ravel()
    if y.shape != t.shape:
        raise ValueError(f"labels and test results differ in length: {y.size} vs {t.size}")
    (tn, fp), (fn, tp) = confusion_matrix(y, t, labels=[False, True]).tolist()
    return Confusion(tp=tp, fp=fp, fn=fn, tn=tn)


def roc_curve(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC points for "positive when score >= t", t over every distinct score, descending.

    scikit-learn's ``roc_curve`` with ``drop_intermediate=False`` (every distinct score stays a
    threshold, so that :func:`threshold_for_sensitivity` can read any of them).

    Returns
    -------
    fpr, tpr, thresholds : ndarray
        Starting at (0, 0) with threshold +inf and ending at (1, 1). NaN rates when a class is
        absent.

    Raises
    ------
    ValueError
        ``y`` and ``score`` differ in length, or a score is not finite.
    """
    from sklearn.metrics import roc_curve as sk_roc_curve

    y, s = _check_binary(y, score)
    if s.size == 0:
        return np.full(1, math.nan), np.full(1, math.nan), np.array([np.inf])
    with warnings.catch_warnings():  # "No positive samples in y_true": NaN rates, as documented
        warnings.simplefilter("ignore")
        fpr, tpr, thresholds = sk_roc_curve(y, s, drop_intermediate=False)
    return fpr.astype(float), tpr.astype(float), thresholds.astype(float)


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (ties count one half); NaN if a class is absent.

    Raises
    ------
    ValueError
        ``y`` and ``score`` differ in length, or a score is not finite.

    Notes
    -----
    The trapezoid area under :func:`roc_curve`, summed in exact integer counts and divided once:
    the Mann-Whitney U / (P N), correctly rounded. (scikit-learn's ``roc_auc_score`` sums float
    rates and differs in the last bits for about a third of inputs, which would change the
    stored training history and evaluation reports.)
    """
    y, s = _check_binary(y, score)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    fpr, tpr, _ = roc_curve(y, s)
    tps, fps = np.rint(tpr * n_pos).astype(np.int64), np.rint(fpr * n_neg).astype(np.int64)
    twice_u = int(np.sum(np.diff(fps) * (tps[1:] + tps[:-1])))
    return float((twice_u / 2) / (n_pos * n_neg))


def threshold_for_sensitivity(y: np.ndarray, score: np.ndarray, target: float = 0.99) -> float:
    """The largest threshold t such that "positive when score >= t" reaches ``target`` sensitivity.

    Read off :func:`roc_curve`: the first threshold (from the top) whose true-positive count
    reaches ``ceil(target * P)`` (at least 1); that is always a positive tile's score.

    Raises
    ------
    ValueError
        ``target`` outside (0, 1], or no positive sample.
    """
    if not 0 < target <= 1:
        raise ValueError(f"target sensitivity must be in (0, 1], got {target!r}")
    y, s = _check_binary(y, score)
    n_pos = int(y.sum())
    if n_pos == 0:
        raise ValueError("no positive sample: cannot choose a threshold for a target sensitivity")
    need = max(1, math.ceil(target * n_pos - 1e-9))
    _, tpr, thresholds = roc_curve(y, s)
    tps = np.rint(tpr * n_pos)
    return float(thresholds[int(np.searchsorted(tps, need))])


def sensitivity_at_specificity(y: np.ndarray, score: np.ndarray, floor: float = 0.5) -> float:
    """The best sensitivity over thresholds keeping specificity >= ``floor`` (NaN if undefined).

    Raises
    ------
    ValueError
        ``y`` and ``score`` differ in length, or a score is not finite.
    """
    fpr, tpr, _ = roc_curve(y, score)
    if np.isnan(fpr).any() or np.isnan(tpr).any():
        return math.nan
    ok = fpr <= 1.0 - floor + 1e-12
    return float(tpr[ok].max())


# -- small splits and bootstrap intervals ---------------------------------------------------------
#: Fewer tiles of a class than this in a reported or calibration split gives a warning.
MIN_CLASS_TILES = 20


class SmallSplitWarning(UserWarning):
    """A split has too few tiles of a class for a trustworthy AUC, threshold or rate."""


# -- bootstrap intervals --------------------------------------------------------------------------
def bootstrap_intervals(
    y: np.ndarray,
    score: np.ndarray,
    threshold: float,
    clusters: Sequence[object] | np.ndarray | None = None,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Bootstrap percentile intervals of AUC, sensitivity and specificity at ``threshold``.

    Parameters
    ----------
    y, score : ndarray, shape (n,)
        Binary truth and screening score (test positive when ``score >= threshold``).
    threshold : float
        The decision threshold of sensitivity and specificity.
    clusters : sequence, optional
        Cluster (slide) of each tile. With two or more clusters whole clusters are resampled
        (tiles of one slide are not independent); otherwise tiles are.
    n_boot : int
        Replicates (1000).
    seed : int
        Seed of ``numpy.random.default_rng``; one seed, one result.
    level : float
        Coverage of the two-sided percentile interval (0.95).

    Returns
    -------
    dict
        ``replicates``, ``level``, ``seed``, ``unit`` (``"slide"`` or ``"tile"``), ``clusters``
        (their number) and ``auc``, ``sensitivity``, ``specificity``: ``[low, high]``, the
        ``(1 - level) / 2`` and ``(1 + level) / 2`` percentiles (NumPy's linear rule) over the
        replicates where the value is defined; NaN when none is.

    Raises
    ------
    ValueError
        Mismatched lengths, non-finite scores, ``n_boot`` < 1, ``level`` outside (0, 1).

    Notes
    -----
    Replicate b draws, from one generator in order, ``k`` cluster indices (``rng.integers(0, k,
    k)``) or ``n`` tile indices (``rng.integers(0, n, n)``); a tile drawn m times weighs m. The AUC
    of a replicate is the weighted Mann-Whitney U (ties one half) / (P N), computed from the
    distinct scores in O(n) per replicate.
    """
    y, s = _check_binary(y, score)
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    if clusters is None:
        cl = np.zeros(y.size, np.int64)
    else:
        names = np.asarray(list(clusters), dtype=object)
        if names.size != y.size:
            raise ValueError(f"clusters has {names.size} entries for {y.size} tiles")
        cl = np.unique(names.astype(str), return_inverse=True)[1].ravel()
    k = int(cl.max()) + 1 if cl.size else 0
    values = _bootstrap_values(y, s, s >= threshold, cl, k, n_boot, seed)
    q = [50 * (1 - level), 50 * (1 + level)]
    out: dict[str, Any] = {"replicates": n_boot, "level": level, "seed": seed}
    out.update(unit="slide" if k >= 2 else "tile", clusters=k)
    for name, v in zip(("auc", "sensitivity", "specificity"), values, strict=True):
        ok = v[np.isfinite(v)]
        out[name] = [float(x) for x in np.percentile(ok, q)] if ok.size else [math.nan] * 2
    return out


def _bootstrap_values(
    y: np.ndarray, s: np.ndarray, test: np.ndarray, cl: np.ndarray, k: int, n_boot: int, seed: int
) -> np.ndarray:
    """(3, n_boot) AUC, sensitivity, specificity of the replicates (NaN where undefined)."""
    rng = np.random.default_rng(seed)
    n = y.size
    inv = np.unique(s, return_inverse=True)[1].ravel()
    m = int(inv.max()) + 1 if n else 0
    out = np.full((3, n_boot), math.nan)
    yf, tf = y.astype(np.float64), test.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        for b in range(n_boot):
            if k >= 2:
                w = np.bincount(rng.integers(0, k, k), minlength=k)[cl].astype(np.float64)
            else:
                w = np.bincount(rng.integers(0, n, n), minlength=n).astype(np.float64)
            wp, wn = w * yf, w * (1 - yf)
            p, q = wp.sum(), wn.sum()
            pos_u = np.bincount(inv, weights=wp, minlength=m)
            neg_u = np.bincount(inv, weights=wn, minlength=m)
            below = np.cumsum(neg_u) - neg_u
            out[0, b] = np.sum(pos_u * (below + 0.5 * neg_u)) / (p * q) if p and q else math.nan
            out[1, b] = np.dot(wp, tf) / p
            out[2, b] = np.dot(wn, 1 - tf) / q
    return out


# -- the model-selection criterion of training ----------------------------------------------------
def check_select(select: str) -> None:
    """Check a selection criterion: ``"accuracy"``, ``"balanced_accuracy"``, ``"auc"``,
    ``"loss"`` or ``"sensitivity@specificity>=F"`` (F in [0, 1]).

    Raises
    ------
    ValueError
        Any other string.
    """
    if select not in _SELECT_KEYS and not _SELECT_RE.fullmatch(select):
        raise ValueError(
            "select must be auc, balanced_accuracy, accuracy, loss or sensitivity@specificity>=F, "
            f"got {select!r}"
        )


def validation_metrics(
    labels: np.ndarray, prob: np.ndarray, classes: Sequence[str], select: str = SELECT_DEFAULT
) -> dict[str, float]:
    """The validation columns of training's log for class-index ``labels`` and ``prob`` (n, C).

    Returns
    -------
    dict
        ``val_loss`` (mean cross-entropy), ``val_accuracy`` (arg-max class), ``val_sensitivity``
        and ``val_specificity`` (screening test at threshold 0.5), ``val_auc`` and
        ``val_select`` (the best sensitivity at specificity >= F of ``select``, F = 0.5 when
        ``select`` names another criterion), ``val_balanced_accuracy`` (the mean recall of the
        classes present, arg-max decision) and ``val_both`` (:func:`both_rates`). NaN where a
        class is absent.
    """
    y, score = screening_labels(labels, prob, classes)
    pooled = confusion(y, score >= 0.5)
    m = _SELECT_RE.fullmatch(select)
    floor = float(m.group(1)) if m else 0.5
    loss = -np.log(np.clip(prob[np.arange(labels.size), labels], 1e-12, None)).mean()
    decided = prob.argmax(axis=1)
    recalls = [float((decided[labels == c] == c).mean()) for c in np.unique(labels)]
    return {
        "val_loss": float(loss),
        "val_accuracy": float((decided == labels).mean()),
        "val_balanced_accuracy": float(np.mean(recalls)) if recalls else math.nan,
        "val_sensitivity": pooled.sensitivity,
        "val_specificity": pooled.specificity,
        "val_auc": roc_auc(y, score),
        "val_select": sensitivity_at_specificity(y, score, floor),
        "val_both": both_rates(y, score),
    }


def both_rates(y: np.ndarray, score: np.ndarray) -> float:
    """The largest F for which one threshold gives sensitivity and specificity both >= F: 0 for
    a constant score, NaN when a class is absent; it depends on the ranking, not calibration."""
    fpr, tpr, _ = roc_curve(y, score)
    if np.isnan(tpr).any() or np.isnan(fpr).any():
        return math.nan
    return float(np.max(np.minimum(tpr, 1.0 - fpr)))


def selection_key(select: str, row: Mapping[str, Any], floor: float = 0.0) -> float:
    """The value to maximise for ``select`` in a :func:`validation_metrics` row.

    Loss is negated; NaN or None (e.g. the AUC of a one-class split) is -inf, so any defined
    value wins over it. With ``floor`` > 0 an epoch is -inf too unless some threshold gives
    sensitivity and specificity both >= ``floor`` (``val_both``): a constant model never wins,
    one that ranks well but is shifted from p = 0.5 can (the threshold is tuned on val anyway).
    """
    if floor > 0:
        v = row.get("val_both")
        if v is None or math.isnan(v) or v < floor:
            return -math.inf
    key = _SELECT_KEYS.get(select, "val_select")
    value = row.get(key)
    if value is None or math.isnan(value):
        return -math.inf
    return -float(value) if key == "val_loss" else float(value)


# -- several classes: per-class rates, slide grades and their quadratic weighted kappa ------------
def decided_classes(
    prob: np.ndarray,
    classes: Sequence[str],
    threshold: float,
    positive: Sequence[str] | None = None,
) -> np.ndarray:
    """(n,) int64 class of each tile of (n, C) ``prob`` under the screening test: the most probable
    positive class when its :func:`screening_score` reaches ``threshold``, else the most probable
    negative one. Raises ValueError as :func:`screening_score`."""
    p = np.asarray(prob, dtype=np.float64)
    score, mask = screening_score(p, classes, positive)
    pos, neg = np.flatnonzero(mask), np.flatnonzero(~mask)
    best_pos, best_neg = pos[p[:, pos].argmax(axis=1)], neg[p[:, neg].argmax(axis=1)]
    return np.where(score >= threshold, best_pos, best_neg).astype(np.int64)


def _counts(a: np.ndarray, b: np.ndarray, k: int, what: str) -> np.ndarray:
    """(k, k) int64 counts of the pairs (a, b); ValueError on a length or range mismatch."""
    x, y = np.asarray(a).ravel().astype(np.int64), np.asarray(b).ravel().astype(np.int64)
    if x.shape != y.shape:
        raise ValueError(f"{what} differ in length: {x.size} vs {y.size}")
    if x.size and (min(x.min(), y.min()) < 0 or max(x.max(), y.max()) >= k):
        raise ValueError(f"{what} must be integers in [0, {k})")
    return np.bincount(x * k + y, minlength=k * k).reshape(k, k)


def class_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str]
) -> tuple[np.ndarray, dict[str, dict[str, float]]]:
    """The C x C confusion matrix (rows true class, columns decided class, as scikit-learn's
    ``confusion_matrix``) and each class's one-vs-rest precision, recall, F1 (2 TP / (2 TP + FP +
    FN)) and support; NaN for an empty denominator. Raises ValueError on bad indices."""
    m = _counts(y_true, y_pred, len(classes), "true and decided classes")
    rows = {}
    for c, name in enumerate(classes):
        tp, fp, fn = int(m[c, c]), int(m[:, c].sum() - m[c, c]), int(m[c].sum() - m[c, c])
        rows[name] = {"precision": _ratio(tp, tp + fp), "recall": _ratio(tp, tp + fn)}
        rows[name].update(f1=_ratio(2 * tp, 2 * tp + fp + fn), support=tp + fn)
    return m, rows


def quadratic_weighted_kappa(a: np.ndarray, b: np.ndarray, n_grades: int) -> float:
    """Cohen's kappa of two ratings on the grade scale 0 .. ``n_grades - 1``, quadratic weights.

    1 - sum(W O) / sum(W E): O the observed counts, E those expected from the two marginals,
    W[i, j] = (i - j)^2 (scikit-learn's ``cohen_kappa_score(a, b, weights="quadratic",
    labels=range(n_grades))``). NaN when the expected disagreement is 0 (no rating, or both
    constant). Raises ValueError on a length mismatch or a grade off the scale.
    """
    o = _counts(a, b, n_grades, "ratings")
    e = np.outer(o.sum(axis=1), o.sum(axis=0)) / max(int(o.sum()), 1)
    w = (np.arange(n_grades)[:, None] - np.arange(n_grades)[None, :]) ** 2
    expected = float((w * e).sum())
    return 1.0 - float((w * o).sum()) / expected if expected > 0 else math.nan


def grade_scale(classes: Sequence[str]) -> list[int]:
    """Class indices in ascending severity: the negative classes (:func:`screening_score`'s
    default), then the positive ones, ``gleasonN`` by N first, the others (``cancer``) after."""
    positive = _positive_mask(classes, None)

    def key(i: int) -> tuple[int, int, int]:
        m = re.fullmatch(r"gleason(\d+)", classes[i].lower())
        return int(positive[i]), int(m.group(1)) if m else 1 << 30, i

    return sorted(range(len(classes)), key=key)


def primary_grades(
    labels: np.ndarray, slides: Sequence[str] | np.ndarray, classes: Sequence[str]
) -> dict[str, int]:
    """Each slide's primary grade, a position on :func:`grade_scale`, from class-index ``labels``.

    The primary grade is the most frequent positive (Gleason) class among the slide's tiles of a
    positive class, the more severe on a tie; 0 (benign) when it has none.
    """
    lab = np.asarray(labels).ravel().astype(np.int64)
    names = np.asarray(list(slides), dtype=object).astype(str)
    positive = _positive_mask(classes, None)
    rank = np.empty(len(classes), np.int64)
    rank[grade_scale(classes)] = np.arange(len(classes))
    out: dict[str, int] = {}
    for s in sorted(set(names.tolist())):
        counts = np.bincount(rank[lab[(names == s) & positive[lab]]], minlength=len(classes))
        out[s] = int(len(counts) - 1 - np.argmax(counts[::-1])) if counts.any() else 0
    return out
