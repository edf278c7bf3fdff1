"""More than two classes (issue 15): PANDA masks, per-class metrics, kappa, a Gleason model end to end.

The end-to-end fixture paints two small slides with six textured regions and writes their
Radboud-coded masks (0 glass, 1 stroma, 2 healthy epithelium, 3/4/5 Gleason 3/4/5) as PANDA does:
RGB TIFFs with the code in the red channel. The CLI labels them with ``--mask-scheme panda-radboud``,
packs a dataset, trains a small study CNN, evaluates it, predicts one slide and draws its overlay.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from prostate_fast.errors import AnnotationError
from prostate_fast.metrics import (
    class_metrics,
    decided_classes,
    grade_scale,
    primary_grades,
    quadratic_weighted_kappa,
    screening_score,
)

GRADES = ("benign", "gleason5", "gleason4", "gleason3")  # as `label --classes` lists them


# -- label masks: PANDA's RGB TIFFs carry the code in the red channel ----------------------------
def _slide_and_grid():
    from prostate_fast.slide import ArraySlide
    from prostate_fast.tile import full_grid

    slide = ArraySlide(np.full((400, 600, 3), 200, np.uint8))
    return slide, full_grid(slide, slide.choose_level(level=0), 100)


def _codes() -> np.ndarray:
    codes = np.zeros((100, 150), np.uint8)  # downsample 4
    for k, code in enumerate((1, 2, 3, 4, 5)):
        codes[:, 25 * k : 25 * k + 25] = code
    return codes


def _label(annotation: object, **kw: object):
    from prostate_fast.label import ClassMap, label_tiles

    slide, grid = _slide_and_grid()
    cmap = ClassMap.parse("gleason5;gleason4;gleason3", scheme="panda-radboud")
    return label_tiles(slide, annotation, grid, classes=cmap, white=False, **kw)


@pytest.mark.parametrize("kind", ["tiff-striped", "tiff-tiled", "png", "array", "grey-rgb"])
def test_rgb_mask_codes_are_read_from_the_red_channel(tmp_path: Path, kind: str) -> None:
    import tifffile

    codes = _codes()
    zero = np.zeros_like(codes)
    rgb = np.dstack([codes, zero, zero])
    want = _label(codes, source="mask")
    assert want.classes == GRADES and set(want.label.tolist()) == {0, 1, 2, 3}
    path = tmp_path / "mask.tif"
    if kind == "tiff-striped":
        tifffile.imwrite(path, rgb, photometric="rgb", compression="zlib", rowsperstrip=7)
    elif kind == "tiff-tiled":
        tifffile.imwrite(path, rgb, photometric="rgb", tile=(32, 48))
    elif kind == "png":
        path = tmp_path / "mask.png"
        cv2.imwrite(str(path), rgb[:, :, ::-1])  # OpenCV writes BGR: red stays the code
    elif kind == "array":
        path = rgb
    else:
        path = tmp_path / "mask.png"
        cv2.imwrite(str(path), np.dstack([codes] * 3))
    got = _label(path, source="mask")
    np.testing.assert_array_equal(got.label, want.label)
    np.testing.assert_array_equal(got.coverage, want.coverage)


def test_colour_masks_that_are_not_panda_codes_are_refused(tmp_path: Path) -> None:
    import tifffile

    codes = _codes()
    painted = np.dstack([codes, codes // 2, np.zeros_like(codes)])  # green is no code
    path = tmp_path / "colour.tif"
    tifffile.imwrite(path, painted, photometric="rgb")
    with pytest.raises(AnnotationError, match=r"colour\.tif.*red channel"):
        _label(path, source="mask")
    cv2.imwrite(str(tmp_path / "colour.png"), painted)
    with pytest.raises(AnnotationError, match=r"colour\.png.*colour image is no label mask"):
        _label(tmp_path / "colour.png", source="mask")


# -- metrics of several classes -----------------------------------------------------------------
def test_quadratic_weighted_kappa_equals_scikit_learn() -> None:
    from sklearn.metrics import cohen_kappa_score

    rng = np.random.default_rng(0)
    for _ in range(300):
        k, n = int(rng.integers(2, 7)), int(rng.integers(1, 40))
        a = rng.integers(0, k, n)
        b = (
            np.clip(a + rng.integers(-2, 3, n), 0, k - 1)
            if rng.random() < 0.7
            else rng.integers(0, k, n)
        )
        ours = quadratic_weighted_kappa(a, b, k)
        with warnings.catch_warnings():  # scikit-learn warns where kappa is undefined
            warnings.simplefilter("ignore")
            ref = cohen_kappa_score(a, b, weights="quadratic", labels=list(range(k)))
        if np.isnan(ref):
            assert np.isnan(ours)
        else:
            assert ours == pytest.approx(ref, abs=1e-12)
        if len(set(a) | set(b)) == k:  # every grade used: scikit-learn's default labels agree
            assert ours == pytest.approx(cohen_kappa_score(a, b, weights="quadratic"), abs=1e-12)
    assert quadratic_weighted_kappa([0, 1, 2], [0, 1, 2], 3) == 1.0
    assert np.isnan(quadratic_weighted_kappa([1, 1], [1, 1], 3))
    assert np.isnan(quadratic_weighted_kappa([], [], 3))
    with pytest.raises(ValueError, match="differ in length"):
        quadratic_weighted_kappa([0, 1], [0], 2)
    with pytest.raises(ValueError, match=r"in \[0, 2\)"):
        quadratic_weighted_kappa([0, 2], [0, 1], 2)


def test_class_metrics_equal_scikit_learn() -> None:
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    rng = np.random.default_rng(1)
    t = rng.integers(0, 4, 200)
    p = np.where(rng.random(200) < 0.7, t, rng.integers(0, 4, 200))
    p[p == 2] = 1  # class 2 is never decided: its precision is undefined
    matrix, rows = class_metrics(t, p, GRADES)
    np.testing.assert_array_equal(matrix, confusion_matrix(t, p, labels=range(4)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pr, rc, f1, sup = precision_recall_fscore_support(
            t, p, labels=range(4), zero_division=np.nan
        )
    for c, name in enumerate(GRADES):
        r = rows[name]
        assert r["support"] == sup[c]
        assert r["recall"] == pytest.approx(rc[c]) and r["f1"] == pytest.approx(f1[c], nan_ok=True)
        assert r["precision"] == pytest.approx(pr[c], nan_ok=True)
    assert np.isnan(rows["gleason4"]["precision"]) and rows["gleason4"]["f1"] == 0.0
    with pytest.raises(ValueError, match="differ in length"):
        class_metrics([0, 1], [0], GRADES)


def test_primary_grade_is_the_most_frequent_gleason_class() -> None:
    ascending = [GRADES[i] for i in grade_scale(GRADES)]
    assert ascending == ["benign", "gleason3", "gleason4", "gleason5"]
    assert grade_scale(("benign", "cancer")) == [0, 1]
    labels = np.array([0, 0, 0, 3, 3, 2, 1, 2, 1, 0, 0])
    slides = ["a", "a", "a", "a", "a", "a", "b", "b", "c", "c", "d"]
    # a: benign majority but gleason3 x2 beats gleason4 x1 -> gleason3 (1); b: g5 and g4 tie ->
    # the more severe, gleason5 (3); c: gleason5 (3); d: no cancer tile -> benign (0)
    assert primary_grades(labels, slides, GRADES) == {"a": 1, "b": 3, "c": 3, "d": 0}


def test_decided_classes_follow_the_screening_threshold() -> None:
    prob = np.array([[0.5, 0.1, 0.2, 0.2], [0.3, 0.1, 0.35, 0.25], [0.9, 0.0, 0.1, 0.0]])
    np.testing.assert_array_equal(decided_classes(prob, GRADES, 0.6), [0, 2, 0])
    np.testing.assert_array_equal(decided_classes(prob, GRADES, 0.5), [2, 2, 0])


def test_screening_score_of_several_classes_never_passes_1() -> None:
    p = np.array([[1e-8, 0.33333334, 0.33333334, 0.33333334]], np.float32)
    assert p[:, 1:].astype(np.float64).sum() > 1
    score, _ = screening_score(p, GRADES)
    assert score[0] == 1.0


def test_one_threshold_for_several_classes_tests_their_sum() -> None:
    from prostate_fast.predict.scoregrid import decide

    prob = np.array([[0.2, 0.3, 0.25, 0.25], [0.7, 0.1, 0.1, 0.1], [0.1, 0.1, 0.8, 0.0]])
    shared = np.full(3, 0.6, np.float32)
    np.testing.assert_array_equal(decide(prob, shared), [1, 0, 2])  # sum 0.8 >= 0.6: gleason5
    np.testing.assert_array_equal(decide(prob, np.array([0.6, 0.6, 0.7])), [0, 0, 2])


def test_evaluation_of_several_classes_reports_per_class_and_kappa() -> None:
    from sklearn.metrics import cohen_kappa_score

    from prostate_fast.evaluate import evaluate_predictions

    rng = np.random.default_rng(2)
    slides = np.repeat([f"s{i}" for i in range(8)], 30)
    y = rng.integers(0, 4, slides.size)
    y[slides == "s0"] = 0
    prob = rng.dirichlet(np.ones(4), slides.size)
    prob[np.arange(y.size), y] += 1.5 * (rng.random(y.size) < 0.8)
    prob /= prob.sum(axis=1, keepdims=True)
    ev = evaluate_predictions(y, prob, slides, classes=GRADES, threshold=0.5, bootstrap=0)
    g = ev.to_dict()["classes"]
    decided = decided_classes(prob, GRADES, 0.5)
    matrix, rows = class_metrics(y, decided, GRADES)
    assert g["matrix"] == matrix.tolist() and g["per_class"]["gleason3"] == rows["gleason3"]
    truth, pred = primary_grades(y, slides, GRADES), primary_grades(decided, slides, GRADES)
    ref = cohen_kappa_score(
        list(truth.values()), list(pred.values()), weights="quadratic", labels=range(4)
    )
    assert g["kappa"] == pytest.approx(ref)
    assert g["primary_grade"]["s0"]["truth"] == "benign"
    text = ev.report()
    assert "per class, one-vs-rest" in text and "quadratic weighted kappa" in text
    assert "scale benign < gleason3 < gleason4 < gleason5" in text
    two = evaluate_predictions(
        (y > 0).astype(int), np.c_[prob[:, 0], 1 - prob[:, 0]], slides, bootstrap=0
    )
    assert "classes" not in two.to_dict() and "per class" not in two.report()  # unchanged


# -- end to end: a Radboud-coded mask trains a Gleason model that predicts and colours ---------
COLOURS = {1: (232, 180, 205), 2: (238, 205, 225), 3: (170, 110, 175), 4: (110, 95, 190)}
COLOURS[5] = (85, 35, 100)
LAYOUT = ((0, 1, 2, 3), (4, 5, 3, 0))  # Radboud code of each 256 px block
BLOCK = 256


def _texture(rng: np.random.Generator, code: int) -> np.ndarray:
    s = BLOCK
    img = np.empty((s, s, 3))
    img[:] = COLOURS.get(code, (243, 243, 243))
    img += rng.normal(0, 2 if code == 0 else 8, (s, s, 1))
    if code == 1:  # stroma: fibres
        for y in range(0, s, 6):
            img[y : y + 2] -= 30
    elif code == 2:  # healthy epithelium: pale lumina
        for _ in range(s // 4):
            cv2.circle(img, tuple(int(v) for v in rng.integers(0, s, 2)), 6, (250, 240, 245), -1)
    elif code >= 3:  # Gleason 3, 4, 5: nuclei of different density and size
        n, r = {3: (s * 2, 2), 4: (s * 6, 1), 5: (s, 3)}[code]
        for _ in range(n):
            cv2.circle(img, tuple(int(v) for v in rng.integers(0, s, 2)), r, (60, 20, 90), -1)
    return img


def _radboud_slide(root: Path, name: str, seed: int) -> tuple[Path, Path]:
    """A 1024 x 512 slide at 0.5 um/px and its Radboud mask (downsample 4) as PANDA's RGB TIFF."""
    import tifffile

    rng = np.random.default_rng(seed)
    rgb = np.zeros((2 * BLOCK, 4 * BLOCK, 3))
    codes = np.zeros((2 * BLOCK // 4, 4 * BLOCK // 4), np.uint8)
    for r, row in enumerate(LAYOUT):
        for c, code in enumerate(row):
            rgb[r * BLOCK : (r + 1) * BLOCK, c * BLOCK : (c + 1) * BLOCK] = _texture(rng, code)
            codes[r * BLOCK // 4 : (r + 1) * BLOCK // 4, c * BLOCK // 4 : (c + 1) * BLOCK // 4] = (
                code
            )
    slide = root / f"{name}.tif"
    tifffile.imwrite(
        slide,
        np.clip(rgb, 0, 255).astype(np.uint8),
        tile=(256, 256),
        photometric="rgb",
        compression="zlib",
        resolution=(2e4, 2e4),
        resolutionunit="CENTIMETER",
        metadata=None,
        description='{"prostate_fast": {"objective_power": 20.0}}',
    )
    mask = root / f"{name}-mask.tif"
    zero = np.zeros_like(codes)
    tifffile.imwrite(mask, np.dstack([codes, zero, zero]), photometric="rgb", compression="zlib")
    return slide, mask


@pytest.fixture(scope="module")
def gleason(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two Radboud-coded slides -> label -> dataset -> a trained model -> predict -> overlay."""
    from prostate_fast.cli.main import main

    root = tmp_path_factory.mktemp("gleason")
    tables = []
    for name, seed in (("radboud-a", 1), ("radboud-b", 2)):
        slide, mask = _radboud_slide(root, name, seed)
        out = root / f"{name}.npz"
        argv = ["label", str(slide), "--mask", str(mask), "--mask-scheme", "panda-radboud"]
        assert (
            main(
                [
                    *argv,
                    "--classes",
                    "gleason5;gleason4;gleason3",
                    "--tile-size",
                    "32",
                    "-o",
                    str(out),
                ]
            )
            == 0
        )
        tables.append(str(out))
    ds, model = root / "dataset", root / "model"
    assert (
        main(
            ["dataset", *tables, "-o", str(ds), "--val-slides", "radboud-b.tif", "--balance", "all"]
        )
        == 0
    )
    small = ["--network", "study", "--conv-filters", "8,16", "--dense-units", "32,16,8"]
    train = ["train", str(ds), "-o", str(model), "--epochs", "12", *small, "--threads", "2"]
    assert main([*train, "--select", "balanced_accuracy", "--no-progress", "--quiet"]) == 0
    assert main(["evaluate", str(model), str(ds), "--split", "val"]) == 0
    slide = root / "radboud-b.tif"
    assert main(["predict", str(model), str(slide), "-o", str(root / "scores")]) == 0
    assert main(["overlay", str(slide), str(root / "scores.npz"), "-o", str(root / "ov.tif")]) == 0
    return root


def test_radboud_mask_labels_the_gleason_classes(gleason: Path) -> None:
    from prostate_fast.label import load_label_table

    table = load_label_table(gleason / "radboud-a.npz")
    assert table.classes == GRADES
    counts = table.counts()  # stroma and healthy epithelium are benign; glass is no class
    assert counts["gleason5"] == counts["gleason4"] == 64 and counts["gleason3"] == 128
    assert counts["benign"] >= 128


def test_gleason_model_is_evaluated_per_class(gleason: Path) -> None:
    report = json.loads((gleason / "model" / "evaluation-val" / "report.json").read_text())
    g = report["classes"]
    assert g["names"] == list(GRADES) and np.array(g["matrix"]).shape == (4, 4)
    for name in GRADES:
        assert g["per_class"][name]["recall"] >= 0.8, g["per_class"]
    assert g["primary_grade"] == {"radboud-b.tif": {"truth": "gleason3", "predicted": "gleason3"}}
    text = (gleason / "model" / "evaluation-val" / "report.txt").read_text()
    assert "confusion matrix: rows true class, columns decided class" in text


def test_gleason_model_predicts_and_colours_its_classes(gleason: Path) -> None:
    from prostate_fast.predict import load_score_grid
    from prostate_fast.slide import open_slide

    grid = load_score_grid(gleason / "scores.npz")
    assert grid.classes == GRADES
    model = json.loads((gleason / "model" / "model.json").read_text())
    colours = {c: np.array(model["colours"][c], float) for c in GRADES[1:]}
    assert len({tuple(v) for v in colours.values()}) == 3  # a colour per class
    truth = {
        code: GRADES.index(n) for code, n in ((3, "gleason3"), (4, "gleason4"), (5, "gleason5"))
    }
    pred = grid.predicted
    with open_slide(gleason / "radboud-b.tif") as sl, open_slide(gleason / "ov.tif") as ov:
        seen = set()
        for (x, y), p, frac in zip(grid.l0_xy, pred, grid.tissue_fraction, strict=True):
            code = LAYOUT[y // BLOCK][x // BLOCK]
            if code in truth:  # a Gleason tile is predicted as its own grade (most of them)
                seen.add(int(p))
            if frac < 1:
                continue
            orig = sl.read_region((int(x), int(y)), 0, (32, 32)).reshape(-1, 3).mean(0)
            out = ov.read_region((int(x), int(y)), 0, (32, 32)).reshape(-1, 3).mean(0)
            expect = {
                0: orig,
                **{GRADES.index(c): (orig * 154 + v * 102) / 256 for c, v in colours.items()},
            }
            nearest = min(expect, key=lambda k: np.abs(out - expect[k]).sum())
            assert nearest == p, (x, y, p, out, expect)
        assert seen >= {1, 2, 3}
    counts = grid.class_counts()
    assert all(counts[c] >= 48 for c in GRADES[1:]), counts
    thumb = cv2.imread(str(gleason / "ov-thumb.png"))[:, :, ::-1]
    legend = thumb[512:].reshape(-1, 3)  # the panel below the 1024 x 512 slide
    for c, v in colours.items():
        assert (legend == v.astype(np.uint8)).all(axis=1).sum() > 50, c  # its swatch
