"""Prediction: three engines that agree, the GIL released by the native one, the onnx engine's
lanes, scale handling (slides without mpp) and every model-folder error (the ScoreGrid file:
test_scoregrid.py; tiles partly off tissue: test_predict_edges.py)."""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from prostate_fast._util import resolve_threads
from prostate_fast.cli.main import main
from prostate_fast.errors import ModelError, SlideError

pytest.importorskip("mxnet")

TILE = 64


# model_dir (64 px tiles) and synthetic_slide: tests/conftest.py


@pytest.fixture(scope="module")
def real_tiles(synthetic_slide: Path) -> np.ndarray:
    """70 tissue tiles read from the synthetic slide (70: not a multiple of the batch sizes)."""
    from prostate_fast.slide import open_slide
    from prostate_fast.tile import build_grid, read_tiles

    with open_slide(synthetic_slide) as slide:
        grid = build_grid(slide, magnification=20.0, tile_size=TILE)
        assert len(grid) >= 70
        return read_tiles(slide, grid, np.linspace(0, len(grid) - 1, 70).astype(int))


def _copy_model(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        if f.name != "model.onnx":
            shutil.copy(f, dst / f.name)
    return dst


def _edit_json(model: Path, **changes: object) -> None:
    meta = json.loads((model / "model.json").read_text())
    meta.update(changes)
    (model / "model.json").write_text(json.dumps(meta))


# -- engines --------------------------------------------------------------------------------------
def test_engines_agree_on_a_real_batch(model_dir: Path, real_tiles: np.ndarray) -> None:
    from prostate_fast.predict import load_model

    probs = {}
    for engine in ("gluon", "native", "onnx"):
        with load_model(model_dir, engine=engine, batch_size=32, n_threads=2) as pred:
            probs[engine] = pred.predict_batch(real_tiles)
    for engine, p in probs.items():
        assert p.shape == (70, 2) and p.dtype == np.float32, engine
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-6)
        assert np.abs(p - probs["gluon"]).max() < 1e-5, engine
    assert np.ptp(probs["gluon"][:, 1]) > 0  # not a constant output: the comparison means something


def test_engines_agree_on_the_real_cmu1_slide(data_dir: Path, model_dir: Path) -> None:
    from prostate_fast.predict import load_model
    from prostate_fast.slide import open_slide
    from prostate_fast.tile import build_grid, read_tiles

    with open_slide(data_dir / "wsi" / "CMU-1-Small-Region.svs") as slide:
        grid = build_grid(slide, magnification=20.0, tile_size=TILE)
        tiles = read_tiles(slide, grid, np.linspace(0, len(grid) - 1, 48).astype(int))
    probs = [
        load_model(model_dir, engine=e).predict_batch(tiles) for e in ("gluon", "native", "onnx")
    ]
    assert max(np.abs(p - probs[0]).max() for p in probs) < 1e-5


def test_native_engine_releases_the_gil(model_dir: Path, real_tiles: np.ndarray) -> None:
    """The main thread keeps counting while a native call runs in another thread.

    The worker reads the shared counter just before and just after its call. With a huge switch
    interval the worker is never forced to give up the GIL, so the counter can only move during
    the call if the call itself releases the GIL. A pure-Python builtin call that holds the GIL
    is the control: the counter does not move at all during it.
    """
    from prostate_fast.predict import load_model

    pred = load_model(model_dir, engine="native", batch_size=64)
    x = pred.prepare(np.concatenate([real_tiles] * 4))  # 280 tiles, one native call
    counter = [0]
    moved: dict[str, int] = {}
    done = threading.Event()

    def worker(name: str, fn: object) -> None:
        before = counter[0]
        fn()  # type: ignore[operator]
        moved[name] = counter[0] - before
        done.set()

    old = sys.getswitchinterval()
    sys.setswitchinterval(100.0)
    try:
        for name, fn in (
            ("native", lambda: pred.run(x)),
            ("holds GIL", lambda: sum(range(3_000_000))),
        ):
            done.clear()
            th = threading.Thread(target=worker, args=(name, fn))
            th.start()
            while not done.is_set():
                counter[0] += 1
                time.sleep(0)  # yields the GIL to the worker whenever it wants it
            th.join()
    finally:
        sys.setswitchinterval(old)
    assert moved["holds GIL"] == 0
    assert moved["native"] > 100, moved


