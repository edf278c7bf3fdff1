"""End to end, per slide: the study's Table 3 stages on one slide, three ways, in one run.

Run: ``pytest bench/bench_end_to_end.py --benchmark-only -s [--bench-scale small|default|large]``
(about 3 minutes on 2 cores at ``default``, a 16384 x 8192 slide; see ``bench/conftest.py``).

Input: the shared synthetic slide (``bench_slide``: 20x, 0.5 µm/px, four cores, pen marks on the
glass) and its painted copy, and the study's network at 128 px (``bench_model``). Every result
records in ``extra_info``: ``e2e`` (``ours``, ``alt`` or ``baseline``), ``stage``,
``s_per_slide`` and the slide's ``grid_tiles`` (every 128 px tile, as the study cut) and
``tissue_tiles`` (what ours keeps). ``tools/bench_report.py`` builds its Table 3 from them.

* ``ours`` (group ``e2e-ours``): the package's public functions from the slide file:
  ``tissue`` (detect_tissue + build_grid), ``white`` (tile_white_fraction: read + kernel),
  ``label`` (label_tiles from the painted copy: reads both, labels and white fraction fused),
  ``pack`` (build_dataset: white cleaning, JPEG q95 RecordIO), ``predict`` (predict_slide, native
  engine, model loaded once), ``overlay`` (write_overlay: blend + pyramidal TIFF, no thumbnail),
  ``preprocess`` (tissue → grid → label → pack in one call) and ``chain`` (all of it in one call).
* ``alt`` (group ``e2e-alt``): the same stages with the best NumPy/OpenCV/pyvips forms on the same
  slide: label + white from ``bench_label.opencv_batch_stats`` and ``bench_tissue.numpy_white``
  over tiles read with ``read_tiles``; pack with a Python loop of ``cv2.imencode`` into
  ``MXIndexedRecordIO``; predict with the Gluon engine (static graph, MKLDNN); overlay with
  ``bench_overlay.pyvips_overlay``.
* ``baseline`` (group ``e2e-baseline``): the study's way (:mod:`prostate_fast.baseline`), timed on
  a sample of tiles and **extrapolated** per tile to the slide (``extrapolated_from``: tiles
  timed, ``extrapolated_to``: tiles it stands for: every tile of the full grid, as the study
  processed them, or the tissue tiles for prediction). ``tiles``: every tile of the slide written
  as a JPEG file (``export_tile_files``; these files were the study's data set); ``label``: the
  painted copy's tiles written likewise, both tile files read back, the per-tile OpenCV loop;
  ``white``: the tile file read back, the per-pixel Python loop; ``predict``: one tile per network
  call; ``blend``: every tile file read, blended (``cv2.addWeighted``) if predicted, rewritten;
  ``montage``: every file read and pasted, plus one flat JPEG of the slide. ``convert`` and
  ``crop`` (the study used ImageMagick) are a flat 20x JPEG of the slide, and the biopsy's
  bounding box cut out of it and re-encoded: timed on the whole slide up to 64 megapixels, else
  on a band, scaled by area (``extrapolated_by_area``).

The summary printed at the end gives the preprocessing throughput (tile, label, clean, pack) of
ours against the baseline's, in full-grid tiles per second of the same slide.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from prostate_fast.baseline.dataset import export_tile_files, load_tile_files
from prostate_fast.baseline.label import painted_labels_baseline
from prostate_fast.baseline.overlay import blend_tile_files, cut_tile_files, reassemble_tile_files
from prostate_fast.baseline.whitespace import white_fraction_loop
from prostate_fast.dataset import build_dataset
from prostate_fast.label import label_tiles, nearest_colour
from prostate_fast.overlay import write_overlay
from prostate_fast.predict import predict_slide
from prostate_fast.slide import open_slide
from prostate_fast.tile import build_grid, full_grid, read_tiles, tile_white_fraction
from prostate_fast.tissue import detect_tissue

#: Tiles the study's way is timed on, per stage (about a second each on 2 cores).
SAMPLE = {"tiles": 256, "white": 16, "predict": 48, "blend": 256, "montage": 256}
FLAT_MAX_PIXELS = 64_000_000  # flat JPEGs beyond this are timed on a band, scaled by area
POSITIVE_SHARE = 0.2  # tissue tiles flagged: the random-weight model's threshold is moved
GREEN = np.array([[0, 255, 0]], np.uint8)
WHITE_THRESHOLD = 0.5
RESULTS: dict[tuple[str, str], dict[str, Any]] = {}


@dataclass
class Setup:
    made: Any
    work: Path
    predictor: Any
    gluon: Any
    tissue: Any
    grid: Any
    full: Any
    table: Any
    scores: Any
    threshold: float

    @property
    def facts(self) -> dict[str, Any]:
        w, h = self.made.width, self.made.height
        return {
            "slide": f"{w}x{h}",
            "slide_gp": round(w * h / 1e9, 4),
            "grid_tiles": len(self.full),
            "tissue_tiles": len(self.grid),
        }


@pytest.fixture(scope="module")
def setup(bench_slide, bench_model, tmp_path_factory) -> Setup:
    """Run our pipeline once, untimed: its artefacts feed the stage timings and the checks."""
    from prostate_fast.predict import load_model

    work = tmp_path_factory.mktemp("e2e")
    predictor = load_model(bench_model, engine="native")
    gluon = load_model(bench_model, engine="gluon")
    with open_slide(bench_slide.slide) as sl:
        tissue = detect_tissue(sl)
        grid = build_grid(sl, tissue)
        full = full_grid(sl, grid.choice, grid.tile_size)
        table = label_tiles(sl, bench_slide.painted, grid)
    scores = predict_slide(predictor, bench_slide.slide, tissue=tissue)
    p = np.asarray(scores.prob)[:, 1]
    threshold = float(np.quantile(p, 1 - POSITIVE_SHARE)) if len(p) else 0.5
    scores = scores.with_thresholds({scores.classes[1]: threshold})
    assert 0 < len(grid) < len(full) and int(np.asarray(table.label).max()) == 1  # cancer found
    yield Setup(bench_slide, work, predictor, gluon, tissue, grid, full, table, scores, threshold)
    predictor.close()
    gluon.close()


@pytest.fixture(scope="module", autouse=True)
def summary(request: pytest.FixtureRequest):
    yield
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if not RESULTS or capture is None:
        return
    with capture.global_and_fixture_disabled():
        print("\n== end to end, seconds per slide ==")
        for (kind, stage), info in RESULTS.items():
            note = ""
            if "extrapolated_from" in info:
                n, to = info["extrapolated_from"], info["extrapolated_to"]
                note = f"  (extrapolated from {n} tiles to {to})"
            print(f"  {kind:9} {stage:11} {info['s_per_slide']:12.2f}{note}")
        pre = preprocess_rates(RESULTS)
        if pre:
            print(
                f"  preprocessing, full-grid tiles/s: ours {pre['ours']:,.0f}, baseline "
                f"{pre['baseline']:,.1f} ({pre['ratio']:,.0f}x)"
            )


def preprocess_rates(results: dict[tuple[str, str], dict[str, Any]]) -> dict[str, float]:
    """Full-grid tiles per second of the preprocessing chain, ours and the baseline's."""
    ours = results.get(("ours", "preprocess"))
    parts = [results.get(("baseline", s)) for s in ("tiles", "white", "label")]
    if ours is None or any(p is None for p in parts):
        return {}
    n = ours["grid_tiles"]
    base_s = sum(p["s_per_slide"] for p in parts)  # type: ignore[index]
    r_ours, r_base = n / ours["s_per_slide"], n / base_s
    return {"ours": r_ours, "baseline": r_base, "ratio": r_ours / r_base}


