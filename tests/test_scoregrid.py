"""ScoreGrid (one owner: prostate_fast.predict.scoregrid): round trips, the plain CSV, damaged
files and the decision rule. No model and no MXNet needed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from prostate_fast.errors import ProstateFastError


def _grid(n: int = 25, classes: tuple[str, ...] = ("benign", "cancer")):
    from prostate_fast.predict import ScoreGrid

    rng = np.random.default_rng(7)
    rc = np.stack(np.divmod(rng.choice(60, n, replace=False), 10), axis=1).astype(np.int32)
    p = rng.random((n, len(classes))).astype(np.float32)
    return ScoreGrid(
        slide_path="/data/s.svs",
        slide_name="s.svs",
        classes=classes,
        colours={"cancer": (0, 255, 0)},
        tile_size=128,
        stride=128,
        level=0,
        downsample=2.0,
        scale=1.0,
        mpp=0.5,
        grid_shape=(6, 10),
        tile_rc=rc,
        l0_xy=rc[:, ::-1].astype(np.int64) * 256,
        prob=p / p.sum(1, keepdims=True),
        thresholds={c: 0.4 for c in classes[1:]},
        model="/m",
        engine="gluon",
    )


@pytest.mark.parametrize("suffix", [".npz", ".csv"])
@pytest.mark.parametrize("n", [25, 0])
def test_score_grid_round_trip(tmp_path: Path, suffix: str, n: int) -> None:
    from prostate_fast.predict import load_score_grid

    g = _grid(n)
    path = g.save(tmp_path / f"scores{suffix}")
    h = load_score_grid(path)
    for name in ("tile_rc", "l0_xy", "prob"):
        a, b = getattr(g, name), getattr(h, name)
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    assert h.meta() == g.meta()
    np.testing.assert_array_equal(h.predicted, g.predicted)
    with pytest.raises(FileExistsError):
        g.save(path)
    assert [f.name for f in tmp_path.iterdir()] == [path.name]  # nothing partial left behind


def test_score_grid_csv_is_plain(tmp_path: Path) -> None:
    import csv

    g = _grid()
    path = g.save(tmp_path / "s.csv")
    lines = path.read_text().splitlines()
    assert lines[0].startswith("# prostate-fast score grid {") and '"thresholds"' in lines[0]
    rows = list(csv.DictReader(lines[1:]))
    assert list(rows[0]) == ["row", "col", "x", "y", "p_benign", "p_cancer", "tissue", "predicted"]
    assert {r["tissue"] for r in rows} == {"nan"}  # a grid that records no tissue share
    assert len(rows) == 25 and {r["predicted"] for r in rows} <= {"0", "1"}


def test_bad_score_files(tmp_path: Path) -> None:
    from prostate_fast.predict import load_score_grid

    (tmp_path / "x.csv").write_text("row,col\n1,2\n")
    with pytest.raises(ProstateFastError, match="x.csv: not a prostate-fast score grid"):
        load_score_grid(tmp_path / "x.csv")
    (tmp_path / "x.npz").write_bytes(b"PK\x03\x04 broken")
    with pytest.raises(ProstateFastError, match="x.npz"):
        load_score_grid(tmp_path / "x.npz")
    with pytest.raises(ValueError, match=".npz or .csv"):
        load_score_grid(tmp_path / "x.json")
    with pytest.raises(ValueError, match=".npz or .csv"):
        _grid().save(tmp_path / "x.txt")


def test_predicted_rule() -> None:
    g = _grid(classes=("benign", "g3", "g4"))
    prob = np.array(
        [[0.5, 0.2, 0.3], [0.1, 0.45, 0.45], [0.2, 0.5, 0.3], [0.0, 0.35, 0.65]], np.float32
    )
    from dataclasses import replace

    h = replace(
        g, tile_rc=g.tile_rc[:4], l0_xy=g.l0_xy[:4], prob=prob, thresholds={"g3": 0.4, "g4": 0.7}
    )
    # none passes; tie -> lower class index; g3 passes; g4 below its threshold -> g3 below too -> 0
    np.testing.assert_array_equal(h.predicted, [0, 1, 1, 0])
    assert h.predicted.dtype == np.int16
    assert h.with_thresholds({"g4": 0.6}).predicted.tolist() == [0, 1, 1, 2]
    assert h.class_counts() == {"benign": 2, "g3": 2, "g4": 0}
    assert h.cancer_share() == 0.5
    m = h.prob_map("g4")
    assert m.shape == (6, 10) and np.isnan(m).sum() == 60 - 4
    two = _grid()
    np.testing.assert_array_equal(two.predicted, (two.prob[:, 1] >= 0.4).astype(np.int16))