def test_padding_and_batch_size_do_not_change_results(
    model_dir: Path, real_tiles: np.ndarray
) -> None:
    from prostate_fast.predict import load_model

    a = load_model(model_dir, engine="native", batch_size=70).predict_batch(real_tiles)
    b = load_model(model_dir, engine="native", batch_size=16).predict_batch(real_tiles)
    c = load_model(model_dir, engine="native", batch_size=16).predict_batch(real_tiles[:5])
    assert np.abs(a - b).max() < 1e-6 and np.abs(a[:5] - c).max() < 1e-6


def test_prepare_normalises_once_for_every_engine(model_dir: Path, tmp_path: Path) -> None:
    from prostate_fast.predict import load_model

    tiles = np.random.default_rng(1).integers(0, 256, (3, TILE, TILE, 3), dtype=np.uint8)
    pred = load_model(model_dir, engine="native")
    x = pred.prepare(tiles)
    assert x.shape == (3, 3, TILE, TILE) and x.dtype == np.float32
    np.testing.assert_array_equal(
        x, tiles.transpose(0, 3, 1, 2).astype(np.float32) * np.float32(1 / 255)
    )
    bgr = _copy_model(model_dir, tmp_path / "bgr")
    _edit_json(bgr, channel_order="BGR")
    np.testing.assert_array_equal(load_model(bgr, engine="native").prepare(tiles), x[:, ::-1])
    with pytest.raises(ValueError, match="uint8"):
        pred.predict_batch(tiles.astype(np.float32))
    with pytest.raises(ValueError, match=r"\(n, 64, 64, 3\)"):
        pred.predict_batch(tiles[:, :32])


def test_onnx_export_is_written_once_and_reused(model_dir: Path, tmp_path: Path) -> None:
    from prostate_fast.predict import export_onnx, load_model

    m = _copy_model(model_dir, tmp_path / "m")
    pred = load_model(m, engine="onnx", n_threads=1)
    onnx_file = m / "model.onnx"
    assert onnx_file.is_file() and pred.providers == ("CPUExecutionProvider",)
    # idle workers sleep, leaving the CPU to predict_slide's reader
    config = pred._sess.get_session_options().get_session_config_entry
    assert config("session.intra_op.allow_spinning") == "0"
    stamp = onnx_file.stat().st_mtime_ns
    load_model(m, engine="onnx")
    assert onnx_file.stat().st_mtime_ns == stamp  # reused, not exported again
    assert not [f for f in m.iterdir() if f.name.endswith(".part")]
    with pytest.raises(FileExistsError):
        export_onnx(m)
    fixed = export_onnx(m, out=tmp_path / "b4.onnx", batch=4)
    assert fixed.is_file()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"engine": "tensorflow"}, ValueError, "engine must be one of"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"ctx": "tpu"}, ValueError, "ctx"),
        ({"n_threads": -2}, ValueError, "n_threads"),
        ({"engine": "onnx", "ctx": "gpu(0)"}, ModelError, "CUDA provider|onnxruntime-gpu"),
        ({"engine": "native", "ctx": "gpu(0)"}, ModelError, "GPU"),
    ],
)
def test_bad_arguments(model_dir: Path, kwargs: dict, error: type, match: str) -> None:
    import onnxruntime

    from prostate_fast.predict import load_model

    if (
        kwargs.get("ctx") == "gpu(0)"
        and "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    ):
        pytest.skip("a GPU build is installed")
    with pytest.raises(error, match=match):
        load_model(model_dir, **kwargs)


# -- model folder errors --------------------------------------------------------------------------
def test_class_count_mismatch(model_dir: Path, tmp_path: Path) -> None:
    from prostate_fast.predict import load_model

    m = _copy_model(model_dir, tmp_path / "m")
    _edit_json(m, classes=["benign", "gleason3", "gleason4"])
    with pytest.raises(ModelError, match="class count mismatch.*3 classes.*outputs 2"):
        load_model(m, engine="native")


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
@pytest.mark.parametrize("engine", ["gluon", "native", "onnx"])
def test_corrupt_params_file(model_dir: Path, tmp_path: Path, damage: str, engine: str) -> None:
    from prostate_fast.predict import load_model

    m = _copy_model(model_dir, tmp_path / "m")
    params = m / "model-0003.params"
    data = params.read_bytes()
    if damage == "truncated":
        params.write_bytes(data[: len(data) // 2])
    else:
        params.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ModelError, match="corrupt params file") as info:
        load_model(m, engine=engine)
    assert str(params) in str(info.value)


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        ("no model.json", "model.json: missing"),
        ("bad json", "model.json: not readable JSON"),
        ("no params", r"model-0003.params: missing"),
        ("no symbol", "model-symbol.json: missing"),
        ("bad symbol", "model-symbol.json: corrupt symbol file"),
        ("wrong format", "not a prostate-fast model"),
        ("no classes", "'classes' must list"),
        ("bad tile size", "the network does not take"),
        ("bad input name", "has no input 'image'"),
        ("bad threshold", "threshold of 'cancer' must be in"),
    ],
)
def test_broken_model_folder(model_dir: Path, tmp_path: Path, damage: str, match: str) -> None:
    from prostate_fast.predict import load_model

    m = _copy_model(model_dir, tmp_path / "m")
    if damage == "no model.json":
        (m / "model.json").unlink()
    elif damage == "bad json":
        (m / "model.json").write_text("{ not json")
    elif damage == "no params":
        (m / "model-0003.params").unlink()
    elif damage == "no symbol":
        (m / "model-symbol.json").unlink()
    elif damage == "bad symbol":
        (m / "model-symbol.json").write_text('{"nodes": 3}')
    elif damage == "wrong format":
        _edit_json(m, format="something else")
    elif damage == "no classes":
        _edit_json(m, classes=["cancer"])
    elif damage == "bad tile size":
        _edit_json(m, tile_size=8)
    elif damage == "bad input name":
        _edit_json(m, input_name="image")
    elif damage == "bad threshold":
        _edit_json(m, threshold={"cancer": 1.5})
    with pytest.raises(ModelError, match=match):
        load_model(m, engine="native")