def _record(
    benchmark, s: Setup, kind: str, stage: str, seconds: float | None = None, **extra: Any
) -> None:
    """Store the stage's seconds per slide (default: the median round) and the slide facts."""
    if benchmark.stats is None:  # --benchmark-disable: ran once, nothing timed
        return
    sec = benchmark.stats.stats.median if seconds is None else seconds
    info = {"e2e": kind, "stage": stage, "s_per_slide": round(sec, 4), **s.facts, **extra}
    benchmark.extra_info.update(info)
    RESULTS[(kind, stage)] = info


def _extrapolate(
    benchmark, s: Setup, stage: str, sample: int, target: int, fixed: float = 0.0, **extra: Any
) -> None:
    """Baseline: per-tile cost of the sample (median round) times ``target`` tiles, + ``fixed``."""
    if benchmark.stats is None:
        return
    per_tile = benchmark.stats.stats.median / sample
    _record(
        benchmark,
        s,
        "baseline",
        stage,
        per_tile * target + fixed,
        extrapolated_from=sample,
        extrapolated_to=target,
        s_per_tile=round(per_tile, 7),
        **extra,
    )


def _sample(n: int, k: int, seed: int = 0) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).choice(n, min(k, n), replace=False))


# -- ours ---------------------------------------------------------------------------------------
def ours_tissue(path: Path) -> Any:
    with open_slide(path) as sl:
        return build_grid(sl, detect_tissue(sl))


