"""Shared metrics: scikit-learn-backed results against the former NumPy code and brute force.

``_ref_*`` are the pure-NumPy implementations that evaluate.py carried before the metrics moved to
scikit-learn; the package's results must equal them bit for bit (the threshold stored in
model.json, the selected epoch and every number of the reports depend on it).
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from prostate_fast.metrics import (
    SELECT_DEFAULT,
    Confusion,
    bootstrap_intervals,
    check_select,
    confusion,
    roc_auc,
    roc_curve,
    screening_labels,
    screening_score,
    selection_key,
    sensitivity_at_specificity,
    threshold_for_sensitivity,
    validation_metrics,
)


# -- the former NumPy implementations (reference) -------------------------------------------------
def _ref_roc_curve(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1] if s.size else np.array([], int)
    tps = np.cumsum(y)[last] if s.size else np.array([], int)
    fps = (last + 1) - tps
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    tpr = np.r_[0, tps] / n_pos if n_pos else np.full(last.size + 1, math.nan)
    fpr = np.r_[0, fps] / n_neg if n_neg else np.full(last.size + 1, math.nan)
    return fpr.astype(float), tpr.astype(float), np.r_[np.inf, s[last]]


def _ref_roc_auc(y: np.ndarray, s: np.ndarray) -> float:
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(s.size)
    starts = np.r_[0, np.flatnonzero(np.diff(s[order])) + 1]
    ends = np.r_[starts[1:], s.size]
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _ref_threshold(y: np.ndarray, s: np.ndarray, target: float) -> float:
    pos = np.sort(s[y])[::-1]
    k = max(1, math.ceil(target * pos.size - 1e-9))
    return float(pos[k - 1])


def _ref_sens_at_spec(y: np.ndarray, s: np.ndarray, floor: float) -> float:
    fpr, tpr, _ = _ref_roc_curve(y, s)
    if np.isnan(fpr).any() or np.isnan(tpr).any():
        return math.nan
    return float(tpr[fpr <= 1.0 - floor + 1e-12].max())


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def _auc_pairs(y: np.ndarray, s: np.ndarray) -> float:
    pos, neg = s[y], s[~y]
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def _random_case(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    n = int(rng.integers(0, 400))
    y = rng.random(n) < rng.choice([0.0, 0.01, 0.3, 0.5, 0.9, 1.0])
    s = rng.random(n) * 0.7 + 0.3 * y
    decimals = int(rng.integers(0, 4))
    if decimals:  # 1-3 decimals: many ties, within and across classes
        s = np.round(s, decimals)
    if rng.random() < 0.1:
        s = s.astype(np.float32).astype(np.float64)
    return y, s


# -- scikit-learn results equal the former ones, bit for bit -------------------------------------
@pytest.mark.parametrize("seed", range(4))
def test_metrics_equal_the_former_numpy_code(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(250):
        y, s = _random_case(rng)
        got, want = roc_curve(y, s), _ref_roc_curve(y, s)
        for g, w in zip(got, want, strict=True):
            assert g.dtype == w.dtype and np.array_equal(g, w, equal_nan=True)
        assert _same(roc_auc(y, s), _ref_roc_auc(y, s))
        for floor in (0.0, 0.25, 0.5, 0.9, 1.0):
            assert _same(sensitivity_at_specificity(y, s, floor), _ref_sens_at_spec(y, s, floor))
        if y.any():
            for target in (0.01, 0.3333, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0):
                assert threshold_for_sensitivity(y, s, target) == _ref_threshold(y, s, target)
        test = s >= rng.random()
        c = confusion(y, test)
        assert (c.tp, c.fp, c.fn, c.tn) == (
            int(np.sum(y & test)),
            int(np.sum(~y & test)),
            int(np.sum(y & ~test)),
            int(np.sum(~y & ~test)),
        )
        assert all(type(v) is int for v in (c.tp, c.fp, c.fn, c.tn))


def test_threshold_exact_fractions_of_the_target() -> None:
    """ceil(target * P) with the 1e-9 slack: 0.99 of 100 positives is 99, not 100."""
    y = np.ones(100, bool)
    s = np.arange(100, 0, -1) / 100.0
    assert threshold_for_sensitivity(y, s, 0.99) == s[98]
    assert threshold_for_sensitivity(y, s, 0.29) == s[28]  # 0.29 * 100 = 28.999999999999996
    assert threshold_for_sensitivity(y, s, 1.0) == s[-1]
    assert threshold_for_sensitivity(y, s, 1e-6) == s[0]  # at least one positive


def test_degenerate_inputs() -> None:
    empty = np.zeros(0, bool), np.zeros(0)
    fpr, tpr, thr = roc_curve(*empty)
    assert np.isnan(fpr).all() and np.isnan(tpr).all() and thr.tolist() == [np.inf]
    assert math.isnan(roc_auc(*empty)) and math.isnan(sensitivity_at_specificity(*empty))
    assert confusion(*empty) == Confusion(0, 0, 0, 0)
    one_class = np.zeros(5, bool), np.array([0.1, 0.5, 0.5, 0.7, 0.2])
    fpr, tpr, thr = roc_curve(*one_class)  # no warning escapes: NaN rates are documented
    assert np.isnan(tpr).all() and fpr[-1] == 1.0 and thr[0] == np.inf
    assert math.isnan(roc_auc(*one_class))
    assert math.isnan(roc_auc(np.ones(3, bool), np.array([0.2, 0.2, 0.3])))
    assert threshold_for_sensitivity(np.ones(3, bool), np.full(3, 0.4), 0.99) == 0.4
    assert roc_auc(np.array([0, 1], bool), np.array([0.2, 0.9])) == 1.0
    assert roc_auc(np.array([0, 1], bool), np.array([0.5, 0.5])) == 0.5  # a tie counts one half


def test_input_errors() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        roc_curve(np.zeros(3, bool), np.zeros(2))
    with pytest.raises(ValueError, match="finite"):
        roc_auc(np.array([0, 1], bool), np.array([0.1, np.nan]))
    with pytest.raises(ValueError, match="differ in length"):
        confusion(np.zeros(3, bool), np.zeros(2, bool))


# -- confusion and rates ------------------------------------------------------------------------
def test_confusion_layout_and_rates() -> None:
    c = Confusion(tp=8, fp=3, fn=2, tn=7)
    assert c.matrix().tolist() == [[8, 3, 11], [2, 7, 9], [10, 10, 20]]
    assert c.accuracy == 0.75 and c.sensitivity == 0.8 and c.specificity == 0.7
    assert c.ppv == 8 / 11 and c.npv == 7 / 9
    lines = c.table().splitlines()
    assert "true diagnosis" in lines[0] and lines[1].split() == ["cancer", "benign", "total"]
    assert lines[2].split() == ["test", "positive", "8", "3", "11"]
    assert lines[4].split() == ["total", "10", "10", "20"]
    empty = Confusion(0, 0, 0, 5)
    assert math.isnan(empty.sensitivity) and empty.specificity == 1.0


# -- ROC, AUC, thresholds -----------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_auc_matches_pairwise_count_and_trapezoid(seed: int) -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    y = rng.random(300) < 0.4
    s = np.round(rng.random(300) + 0.3 * y, 1)  # many ties
    auc = roc_auc(y, s)
    assert auc == pytest.approx(_auc_pairs(y, s), abs=1e-12)
    assert auc == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    fpr, tpr, thr = roc_curve(y, s)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1) and thr[0] == np.inf
    assert np.all(np.diff(thr) < 0)
    assert thr.size == np.unique(s).size + 1  # every distinct score is a threshold
    trapezoid = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    assert trapezoid == pytest.approx(auc, abs=1e-12)


@pytest.mark.parametrize("target", [0.5, 0.9, 0.99, 1.0])
def test_threshold_for_sensitivity_is_the_largest_that_reaches_target(target: float) -> None:
    rng = np.random.default_rng(5)
    y = rng.random(400) < 0.5
    s = rng.random(400) * 0.6 + 0.4 * y
    t = threshold_for_sensitivity(y, s, target)
    sens = (s[y] >= t).mean()
    assert sens >= target
    above = np.min(s[s > t]) if (s > t).any() else np.inf
    assert (s[y] >= above).mean() < target  # any larger threshold misses the target


def test_threshold_errors() -> None:
    with pytest.raises(ValueError, match="target sensitivity"):
        threshold_for_sensitivity(np.array([1], bool), np.array([0.5]), 0.0)
    with pytest.raises(ValueError, match="no positive"):
        threshold_for_sensitivity(np.zeros(3, bool), np.zeros(3), 0.9)


def test_sensitivity_at_specificity_floor() -> None:
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0], bool)
    s = np.array([0.9, 0.8, 0.3, 0.2, 0.7, 0.4, 0.1, 0.05])
    assert sensitivity_at_specificity(y, s, 1.0) == 0.5  # no false positive allowed
    assert sensitivity_at_specificity(y, s, 0.75) == 0.5
    assert sensitivity_at_specificity(y, s, 0.5) == 1.0  # threshold 0.2: 2 of 4 benign above
    assert sensitivity_at_specificity(y, s, 0.25) == 1.0


def test_screening_score_positive_classes() -> None:
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    score, mask = screening_score(p, ["benign", "gleason3", "gleason4"])
    assert mask.tolist() == [False, True, True] and np.allclose(score, [0.3, 0.9])
    score, _ = screening_score(p, ["benign", "gleason3", "gleason4"], positive="gleason4")
    assert np.allclose(score, [0.1, 0.6])
    with pytest.raises(ValueError, match="positive"):
        screening_score(p, ["benign", "a", "b"], positive="nope")
    with pytest.raises(ValueError, match="columns"):
        screening_score(p, ["benign", "cancer"])
    y, score = screening_labels(np.array([0, 2]), p, ["benign", "gleason3", "gleason4"])
    assert y.tolist() == [False, True] and np.allclose(score, [0.3, 0.9])


# -- the model-selection criterion of training ---------------------------------------------------
def test_check_select() -> None:
    for ok in (SELECT_DEFAULT, "accuracy", "auc", "loss", "sensitivity@specificity>=1"):
        check_select(ok)
    for bad in ("f1", "sensitivity@specificity>=1.5", "sensitivity@specificity>0.5"):
        with pytest.raises(ValueError, match="select"):
            check_select(bad)


def test_validation_metrics_and_selection_key() -> None:
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 2, 120)
    p1 = np.clip(0.5 * labels + rng.random(120) * 0.6, 0, 1)
    prob = np.stack([1 - p1, p1], axis=1)
    row = validation_metrics(labels, prob, ["benign", "cancer"], "sensitivity@specificity>=0.8")
    y = labels == 1
    test = p1 >= 0.5
    assert row["val_sensitivity"] == np.sum(y & test) / np.sum(y)
    assert row["val_specificity"] == np.sum(~y & ~test) / np.sum(~y)
    assert row["val_accuracy"] == np.mean(prob.argmax(axis=1) == labels)
    assert row["val_auc"] == _ref_roc_auc(y, p1)
    assert row["val_select"] == _ref_sens_at_spec(y, p1, 0.8)
    want_loss = -np.log(np.clip(prob[np.arange(120), labels], 1e-12, None)).mean()
    assert row["val_loss"] == want_loss
    default = validation_metrics(labels, prob, ["benign", "cancer"], "auc")
    assert default["val_select"] == _ref_sens_at_spec(y, p1, 0.5)
    assert selection_key("auc", row) == row["val_auc"]
    assert selection_key("loss", row) == -row["val_loss"]
    assert selection_key(SELECT_DEFAULT, row) == row["val_select"]
    assert selection_key("auc", {"val_auc": None}) == -math.inf
    assert selection_key("auc", {"val_auc": math.nan}) == -math.inf
    one_class = validation_metrics(np.zeros(4, int), np.full((4, 2), 0.5), ["benign", "cancer"])
    assert math.isnan(one_class["val_auc"]) and math.isnan(one_class["val_sensitivity"])


def test_import_is_light() -> None:
    code = (
        "import sys, prostate_fast.metrics, prostate_fast.evaluate, prostate_fast.train; "
        "assert 'sklearn' not in sys.modules and 'mxnet' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- bootstrap intervals ------------------------------------------------------------------------
def _ref_bootstrap(y, s, thr, clusters, n_boot, seed, level=0.95):
    """Resample by building the replicate explicitly (whole slides or tiles), brute-force AUC."""
    rng = np.random.default_rng(seed)
    names = sorted(set(clusters)) if clusters is not None else []
    vals = {"auc": [], "sensitivity": [], "specificity": []}
    for _ in range(n_boot):
        if len(names) >= 2:
            drawn = rng.integers(0, len(names), len(names))
            idx = np.concatenate([np.flatnonzero(clusters == names[d]) for d in drawn])
        else:
            idx = rng.integers(0, y.size, y.size)
        yy, ss = y[idx], s[idx]
        pos, neg = ss[yy], ss[~yy]
        if pos.size and neg.size:
            d = pos[:, None] - neg[None, :]
            vals["auc"].append(((d > 0) + 0.5 * (d == 0)).mean())
        if pos.size:
            vals["sensitivity"].append((pos >= thr).mean())
        if neg.size:
            vals["specificity"].append((neg < thr).mean())
    q = [50 * (1 - level), 50 * (1 + level)]
    return {k: np.percentile(v, q) for k, v in vals.items()}


@pytest.mark.parametrize("by_slide", [False, True])
def test_bootstrap_intervals_match_explicit_resampling(by_slide: bool) -> None:
    rng = np.random.default_rng(7)
    y = rng.random(120) < 0.4
    s = np.round(np.clip(0.3 * y + rng.random(120) * 0.7, 0, 1), 2)  # ties included
    clusters = np.array(["a", "b", "c", "d", "e"])[rng.integers(0, 5, 120)] if by_slide else None
    got = bootstrap_intervals(y, s, 0.5, clusters, n_boot=200, seed=3)
    ref = _ref_bootstrap(y, s, 0.5, clusters, 200, 3)
    assert got["unit"] == ("slide" if by_slide else "tile") and got["replicates"] == 200
    for key in ("auc", "sensitivity", "specificity"):
        assert got[key] == pytest.approx(list(ref[key]), abs=1e-12)
        assert got[key][0] <= got[key][1]
    assert got["auc"][0] <= roc_auc(y, s) <= got["auc"][1]


def test_bootstrap_intervals_deterministic_and_errors() -> None:
    rng = np.random.default_rng(1)
    y, s = rng.random(60) < 0.5, rng.random(60)
    a = bootstrap_intervals(y, s, 0.5, seed=4)
    assert a == bootstrap_intervals(y, s, 0.5, seed=4) and a["replicates"] == 1000
    assert a != bootstrap_intervals(y, s, 0.5, seed=5)
    one = bootstrap_intervals(np.ones(10, bool), s[:10], 0.5, n_boot=50)
    assert all(math.isnan(v) for v in one["auc"]) and all(math.isnan(v) for v in one["specificity"])
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_intervals(y, s, 0.5, n_boot=0)
    with pytest.raises(ValueError, match="level"):
        bootstrap_intervals(y, s, 0.5, level=1.0)
    with pytest.raises(ValueError, match="clusters"):
        bootstrap_intervals(y, s, 0.5, ["a"])