def test_missing_model_folder(tmp_path: Path) -> None:
    from prostate_fast.predict import load_model

    with pytest.raises(ModelError, match="no such model folder"):
        load_model(tmp_path / "nope")


# -- slides and scale -----------------------------------------------------------------------------
@pytest.mark.parametrize("engine_threads", [None, 1], ids=["engine-all-cores", "engine-1-thread"])
def test_predict_slide_matches_predict_batch_and_reads_in_background(
    model_dir: Path, synthetic_slide: Path, engine_threads: int | None
) -> None:
    """The next batch is read in the background, on the cores the engine leaves (one at least).
    Same probabilities either way."""
    from prostate_fast.predict import load_model, predict_slide
    from prostate_fast.slide import open_slide
    from prostate_fast.tile import build_grid, read_tiles

    threads: set[str] = set()
    with open_slide(synthetic_slide) as slide:
        original = slide._read

        def spy(*args: object) -> np.ndarray:
            threads.add(threading.current_thread().name)
            return original(*args)  # type: ignore[arg-type]

        slide._read = spy  # type: ignore[method-assign]
        pred = load_model(model_dir, engine="native", batch_size=32, n_threads=engine_threads)
        grid = predict_slide(pred, slide)
        slide._read = original  # type: ignore[method-assign]
        tg = build_grid(slide, tile_size=TILE)
        direct = pred.predict_batch(read_tiles(slide, tg))
    full = tg.tissue_fraction == 1.0  # partial tiles are scored on their tissue (test below)
    assert len(grid) == len(direct) > 32 and full.sum() > 32
    assert np.abs(grid.prob[full] - direct[full]).max() < 1e-6
    np.testing.assert_array_equal(grid.tissue_fraction, tg.tissue_fraction)
    assert any(name.startswith("pf-read") for name in threads)
    spare = resolve_threads(None) - (engine_threads or resolve_threads(None))
    if spare <= 1:  # one reader thread: read_tiles on it alone
        assert not any(name.startswith("pf-tiles") for name in threads)
    assert grid.level == 0 and grid.downsample == 1.0 and grid.mpp == pytest.approx(0.5)
    assert grid.engine == "native" and grid.classes == ("benign", "cancer")
    assert grid.colours == {"cancer": (0, 255, 0)} and grid.thresholds == {"cancer": 0.5}
    rows, cols = grid.grid_shape
    assert (grid.tile_rc[:, 0] < rows).all() and (grid.tile_rc[:, 1] < cols).all()
    np.testing.assert_array_equal(grid.l0_xy, grid.tile_rc[:, ::-1].astype(np.int64) * TILE)


def test_lane_parts() -> None:
    from prostate_fast.predict.engines.base import MIN_LANE_PART, lane_parts

    assert lane_parts(64, 2) == [(0, 32), (32, 64)]
    assert lane_parts(65, 3) == [(0, 21), (21, 43), (43, 65)]
    assert lane_parts(64, 1) == [(0, 64)]
    assert lane_parts(MIN_LANE_PART + 3, 4) == [(0, MIN_LANE_PART + 3)]  # too small to share
    assert lane_parts(5, 2) == [(0, 5)] and lane_parts(0, 2) == []
    for n, lanes in ((100, 16), (17, 2), (1000, 7)):
        parts = lane_parts(n, lanes)
        assert parts[0][0] == 0 and parts[-1][1] == n and len(parts) <= lanes
        assert all(a[1] == b[0] for a, b in zip(parts, parts[1:], strict=False))
        assert all(e - s >= MIN_LANE_PART for s, e in parts)


