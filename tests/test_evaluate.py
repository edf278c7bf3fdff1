"""Evaluate stage: predictions as a screening test (pooled, per slide), reports of a model folder.

The metrics themselves are tested in test_metrics.py.
"""

from __future__ import annotations

import csv
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from _tiny_dataset import make_tiny_dataset, write_split
from _tiny_model import make_model

from prostate_fast.cli.main import main
from prostate_fast.errors import DatasetError, ModelError
from prostate_fast.evaluate import SmallSplitWarning, evaluate_model, evaluate_predictions
from prostate_fast.metrics import bootstrap_intervals, roc_auc, threshold_for_sensitivity


def _auc_pairs(y: np.ndarray, s: np.ndarray) -> float:
    pos, neg = s[y], s[~y]
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


# -- predictions ------------------------------------------------------------------------------
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
    want = {"report.json", "report.txt", "slides.csv", "predictions.csv", "roc.png"}
    assert names == want | {"confusion.png"}
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


def test_public_metric_names_still_import_from_evaluate() -> None:
    from prostate_fast import evaluate, metrics

    for name in (
        "Confusion",
        "roc_auc",
        "roc_curve",
        "screening_score",
        "threshold_for_sensitivity",
    ):
        assert getattr(evaluate, name) is getattr(metrics, name)
    assert evaluate.sensitivity_at_specificity is metrics.sensitivity_at_specificity


# -- honest validation (issue 14) ---------------------------------------------------------------
def _csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def with_test(folders, tmp_path_factory):
    """The tiny dataset plus a test split of two slides (x0, x1; 15 tiles of each class each)."""

    ds = tmp_path_factory.mktemp("evaltest") / "ds"
    shutil.copytree(folders[0], ds)
    info = json.loads((ds / "dataset.json").read_text())
    info["splits"]["test"] = write_split(ds, "test", ["x0", "x1"], 30, 32, 9)
    (ds / "dataset.json").write_text(json.dumps(info))
    return ds, folders[1]


def test_threshold_tuned_on_val_never_reported_split(with_test, tmp_path: Path) -> None:
    ds, model_src = with_test
    model = tmp_path / "m"
    shutil.copytree(model_src, model)
    val = evaluate_model(model, ds, "val", threshold=0.5, out_dir=tmp_path / "val")
    rows = _csv_rows(tmp_path / "val" / "predictions.csv")
    y = np.array([r["label"] == "cancer" for r in rows])
    tuned = threshold_for_sensitivity(y, np.array([float(r["score"]) for r in rows]), 0.9)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # a held-out report warns of nothing
        ev = evaluate_model(
            model, ds, "test", out_dir=tmp_path / "t", target_sensitivity=0.9, write_threshold=True
        )
    assert val.pooled.n == 40 and ev.pooled.n == 60 and list(ev.per_slide) == ["x0", "x1"]
    assert ev.threshold == tuned
    report = json.loads((tmp_path / "t" / "report.json").read_text())
    assert report["split"] == "test" and report["calibration_split"] == "val"
    assert report["threshold_optimistic"] is False
    assert {r["slide"] for r in _csv_rows(tmp_path / "t" / "predictions.csv")} == {"x0", "x1"}
    assert "optimistic" not in (tmp_path / "t" / "report.txt").read_text()
    assert json.loads((model / "model.json").read_text())["threshold"]["cancer"] == tuned


def test_threshold_on_its_own_split_is_labelled_optimistic(folders, tmp_path: Path) -> None:
    ds, model = folders
    with pytest.warns(UserWarning, match="optimistic"):
        evaluate_model(model, ds, "val", out_dir=tmp_path / "r")
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["threshold_optimistic"] is True and report["calibration_split"] == "val"
    assert "optimistic (tuned on this split)" in (tmp_path / "r" / "report.txt").read_text()
    evaluate_model(model, ds, "val", threshold=0.3, out_dir=tmp_path / "given")
    given = json.loads((tmp_path / "given" / "report.json").read_text())
    assert given["threshold_optimistic"] is False and given["calibration_split"] is None


def test_predictions_csv_full_precision(folders, tmp_path: Path) -> None:
    ds, model = folders
    ev = evaluate_model(model, ds, "val", threshold=0.5, out_dir=tmp_path / "r")
    rows = _csv_rows(tmp_path / "r" / "predictions.csv")
    y = np.array([r["label"] == "cancer" for r in rows])
    score = np.array([float(r["score"]) for r in rows])
    assert roc_auc(y, score) == ev.auc
    assert json.loads((tmp_path / "r" / "report.json").read_text())["pooled"]["auc"] == ev.auc
    cancer = np.array([float(r["cancer"]) for r in rows])
    assert np.array_equal((score >= 0.5).astype(int), [int(r["test_positive"]) for r in rows])
    assert np.array_equal(cancer, score)  # two classes: the score is p(cancer), bit for bit


def test_small_split_warning_and_absent_class() -> None:
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(10, int), np.ones(100, int)]
    p1 = rng.random(110)
    with pytest.warns(SmallSplitWarning, match="split 'val' has only 10 benign"):
        ev = evaluate_predictions(y, p1, split="val", bootstrap=0)
    assert ev.notes and "only 10 benign" in ev.report() and ev.to_dict()["warnings"] == [*ev.notes]
    with pytest.warns(SmallSplitWarning, match="no cancer tile: AUC and threshold are not"):
        ev = evaluate_predictions(np.zeros(30, int), p1[:30], bootstrap=50)
    assert "AUC n/a" in ev.report() and "here: n/a" in ev.report()
    assert ev.to_dict()["pooled"]["auc"] is None
    assert ev.to_dict()["bootstrap"]["auc"] == [None, None]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        evaluate_predictions(np.r_[np.zeros(20, int), np.ones(20, int)], p1[:40], bootstrap=0)


def test_bootstrap_intervals_in_the_report() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 200)
    p1 = np.clip(0.6 * y + rng.random(200) * 0.5, 0, 1)
    slides = np.array(["a", "b", "c", "d"])[rng.integers(0, 4, 200)]
    ev = evaluate_predictions(y, p1, slides, threshold=0.5, seed=2)
    ref = bootstrap_intervals(y == 1, p1, 0.5, slides, seed=2)
    assert ev.intervals == ref and ref["unit"] == "slide" and ref["replicates"] == 1000
    d = json.loads(json.dumps(ev.to_dict()))
    assert d["bootstrap"]["auc"] == ref["auc"] and d["bootstrap"]["level"] == 0.95
    assert "95% bootstrap interval (1000 replicates of 4 slides): AUC [" in ev.report()
    assert evaluate_predictions(y, p1, slides, seed=2).intervals == ev.intervals  # seeded


def test_cli_evaluate_warns_on_small_split(folders, tmp_path, capsys) -> None:
    ds = make_tiny_dataset(tmp_path / "ds", size=32, train_slides=1, per_slide=4, val_per_slide=24)
    out = tmp_path / "r"
    assert main(["evaluate", str(folders[1]), str(ds), "-o", str(out), "--threads", "1"]) == 0
    err = capsys.readouterr().err.splitlines()
    small = "prostate-fast: warning: split 'val' has only 12 benign tile(s) (< 20)"
    assert any(line.startswith(small) for line in err)
    assert any("optimistic" in line and line.startswith("prostate-fast: warning:") for line in err)
