"""Evaluate stage: screening metrics against brute-force references, reports of a model folder."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from _tiny_dataset import make_tiny_dataset
from _tiny_model import make_model

from prostate_fast.cli.main import main
from prostate_fast.errors import DatasetError, ModelError
from prostate_fast.evaluate import (
    Confusion,
    evaluate_model,
    evaluate_predictions,
    roc_auc,
    roc_curve,
    screening_score,
    sensitivity_at_specificity,
    threshold_for_sensitivity,
)


def _auc_pairs(y: np.ndarray, s: np.ndarray) -> float:
    pos, neg = s[y], s[~y]
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


# -- metrics ------------------------------------------------------------------------------------
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


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_auc_matches_pairwise_count_and_trapezoid(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.random(300) < 0.4
    s = np.round(rng.random(300) + 0.3 * y, 1)  # many ties
    auc = roc_auc(y, s)
    assert auc == pytest.approx(_auc_pairs(y, s), abs=1e-12)
    fpr, tpr, thr = roc_curve(y, s)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1) and thr[0] == np.inf
    assert np.all(np.diff(thr) < 0)
    trapezoid = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    assert trapezoid == pytest.approx(auc, abs=1e-12)


def test_roc_auc_undefined_with_one_class() -> None:
    assert math.isnan(roc_auc(np.zeros(5, bool), np.arange(5.0)))
    assert roc_auc(np.array([0, 1], bool), np.array([0.2, 0.9])) == 1.0


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


def test_evaluate_predictions_per_slide_and_pooled() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 200)
    p1 = np.clip(0.6 * y + rng.random(200) * 0.5, 0, 1)
    prob = np.stack([1 - p1, p1], axis=1)
    slides = np.array(["a", "b", "c", "d"])[rng.integers(0, 4, 200)]
    ev = evaluate_predictions(y, prob, slides, threshold=0.5, target_sensitivity=0.95)
    assert list(ev.per_slide) == ["a", "b", "c", "d"]
    total = sum(c.matrix() for c in ev.per_slide.values())
    assert np.array_equal(total, ev.pooled.matrix())
    test = p1 >= 0.5
    assert ev.pooled.tp == int(np.sum(test & (y == 1))) and ev.pooled.tn == int(
        np.sum(~test & (y == 0))
    )
    assert ev.auc == pytest.approx(_auc_pairs(y == 1, p1))
    assert (p1[y == 1] >= ev.threshold_for_target).mean() >= 0.95
    d = json.loads(json.dumps(ev.to_dict()))
    assert d["pooled"]["n"] == 200 and d["positive"] == ["cancer"]
    assert "slide a" in ev.report() and "test positive" in ev.report()


def test_evaluate_predictions_errors() -> None:
    with pytest.raises(ValueError, match="no prediction"):
        evaluate_predictions(np.zeros(0, int), np.zeros((0, 2)))
    with pytest.raises(ValueError, match="class indices"):
        evaluate_predictions(np.array([0, 2]), np.full((2, 2), 0.5))
    with pytest.raises(ValueError, match="rows"):
        evaluate_predictions(np.array([0, 1, 1]), np.full((2, 2), 0.5))
    with pytest.raises(ValueError, match="slides"):
        evaluate_predictions(np.array([0, 1]), np.full((2, 2), 0.5), ["a"])


# -- model folders ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    ds = make_tiny_dataset(root / "ds", size=32, train_slides=1, per_slide=8, val_per_slide=40)
    model = make_model(root / "model", tile_size=32, threshold=0.5)
    return ds, model


def test_evaluate_model_writes_report(folders, tmp_path: Path) -> None:
    ds, model = folders
    out = tmp_path / "report"
    ev = evaluate_model(model, ds, "val", out_dir=out, target_sensitivity=0.9, n_threads=1)
    assert ev.pooled.n == 40 and list(ev.per_slide) == ["v0"]
    assert ev.pooled.sensitivity >= 0.9  # threshold chosen on val for sensitivity 0.9
    names = {p.name for p in out.iterdir()}
    assert names == {"report.json", "report.txt", "slides.csv", "predictions.csv", "roc.png",
                     "confusion.png"}  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    assert report["pooled"]["threshold"] == ev.threshold and report["split"] == "val"
    assert (out / "predictions.csv").read_text().count("\n") == 41
    with pytest.raises(FileExistsError):
        evaluate_model(model, ds, "val", out_dir=out)


def test_evaluate_model_given_threshold_and_write_back(folders, tmp_path: Path) -> None:
    ds, model_src = folders
    import shutil

    model = tmp_path / "m"
    shutil.copytree(model_src, model)
    ev = evaluate_model(model, ds, threshold=0.0, write_threshold=True, out_dir=tmp_path / "r")
    assert ev.pooled.sensitivity == 1.0 and ev.pooled.specificity == 0.0
    info = json.loads((model / "model.json").read_text())
    assert info["threshold"]["cancer"] == 0.0


def test_evaluate_model_class_mismatch(folders, tmp_path: Path) -> None:
    ds, _ = folders
    model = make_model(tmp_path / "m3", tile_size=32, classes=("benign", "g3", "g4"))
    with pytest.raises(ModelError, match="classes"):
        evaluate_model(model, ds, out_dir=tmp_path / "r")
    model = make_model(tmp_path / "m64", tile_size=64)
    with pytest.raises(ModelError, match="tile size"):
        evaluate_model(model, ds, out_dir=tmp_path / "r")


def test_evaluate_model_bad_folders(folders, tmp_path: Path) -> None:
    ds, model = folders
    with pytest.raises(ModelError, match="model.json"):
        evaluate_model(tmp_path, ds)
    with pytest.raises(DatasetError, match="dataset.json"):
        evaluate_model(model, tmp_path, out_dir=tmp_path / "r")


def test_cli_evaluate(folders, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ds, model = folders
    out = tmp_path / "cli"
    assert main(["evaluate", str(model), str(ds), "-o", str(out), "--threads", "1"]) == 0
    text = capsys.readouterr().out
    assert "true diagnosis" in text and "slide v0" in text and (out / "roc.png").is_file()
    assert main(["evaluate", str(model), str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope" in err[0]