def test_onnx_lanes_run_side_by_side_with_the_same_results(
    model_dir: Path, synthetic_slide: Path, real_tiles: np.ndarray, tmp_path: Path
) -> None:
    """On CPU the onnx engine runs one lane per thread (a session of one thread per lane, calls
    side by side): run() shares a batch out over the lanes, predict_slide keeps every lane busy;
    probabilities as with one lane, progress once per batch, an engine error raised."""
    from prostate_fast.predict import load_model, predict_slide

    m = _copy_model(model_dir, tmp_path / "m")
    one = load_model(m, engine="onnx", n_threads=1, batch_size=16)
    two = load_model(m, engine="onnx", n_threads=2, batch_size=16)
    assert one.lanes == 1 and two.lanes == 2 and "lanes=2" in repr(two)
    assert two._sess.get_session_options().intra_op_num_threads == 1
    x = two.prepare(real_tiles)
    ref = one.run(x)
    np.testing.assert_allclose(two.run(x), ref, atol=1e-6)
    np.testing.assert_allclose(two.run_lane(x[:5]), ref[:5], atol=1e-6)
    assert two.run(x[:0]).shape == (0, 2)
    assert two._free.qsize() == 2  # a session per lane, each back after its run

    seen: list[tuple[int, int]] = []
    a = predict_slide(one, synthetic_slide)
    b = predict_slide(two, synthetic_slide, progress=lambda d, n, _: seen.append((d, n)))
    np.testing.assert_allclose(b.prob, a.prob, atol=1e-6)
    n = len(b.prob)
    assert n > 32 and seen == [(min(e, n), n) for e in range(16, n + 16, 16)]

    calls = []

    def broken(x: np.ndarray) -> np.ndarray:
        calls.append(len(x))
        if len(calls) == 3:
            raise ModelError("lane failed")
        return np.full((len(x), 2), 0.5, np.float32)

    two._run = broken  # type: ignore[method-assign]
    with pytest.raises(ModelError, match="lane failed"):
        predict_slide(two, synthetic_slide)
    assert all(c <= 8 for c in calls)  # batches of 16 shared out over two lanes
    two.close()
    two.close()  # idempotent
    assert two._lane_pool is None


def test_reader_threads() -> None:
    from types import SimpleNamespace

    from prostate_fast.predict.core import reader_threads

    cores = resolve_threads(None)
    assert reader_threads(SimpleNamespace(device=("cpu", 0), n_threads=cores)) == 1  # type: ignore[arg-type]
    assert reader_threads(SimpleNamespace(device=("gpu", 0), n_threads=cores)) == cores  # type: ignore[arg-type]
    one = SimpleNamespace(device=("cpu", 0), n_threads=1)
    assert reader_threads(one) == max(1, cores - 1)  # type: ignore[arg-type]


