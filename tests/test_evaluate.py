"""Evaluate stage: predictions as a screening test (pooled, per slide), reports of a model folder.

The metrics themselves are tested in test_metrics.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _tiny_dataset import make_tiny_dataset
from _tiny_model import make_model

from prostate_fast.cli.main import main
from prostate_fast.errors import DatasetError, ModelError
from prostate_fast.evaluate import evaluate_model, evaluate_predictions


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
