"""Screening: cancer scores, worklist ranking (cancer slides first), per-slide outputs, CLI."""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from _scoregrid import make_scores

from prostate_fast.cli.main import main
from prostate_fast.screen import (
    ScreeningOptions,
    WorklistRow,
    cancer_score,
    rank_worklist,
    screen_scored,
    screen_slides,
    write_worklist,
)


class ColourRulePredictor:
    """A 'model' without weights: p(cancer) from the share of dark (nuclear) pixels of a tile.

    The synthetic slides' cancer is dense dark nuclei, so this ranks slides the way a trained
    network would, in milliseconds: it lets the whole screening path run end to end in a test.
    """

    def __new__(cls):
        from prostate_fast.predict import ModelInfo, Predictor

        class _Rule(Predictor):
            engine = "colour-rule"

            def _run(self, x: np.ndarray) -> np.ndarray:
                dark = (x.mean(axis=1) * 255 < 90).mean(axis=(1, 2))
                p = 1 / (1 + np.exp(-(dark - 0.18) * 30))
                return np.stack([1 - p, p], axis=1).astype(np.float32)

        here = Path("colour-rule")
        info = ModelInfo(
            model_dir=here,
            symbol_file=here / "s.json",
            params_file=here / "p.params",
            classes=("benign", "cancer"),
            colours={"cancer": (0, 255, 0)},
            tile_size=64,
            magnification=20.0,
            mpp=0.5,
            scale=1 / 255,
            channel_order="RGB",
            input_name="data",
            thresholds={"cancer": 0.5},
            epoch=None,
            meta={},
        )
        return _Rule(info, ("cpu", 0), 64, 1)


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from prostate_fast.synthetic import make_synthetic

    out = tmp_path_factory.mktemp("screen_slides")
    spec = {"c1": 2, "b1": 0, "c2": 1, "b2": 0}  # name: number of cancer regions
    return {
        n: make_synthetic(out, name=n, width=2048, height=1024, seed=i + 11, n_cores=2, n_cancer=k)
        for i, (n, k) in enumerate(spec.items())
    }