def test_slide_without_mpp_asks_for_mpp_or_level(data_dir: Path, model_dir: Path) -> None:
    from dataclasses import replace

    from prostate_fast.predict import load_model, predict_slide
    from prostate_fast.slide import open_slide
    from prostate_fast.tissue import detect_tissue

    tcga = data_dir / "wsi" / "tcga-cr-7395-01a-01-ts1.svs"  # records neither mpp nor objective
    pred = load_model(model_dir, engine="native", batch_size=64)
    with pytest.raises(SlideError, match="--slide-mpp or --level"):
        predict_slide(pred, tcga)
    with open_slide(tcga) as slide:
        tissue = detect_tissue(slide)
        top = tissue.mask.copy()
        top[top.shape[0] // 5 :] = False  # a strip of the tissue keeps the test short
        grid = predict_slide(
            pred, slide, level=1, thresholds={"cancer": 0.3}, tissue=replace(tissue, mask=top)
        )
    assert len(grid) > 10 and grid.level == 1 and grid.mpp is None
    assert grid.downsample == pytest.approx(2.0, rel=1e-3) and grid.thresholds == {"cancer": 0.3}


def test_mpp_overrides_the_slide(model_dir: Path, synthetic_slide: Path) -> None:
    """An in-memory copy without mpp: ``mpp`` sets its level-0 scale; 0.25 µm puts the model's
    0.5 µm tiles on level 1 (with the file's tissue mask: at 0.25 µm the cores would be too small
    to count as tissue)."""
    from prostate_fast.predict import predict_slide
    from prostate_fast.slide import ArraySlide, open_slide
    from prostate_fast.tissue import detect_tissue

    with open_slide(synthetic_slide) as s:
        image = s.read_region((0, 0), 0, s.dimensions)
        tissue = detect_tissue(s)
        reference = predict_slide(model_dir, s, engine="native", tissue=tissue)
    slide = ArraySlide(image, downsamples=(1, 2), name=synthetic_slide.name)
    with pytest.raises(SlideError, match="--slide-mpp or --level"):
        predict_slide(model_dir, slide, engine="native")
    same = predict_slide(model_dir, slide, engine="native", mpp=0.5, tissue=tissue)
    np.testing.assert_array_equal(same.tile_rc, reference.tile_rc)
    assert np.abs(same.prob - reference.prob).max() < 1e-6
    grid = predict_slide(model_dir, slide, engine="native", mpp=0.25, tissue=tissue)
    assert grid.level == 1 and grid.scale == 1.0 and grid.downsample == 2.0
    assert grid.mpp == pytest.approx(0.5) and len(grid) > 10
    assert (grid.l0_xy % (2 * TILE) == 0).all()


def test_slide_without_tissue_gives_an_empty_grid(model_dir: Path, synthetic_slide: Path) -> None:
    from dataclasses import replace

    from prostate_fast.predict import predict_slide
    from prostate_fast.slide import open_slide
    from prostate_fast.tissue import detect_tissue

    with open_slide(synthetic_slide) as slide:
        tissue = detect_tissue(slide)
        none = replace(tissue, mask=np.zeros_like(tissue.mask))
        grid = predict_slide(model_dir, slide, engine="native", tissue=none)
    assert len(grid) == 0 and grid.prob.shape == (0, 2) and grid.cancer_share() == 0.0
    assert grid.grid_shape == (16, 32) and grid.timings["tiles_per_s"] == 0.0


def test_threshold_validation(model_dir: Path, synthetic_slide: Path) -> None:
    from prostate_fast.predict import predict_slide

    with pytest.raises(ValueError, match="not a non-negative class"):
        predict_slide(model_dir, synthetic_slide, engine="native", thresholds={"benign": 0.2})
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        predict_slide(model_dir, synthetic_slide, engine="native", thresholds={"cancer": 2})


# -- CLI ------------------------------------------------------------------------------------------
def test_cli_predict_writes_npz_and_csv(
    model_dir: Path, synthetic_slide: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from prostate_fast.predict import load_score_grid

    out = tmp_path / "out" / "scores.npz"
    args = [
        "predict",
        str(model_dir),
        str(synthetic_slide),
        "-o",
        str(out),
        "--engine",
        "native",
        "--threads",
        "2",
        "--threshold",
        "cancer=0.45",
    ]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "tiles/s" in text and "of tiles (cancer >= 0.45)" in text
    a, b = load_score_grid(out), load_score_grid(out.with_suffix(".csv"))
    np.testing.assert_array_equal(a.prob, b.prob)
    assert a.thresholds == {"cancer": 0.45} and len(a) > 32
    assert main(args) == 2  # refuses to overwrite
    assert "already exists" in capsys.readouterr().err


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_cli_errors_are_one_line(
    model_dir: Path, synthetic_slide: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = _copy_model(model_dir, tmp_path / "broken")
    (broken / "model.json").unlink()
    out = str(tmp_path / "o")
    assert main(["predict", str(broken), str(synthetic_slide), "-o", out]) == 2
    assert "model.json: missing" in _one_line(capsys)
    with pytest.raises(SystemExit) as exc:
        main(["predict", str(model_dir), str(synthetic_slide), "-o", out, "--threshold", "cancer"])
    assert exc.value.code == 2
    capsys.readouterr()
    assert not list(tmp_path.glob("o*"))


def test_cli_slide_without_mpp(
    data_dir: Path, model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tcga = str(data_dir / "wsi" / "tcga-cr-7395-01a-01-ts1.svs")
    assert (
        main(["predict", str(model_dir), tcga, "-o", str(tmp_path / "o"), "--engine", "native"])
        == 2
    )
    line = _one_line(capsys)
    assert "--slide-mpp or --level" in line and "tcga-cr-7395" in line
    assert not os.listdir(tmp_path)