def ours_pack(table: Any, out: Path) -> Any:
    return build_dataset(
        [table],
        out,
        balance="all",
        encoding="jpeg",
        quality=95,
        split={"train": [table.slide_name]},
        overwrite=True,
    )


def ours_preprocess(made: Any, out: Path) -> Any:
    """Tile, label (white fraction fused), clean and pack one slide, from the files."""
    with open_slide(made.slide) as sl:
        grid = build_grid(sl, detect_tissue(sl))
        table = label_tiles(sl, made.painted, grid)
    return ours_pack(table, out)


def ours_chain(s: Setup, out: Path) -> Any:
    """The whole per-slide pipeline: preprocessing, prediction and the overlay."""
    made = s.made
    with open_slide(made.slide) as sl:
        tissue = detect_tissue(sl)
        grid = build_grid(sl, tissue)
        table = label_tiles(sl, made.painted, grid)
    ours_pack(table, out / "ds")
    scores = predict_slide(
        s.predictor, made.slide, tissue=tissue, thresholds={s.scores.classes[1]: s.threshold}
    )
    return write_overlay(made.slide, scores, out / "chain.tif", thumbnail=False, overwrite=True)


STAGES = ("tissue", "white", "label", "pack", "predict", "overlay", "preprocess", "chain")


@pytest.mark.benchmark(group="e2e-ours")
@pytest.mark.parametrize("stage", STAGES)
def test_ours(benchmark, setup: Setup, stage: str) -> None:
    s, made, out = setup, setup.made, setup.work / f"ours-{stage}"
    out.mkdir(exist_ok=True)
    calls = {
        "tissue": lambda: ours_tissue(made.slide),
        "white": lambda: _white_of(made.slide, s.grid),
        "label": lambda: label_tiles(made.slide, made.painted, s.grid),
        "pack": lambda: ours_pack(s.table, out / "ds"),
        "predict": lambda: predict_slide(s.predictor, made.slide, tissue=s.tissue),
        "overlay": lambda: write_overlay(
            made.slide, s.scores, out / "o.tif", thumbnail=False, overwrite=True
        ),
        "preprocess": lambda: ours_preprocess(made, out / "ds"),
        "chain": lambda: ours_chain(s, out),
    }
    rounds = 1 if stage == "chain" else 3
    result = benchmark.pedantic(calls[stage], rounds=rounds, iterations=1)
    extra: dict[str, Any] = {}
    if stage in ("pack", "preprocess"):
        extra["records"] = result.records
    if stage == "tissue":
        assert len(result) == len(s.grid)
    _record(benchmark, s, "ours", stage, **extra)


def _white_of(path: Path, grid: Any) -> np.ndarray:
    with open_slide(path) as sl:
        return tile_white_fraction(sl, grid)


# -- the best NumPy / OpenCV / pyvips forms ------------------------------------------------------
def _colleague(module: str, name: str) -> Any:
    """A best-form function from a stage benchmark (one definition, kept by its owner)."""
    try:
        mod = __import__(module)
    except ImportError as exc:  # pragma: no cover - depends on the other bench files
        pytest.skip(f"{module}.{name} not importable: {exc}")
    if not hasattr(mod, name):  # pragma: no cover
        pytest.skip(f"{module} has no {name}")
    return getattr(mod, name)