def test_cancer_score(synthetic_small) -> None:
    s = make_scores(synthetic_small)
    sc = cancer_score(s)
    pred = np.asarray(s.predicted)
    assert sc["n_tiles"] == len(s.tile_rc) and sc["n_positive"] == int((pred > 0).sum()) > 0
    assert sc["positive_share"] == pytest.approx(sc["n_positive"] / sc["n_tiles"])
    assert sc["positive_area_mm2"] == pytest.approx(sc["n_positive"] * (128 * 0.5 / 1000) ** 2)
    p = np.sort(s.prob[:, 1])[::-1]
    assert sc["top_probability"] == pytest.approx(p[0])
    assert sc["top10_mean"] == pytest.approx(p[:10].mean(), rel=1e-6)
    k = max(10, -(-len(p) // 100))
    assert sc["score"] == pytest.approx(p[:k].mean(), rel=1e-6)
    empty = replace(s, tile_rc=s.tile_rc[:0], l0_xy=s.l0_xy[:0], prob=s.prob[:0], mpp=None)
    e = cancer_score(empty)
    assert (e["n_tiles"], e["n_positive"], e["top_probability"], e["positive_area_mm2"]) == (
        0,
        0,
        0.0,
        None,
    )
    assert e["score"] == 0.0


def test_many_weak_positives_do_not_outrank_a_few_strong_ones() -> None:
    from prostate_fast.screen import WorklistRow, rank_worklist

    # A large benign slide: many tiles just over a low (99 %-sensitivity) threshold.
    benign = WorklistRow(0, "benign.tif", "ok", n_tiles=5000, n_positive=2000, score=0.85)
    cancer = WorklistRow(0, "cancer.tif", "ok", n_tiles=3000, n_positive=900, score=0.999)
    assert [r.slide for r in rank_worklist([benign, cancer])] == ["cancer.tif", "benign.tif"]


def test_rank_worklist_priority(tmp_path) -> None:
    rows = [
        WorklistRow(0, "a.tif", "ok", 100, 0, top_probability=0.4),
        WorklistRow(0, "b.tif", "ok", 100, 12, top_probability=0.9),
        WorklistRow(0, "c.tif", "error: damaged"),
        WorklistRow(0, "d.tif", "ok", 100, 12, top_probability=0.95),
        WorklistRow(0, "e.tif", "ok", 100, 0, top_probability=0.45),
    ]
    ranked = rank_worklist(rows)
    assert [r.slide for r in ranked] == ["c.tif", "d.tif", "b.tif", "e.tif", "a.tif"]
    assert [r.rank for r in ranked] == [1, 2, 3, 4, 5]
    path = write_worklist(ranked, tmp_path / "w.csv")
    got = list(csv.DictReader(path.open()))
    assert got[0]["slide"] == "c.tif" and got[0]["status"] == "error: damaged"
    assert got[1]["rank"] == "2" and got[1]["n_positive"] == "12"
    with pytest.raises(FileExistsError):
        write_worklist(ranked, path)


def test_truth_scores_rank_cancer_first(slides, tmp_path) -> None:
    rows = [screen_scored(s.slide, make_scores(s, tile=64), tmp_path) for s in slides.values()]
    ranked = rank_worklist(rows)
    assert {r.slide for r in ranked[:2]} == {"c1.tif", "c2.tif"}
    assert all(r.n_positive == 0 for r in ranked[2:])
    for r in ranked:
        for f in (r.overlay, r.thumbnail, r.geojson, r.scores):
            assert Path(f).is_file() and Path(f).parent == tmp_path / Path(r.slide).stem


def test_screen_slides_end_to_end(slides, tmp_path) -> None:
    import openslide

    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"II*\x00" + bytes(100))
    paths = [slides[n].slide for n in ("b1", "c1", "b2", "c2")] + [broken]
    done = []
    options = ScreeningOptions(n_threads=2, outline=1)
    ranked = screen_slides(
        ColourRulePredictor(), paths, tmp_path / "out", options, progress=done.append
    )
    assert len(done) == 5
    assert ranked[0].slide == "broken.tif" and ranked[0].status.startswith("error: ")
    assert {r.slide for r in ranked[1:3]} == {"c1.tif", "c2.tif"}
    assert ranked[1].n_positive > ranked[3].n_positive
    assert not (tmp_path / "out" / "broken").exists()
    csv_rows = list(csv.DictReader((tmp_path / "out" / "worklist.csv").open()))
    assert [r["slide"] for r in csv_rows] == [r.slide for r in ranked]
    osr = openslide.OpenSlide(ranked[1].overlay)
    assert osr.dimensions == (2048, 1024)
    osr.close()
    # everything exists now: a second run refuses before doing anything
    with pytest.raises(FileExistsError):
        screen_slides(ColourRulePredictor(), paths[:1], tmp_path / "out")
    with pytest.raises(ValueError, match="same stem"):
        screen_slides(ColourRulePredictor(), [paths[0], Path("x") / paths[0].name], tmp_path / "o")
    with pytest.raises(ValueError, match="at least one"):
        screen_slides(ColourRulePredictor(), [], tmp_path / "o")


def test_cli_overlay(synthetic_small, tmp_path, capsys) -> None:
    s = make_scores(synthetic_small)
    npz = s.save(tmp_path / "s.npz")
    out = tmp_path / "o.tif"
    argv = [
        "overlay",
        str(synthetic_small.slide),
        str(npz),
        "-o",
        str(out),
        "--alpha",
        "0.5",
        "--mode",
        "graded",
        "--outline",
        "2",
        "--colour",
        "cancer=255,0,0",
        "--geojson",
        str(tmp_path / "o.geojson"),
        "--threads",
        "2",
    ]
    assert main(argv) == 0
    assert out.is_file() and (tmp_path / "o-thumb.png").is_file()
    assert (tmp_path / "o.geojson").is_file()
    assert "o.tif" in capsys.readouterr().out
    assert main(argv) == 2  # exists
    assert "already exists" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0
    other = make_scores(synthetic_small, slide_name="other.svs").save(tmp_path / "x.npz")
    assert (
        main(["overlay", str(synthetic_small.slide), str(other), "-o", str(tmp_path / "y.tif")])
        == 2
    )
    assert "computed for" in capsys.readouterr().err and not (tmp_path / "y.tif").exists()
    with pytest.raises(SystemExit):
        main(["overlay", str(synthetic_small.slide), str(npz), "-o", "z.tif", "--colour", "red"])


def test_cli_screen(slides, tmp_path, capsys) -> None:
    pytest.importorskip("mxnet")
    from _tiny_model import make_model

    model = make_model(tmp_path / "model", tile_size=64)
    wl = tmp_path / "w.csv"
    paths = [str(slides[n].slide) for n in ("b1", "c1")]
    code = main(
        ["screen", str(model), *paths, "-o", str(wl), "--engine", "native", "--threads", "2"]
    )
    assert code == 0, capsys.readouterr().err
    rows = list(csv.DictReader(wl.open()))
    assert sorted(r["slide"] for r in rows) == ["b1.tif", "c1.tif"] and rows[0]["rank"] == "1"
    assert (tmp_path / "c1" / "c1-overlay.tif").is_file()  # --out-dir defaults to the CSV's folder
    out = capsys.readouterr().out
    assert "w.csv" in out
    missing = str(tmp_path / "nope.tif")
    code = main(
        ["screen", str(model), missing, "-o", str(tmp_path / "w2.csv"), "--engine", "native"]
    )
    assert code == 2  # a slide failed: the worklist is still written
    assert "nope.tif" in capsys.readouterr().err
    assert list(csv.DictReader((tmp_path / "w2.csv").open()))[0]["status"].startswith("error")


def test_cli_run_one_slide(slides, tmp_path, capsys) -> None:
    pytest.importorskip("mxnet")
    from _tiny_model import make_model

    model = make_model(tmp_path / "model", tile_size=64)
    out = tmp_path / "run"
    assert main(["run", str(model), str(slides["c1"].slide), "-o", str(out)]) == 0
    rows = list(csv.DictReader((out / "worklist.csv").open()))
    assert [(r["rank"], r["slide"], r["status"]) for r in rows] == [("1", "c1.tif", "ok")]
    for name in ("c1-overlay.tif", "c1-overlay-thumb.png", "c1.geojson", "c1-scores.npz"):
        assert (out / "c1" / name).is_file(), name
    assert main(["run", str(model), str(slides["c1"].slide), "-o", str(out)]) == 2  # exists
    assert "already exists" in capsys.readouterr().err


def test_screening_options_check_and_normalise() -> None:
    from dataclasses import FrozenInstanceError

    o = ScreeningOptions(thresholds={"cancer": 1}, colours={"cancer": [0, 255, 0]}, level=1)
    assert o.thresholds == {"cancer": 1.0} and o.colours == {"cancer": (0, 255, 0)}
    assert o.predict_kwargs() == {
        "engine": "gluon", "ctx": "cpu", "batch_size": 64, "precision": "fp32", "mpp": None,
        "level": 1, "ignore_domain": False, "ignore_scale": False, "thresholds": {"cancer": 1.0},
    }  # fmt: skip
    assert o.overlay_look() == {
        "alpha": 0.4, "mode": "class", "outline": 0, "colours": {"cancer": (0, 255, 0)},
        "quality": 90, "compression": "jpeg", "thumbnail_size": 2048,
    }  # fmt: skip
    with pytest.raises(FrozenInstanceError):
        o.engine = "onnx"  # type: ignore[misc]
    bad = [
        ({"engine": "tf"}, "engine"),
        ({"ctx": 0}, "ctx"),
        ({"batch_size": 0}, "batch_size"),
        ({"mpp": -1}, "mpp"),
        ({"level": 1.5}, "level"),
        ({"alpha": 2}, "alpha"),
        ({"mode": "x"}, "mode"),
        ({"outline": -1}, "outline"),
        ({"quality": 0}, "quality"),
        ({"compression": "lzw"}, "compression"),
        ({"thumbnail_size": 10}, "thumbnail_size"),
        ({"thresholds": {"cancer": 2}}, "thresholds"),
        ({"colours": {"c": (0, 0, 300)}}, "'c'"),
        ({"n_threads": -1}, "n_threads"),
    ]
    for kw, name in bad:
        with pytest.raises(ValueError, match=name):
            ScreeningOptions(**kw)


def test_screen_slides_opens_each_slide_once(slides, tmp_path, monkeypatch) -> None:
    from _open_count import count_opens

    opened = count_opens(monkeypatch)
    paths = [slides["c1"].slide, slides["b1"].slide]
    rows = screen_slides(
        ColourRulePredictor(), paths, tmp_path / "o", ScreeningOptions(n_threads=2)
    )
    assert [r.status for r in rows] == ["ok", "ok"]
    assert sorted(opened) == ["b1.tif", "c1.tif"]  # predict and overlay share the open slide