def alt_label(made: Any, grid: Any, batch: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Label + white fraction with the best NumPy/OpenCV forms over the same tiles as ours."""
    numpy_white = _colleague("bench_tissue", "numpy_white")
    opencv_stats = _colleague("bench_label", "opencv_batch_stats")
    labels = np.zeros(len(grid), np.int64)
    white = np.zeros(len(grid), np.float32)
    with open_slide(made.slide) as sl, open_slide(made.painted) as pn:
        for i in range(0, len(grid), batch):
            idx = np.arange(i, min(i + batch, len(grid)))
            o, p = read_tiles(sl, grid, idx), read_tiles(pn, grid, idx)
            counts, sums = opencv_stats(o, p)
            near = nearest_colour(counts, sums, GREEN)
            labels[idx] = (near >= 0) & (counts >= 0.05 * o.shape[1] * o.shape[2])
            white[idx] = numpy_white(o)
    return labels, white


def alt_pack(sl: Any, grid: Any, white: np.ndarray, out: Path, batch: int = 512) -> int:
    """RecordIO the obvious way: kept tiles read in batches, ``cv2.imencode`` + ``write_idx``."""
    import cv2

    from prostate_fast._mx import import_mxnet

    mx = import_mxnet()
    keep = np.flatnonzero(white <= WHITE_THRESHOLD)
    out.mkdir(parents=True, exist_ok=True)
    rec = mx.recordio.MXIndexedRecordIO(str(out / "train.idx"), str(out / "train.rec"), "w")
    try:
        for i in range(0, len(keep), batch):
            idx = keep[i : i + batch]
            for k, tile in zip(idx.tolist(), read_tiles(sl, grid, idx), strict=True):
                header = mx.recordio.IRHeader(0, 0.0, k, 0)
                bgr = cv2.cvtColor(tile, cv2.COLOR_RGB2BGR)
                rec.write_idx(k, mx.recordio.pack_img(header, bgr, quality=95, img_fmt=".jpg"))
    finally:
        rec.close()
    return len(keep)


@pytest.mark.benchmark(group="e2e-alt")
@pytest.mark.parametrize("stage", ["label", "pack", "predict", "overlay"])
def test_alt(benchmark, setup: Setup, stage: str) -> None:
    s, made, out = setup, setup.made, setup.work / f"alt-{stage}"
    extra: dict[str, Any] = {}
    if stage == "label":
        labels, white = benchmark.pedantic(alt_label, args=(made, s.grid), rounds=2, iterations=1)
        np.testing.assert_array_equal(white, s.table.white_fraction)
        np.testing.assert_array_equal(labels, s.table.label)
        extra["how"] = "read_tiles + bench_label.opencv_batch_stats + bench_tissue.numpy_white"
    elif stage == "pack":
        with open_slide(made.slide) as sl:
            n = benchmark.pedantic(
                alt_pack, args=(sl, s.grid, s.table.white_fraction, out), rounds=2, iterations=1
            )
        extra.update(records=n, how="read_tiles + cv2.imencode + MXIndexedRecordIO, 1 thread")
    elif stage == "predict":
        benchmark.pedantic(
            predict_slide,
            args=(s.gluon, made.slide),
            kwargs={"tissue": s.tissue},
            rounds=2,
            iterations=1,
        )
        extra["how"] = "predict_slide, Gluon engine (static graph, MKLDNN)"
    else:
        pyvips_overlay = _colleague("bench_overlay", "pyvips_overlay")
        pytest.importorskip("pyvips")
        out.mkdir(exist_ok=True)
        benchmark.pedantic(
            pyvips_overlay, args=(made.slide, s.scores, out / "v.tif"), rounds=2, iterations=1
        )
        extra["how"] = "bench_overlay.pyvips_overlay (composite2 + tiffsave pyramid)"
    _record(benchmark, s, "alt", stage, **extra)


# -- the study's way, on samples -----------------------------------------------------------------
def flat_band(made: Any) -> tuple[int, int, float]:
    """Rows (y0, height) of the level-0 band a flat JPEG is timed on, and the area factor."""
    w, h = made.width, made.height
    rows = min(h, max(256, FLAT_MAX_PIXELS // w))
    return (h - rows) // 2, rows, h / rows


def baseline_convert(made: Any, out: Path) -> float:
    """Scanner file → flat 20x JPEG (the study's ImageMagick step), on the band; returns area."""
    import cv2

    y0, rows, factor = flat_band(made)
    with open_slide(made.slide) as sl:
        rgb = sl.read_region((0, y0), 0, (made.width, rows))
    cv2.imwrite(str(out), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    return factor


def baseline_crop(flat: Path, out: Path) -> tuple[int, int]:
    """Crop the biopsy out of the flat JPEG: decode, bounding box of non-glass, crop, encode."""
    import cv2

    img = cv2.imread(str(flat), cv2.IMREAD_COLOR)
    grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    x, y, w, h = cv2.boundingRect(cv2.findNonZero((grey < 215).astype(np.uint8)))
    cv2.imwrite(str(out), img[y : y + h, x : x + w], [cv2.IMWRITE_JPEG_QUALITY, 90])
    return w, h


@pytest.mark.benchmark(group="e2e-baseline")
@pytest.mark.parametrize("stage", ["convert", "crop"])
def test_baseline_flat(benchmark, setup: Setup, stage: str) -> None:
    s, made = setup, setup.made
    flat = s.work / "flat.jpg"
    if stage == "convert":
        factor = benchmark.pedantic(baseline_convert, args=(made, flat), rounds=1, iterations=1)
    else:
        if not flat.exists():
            baseline_convert(made, flat)
        factor = flat_band(made)[2]
        benchmark.pedantic(baseline_crop, args=(flat, s.work / "crop.jpg"), rounds=1, iterations=1)
    if benchmark.stats is None:
        return
    sec = benchmark.stats.stats.median * factor
    how = "whole slide" if factor == 1 else f"band of 1/{factor:.2f} of the slide, scaled by area"
    extra: dict[str, Any] = {"how": f"cv2 flat JPEG q90, {how}"}
    if factor != 1:
        extra["extrapolated_by_area"] = round(factor, 3)
    _record(benchmark, s, "baseline", stage, sec, **extra)


def study_tile_files(path: Path, s: Setup, idx: np.ndarray, out: Path) -> list:
    """The study's tiling: every tile of one image (slide or painted copy) a JPEG file (q95)."""
    with open_slide(path) as sl:
        return export_tile_files(
            sl,
            s.grid.choice,
            s.full.l0_xy[idx],
            np.zeros(len(idx), np.int64),
            ("benign", "cancer"),
            out,
            quality=95,
        )


def study_label(painted: Path, s: Setup, idx: np.ndarray, out: Path, originals: list) -> Any:
    """The study's labelling: tile the painted copy into files, read both tile files of every
    tile back, OpenCV loop per tile."""
    files = study_tile_files(painted, s, idx, out)
    return painted_labels_baseline(load_tile_files(originals), load_tile_files(files), GREEN)


def study_white(originals: list) -> np.ndarray:
    """The study's white tiles: read every tile file, per-pixel Python loop."""
    return white_fraction_loop(load_tile_files(originals))


_FILES: dict[str, list] = {}


@pytest.mark.benchmark(group="e2e-baseline")
@pytest.mark.parametrize("stage", ["tiles", "label", "white"])
def test_baseline_tiles(benchmark, setup: Setup, stage: str) -> None:
    """The baseline's preprocessing: the slide's tiles as files (the study's data set), the
    painted copy's tiles as files + labelling, the white loop; each from the tile files."""
    s, made = setup, setup.made
    idx = _sample(len(s.full), SAMPLE["tiles"])
    out = s.work / "tile-files"
    if stage == "tiles":
        _FILES["orig"] = benchmark.pedantic(
            study_tile_files, args=(made.slide, s, idx, out), rounds=1, iterations=1
        )
        _extrapolate(benchmark, s, stage, len(idx), len(s.full), how="export_tile_files")
        return
    if "orig" not in _FILES:  # this test run alone
        _FILES["orig"] = study_tile_files(made.slide, s, idx, out)
    orig = _FILES["orig"]
    if stage == "label":
        benchmark.pedantic(
            study_label, args=(made.painted, s, idx, out, orig), rounds=1, iterations=1
        )
        n = len(orig)
    else:  # evenly spaced over the (random) sample
        pick = np.linspace(0, len(orig) - 1, min(SAMPLE["white"], len(orig))).astype(int)
        orig = [orig[i] for i in pick]
        benchmark.pedantic(study_white, args=(orig,), rounds=1, iterations=1)
        n = len(orig)
    _extrapolate(benchmark, s, stage, n, len(s.full))


@pytest.mark.benchmark(group="e2e-baseline")
def test_baseline_predict(benchmark, setup: Setup, bench_model: Path) -> None:
    """One tile per network call, Gluon not hybridized (the plain loop), on tissue tiles."""
    import warnings

    from prostate_fast._mx import import_mxnet
    from prostate_fast.predict import read_model_info

    s = setup
    mx = import_mxnet()
    info = read_model_info(bench_model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = mx.gluon.SymbolBlock.imports(
            str(info.symbol_file), ["data"], str(info.params_file), ctx=mx.cpu()
        )
    idx = _sample(len(s.grid), SAMPLE["predict"])
    with open_slide(s.made.slide) as sl:
        tiles = read_tiles(sl, s.grid, idx)

    def run(batch: np.ndarray) -> list:
        return [
            net(mx.nd.array(t.transpose(2, 0, 1)[None].astype(np.float32) / 255.0)).asnumpy()
            for t in batch
        ]

    run(tiles[:4])  # warm-up
    benchmark.pedantic(run, args=(tiles,), rounds=1, iterations=1)
    _extrapolate(benchmark, s, "predict", len(idx), len(s.grid))


@pytest.mark.benchmark(group="e2e-baseline")
@pytest.mark.parametrize("stage", ["blend", "montage"])
def test_baseline_overlay(benchmark, setup: Setup, stage: str) -> None:
    """Per-tile file blend (every tile rewritten), and montage: read + paste + one flat JPEG."""
    import cv2

    s, made = setup, setup.made
    idx = _sample(len(s.full), SAMPLE[stage])
    rows, cols = s.full.grid_shape
    rc = s.full.tile_rc[idx]
    positive_cells = np.zeros((rows, cols), bool)
    prc = s.scores.tile_rc[np.asarray(s.scores.predicted) > 0]
    positive_cells[prc[:, 0], prc[:, 1]] = True
    ch, ds = s.grid.choice, s.grid.downsample
    work = s.work / f"study-{stage}"
    with open_slide(made.slide) as sl:
        files = cut_tile_files(
            lambda x, y, w, h: sl.read_scaled((round(x * ds), round(y * ds)), (w, h), ch),
            rc,
            s.grid.tile_size,
            work / "tiles",
        )
    positive = positive_cells[rc[:, 0], rc[:, 1]].tolist()
    if stage == "blend":
        benchmark.pedantic(
            blend_tile_files, args=(files, positive, work / "blended"), rounds=1, iterations=1
        )
        _extrapolate(benchmark, s, stage, len(idx), len(s.full))
        return
    side = int(np.ceil(np.sqrt(len(idx))))  # the sample pasted into a small canvas
    small_rc = np.stack([np.arange(len(idx)) // side, np.arange(len(idx)) % side], axis=1)
    t = s.grid.tile_size
    benchmark.pedantic(
        reassemble_tile_files, args=(files, small_rc, t, (side, side), None), rounds=1, iterations=1
    )
    y0, band, factor = flat_band(made)
    with open_slide(made.slide) as sl:
        img = sl.read_region((0, y0), 0, (made.width, band))
    t0 = time.perf_counter()
    canvas = np.full((band, made.width, 3), 255, np.uint8)
    canvas[:] = img
    cv2.imwrite(str(work / "montage.jpg"), canvas, [cv2.IMWRITE_JPEG_QUALITY, 90])
    write = (time.perf_counter() - t0) * factor
    _extrapolate(
        benchmark, s, stage, len(idx), len(s.full), fixed=write, flat_write_s=round(write, 3)
    )
