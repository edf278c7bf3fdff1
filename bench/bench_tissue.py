"""Tissue stage: the whitespace kernel against NumPy, OpenCV and the study's loop; a gigapixel mask.

Run: ``pytest bench/bench_tissue.py --benchmark-only -s`` (about 2 minutes on 2 cores the first
time, which makes and caches the gigapixel slide; about 1 minute after).

Group ``tissue-white-fraction``. Input: the 2048 tiles (128 px at 20x) of a synthetic 8192 x 4096
slide, read once into memory (100 MB). Every contender computes the white fraction of each tile
(white: min(R, G, B) >= 200 and max - min <= 18):

* ``native``: :func:`prostate_fast.tissue.white_fraction` (C++, OpenMP, vectorised), all cores
  and one thread;
* ``numpy``: channel planes as strided views, ``np.minimum``/``np.maximum`` and one count per tile,
  batch by batch: the best plain-NumPy form we found (reductions over the length-3 axis are 20x
  slower);
* ``opencv``: ``cv2.split``, ``cv2.min``/``cv2.max``, ``cv2.compare`` on the batch seen as one tall
  image, then a count per tile;
* ``baseline``: :func:`prostate_fast.baseline.whitespace.white_fraction_loop`, the study's
  per-pixel Python loop, on an 8-tile sample.

Group ``tissue-gigapixel``: :func:`~prostate_fast.tissue.detect_tissue` plus
:func:`~prostate_fast.tile.build_grid` on a synthetic 46000 x 23000 slide (1.06 gigapixels,
pyramidal JPEG TIFF), made once and cached in the system temporary folder.

Each result records ``us_per_tile`` (or ``s_per_slide``) in ``extra_info``; the summary printed at
the end gives the speed-ups. Results are checked equal before timing.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest

from prostate_fast.baseline.whitespace import white_fraction_loop
from prostate_fast.slide import open_slide
from prostate_fast.synthetic import make_synthetic
from prostate_fast.tile import build_grid, full_grid, read_tiles
from prostate_fast.tissue import detect_tissue, white_fraction

LO, SPREAD = 200, 18
SAMPLE = 8
GIGA = {"width": 46000, "height": 23000, "seed": 5, "pen_marks": True}
RESULTS: dict[str, float] = {}


@pytest.fixture(scope="module")
def tiles(tmp_path_factory):
    made = make_synthetic(tmp_path_factory.mktemp("bench-tissue"), seed=6, pen_marks=True)
    with open_slide(made.slide) as slide:
        t = read_tiles(slide, full_grid(slide, slide.choose_level(magnification=20.0), 128))
    # every contender gives the same result (checked here: --benchmark-only skips plain tests)
    want = white_fraction(t)
    assert 0.3 < float((want > 0.9).mean()) < 0.95  # glass and tissue tiles both present
    np.testing.assert_array_equal(numpy_white(t), want)
    np.testing.assert_array_equal(opencv_white(t), want)
    np.testing.assert_array_equal(white_fraction(t, n_threads=1), want)
    sample = t[np.linspace(0, len(t) - 1, SAMPLE).astype(int)]
    np.testing.assert_array_equal(white_fraction_loop(sample), white_fraction(sample))
    return t, sample


@pytest.fixture(scope="module", autouse=True)
def summary():
    yield
    if "baseline" in RESULTS:
        print("\ntissue-white-fraction, µs per 128 px tile:")
        for name, us in RESULTS.items():
            if name != "gigapixel":
                print(f"  {name:12} {us:11.2f}  ({RESULTS['baseline'] / us:8.1f}x the baseline)")
    if "gigapixel" in RESULTS:
        print(f"tissue-gigapixel: mask + grid {RESULTS['gigapixel']:.2f} s per slide")


def numpy_white(tiles: np.ndarray, batch: int = 256) -> np.ndarray:
    """Best NumPy form: strided channel planes, elementwise min/max, one count per tile."""
    n, pixels = len(tiles), tiles.shape[1] * tiles.shape[2]
    out = np.empty(n, np.float32)
    for s in range(0, n, batch):
        t = tiles[s : s + batch].reshape(-1, pixels, 3)
        r, g, b = t[:, :, 0], t[:, :, 1], t[:, :, 2]
        mn = np.minimum(np.minimum(r, g), b)
        mx = np.maximum(np.maximum(r, g), b)
        white = (mn >= LO) & (mx - mn <= SPREAD)
        out[s : s + batch] = np.count_nonzero(white, axis=1) / pixels
    return out


def opencv_white(tiles: np.ndarray, batch: int = 256) -> np.ndarray:
    """OpenCV form: the batch as one tall image, SIMD min/max/compare, a count per tile."""
    import cv2

    n, h, w = tiles.shape[:3]
    out = np.empty(n, np.float32)
    for s in range(0, n, batch):
        k = min(batch, n - s)
        r, g, b = cv2.split(tiles[s : s + k].reshape(k * h, w, 3))
        mn = cv2.min(cv2.min(r, g), b)
        spread = cv2.subtract(cv2.max(cv2.max(r, g), b), mn)
        white = cv2.bitwise_and(
            cv2.compare(mn, LO, cv2.CMP_GE), cv2.compare(spread, SPREAD, cv2.CMP_LE)
        )
        out[s : s + k] = np.count_nonzero(white.reshape(k, h * w), axis=1) / (h * w)
    return out


def _record(benchmark, name: str, n_tiles: int) -> None:
    us = benchmark.stats.stats.median / n_tiles * 1e6
    benchmark.extra_info["us_per_tile"] = round(us, 3)
    benchmark.extra_info["tiles"] = n_tiles
    RESULTS[name] = us


@pytest.mark.benchmark(group="tissue-white-fraction")
@pytest.mark.parametrize("threads", [None, 1], ids=["all-cores", "1-thread"])
def test_native(benchmark, tiles, threads) -> None:
    t, _ = tiles
    benchmark(white_fraction, t, n_threads=threads)
    _record(benchmark, f"native-{'all' if threads is None else 1}", len(t))


@pytest.mark.benchmark(group="tissue-white-fraction")
def test_numpy(benchmark, tiles) -> None:
    t, _ = tiles
    benchmark.pedantic(numpy_white, args=(t,), rounds=5, iterations=1)
    _record(benchmark, "numpy", len(t))


@pytest.mark.benchmark(group="tissue-white-fraction")
def test_opencv(benchmark, tiles) -> None:
    t, _ = tiles
    benchmark.pedantic(opencv_white, args=(t,), rounds=5, iterations=1)
    _record(benchmark, "opencv", len(t))


@pytest.mark.benchmark(group="tissue-white-fraction")
def test_baseline(benchmark, tiles) -> None:
    _, sample = tiles
    benchmark.pedantic(white_fraction_loop, args=(sample,), rounds=3, iterations=1)
    _record(benchmark, "baseline", SAMPLE)


# -- a whole gigapixel slide ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def gigapixel() -> Path:
    """The cached 46000 x 23000 synthetic slide (made on first use, about a minute)."""
    key = "-".join(f"{k}{v}" for k, v in GIGA.items())
    folder = Path(tempfile.gettempdir()) / "prostate-fast-bench" / f"tissue-{key}"
    meta = folder / "synthetic.json"
    if not meta.is_file():
        make_synthetic(folder, **GIGA, overwrite=True)
    assert json.loads(meta.read_text())  # complete (written last, atomically)
    return folder / "synthetic.tif"


def _mask_and_grid(path: Path) -> tuple[int, int, int]:
    with open_slide(path) as slide:
        tissue = detect_tissue(slide)
        grid = build_grid(slide, tissue)
    return len(grid), grid.grid_shape[0] * grid.grid_shape[1], len(tissue.regions)


@pytest.mark.benchmark(group="tissue-gigapixel")
def test_gigapixel_mask_and_grid(benchmark, gigapixel) -> None:
    kept, full, regions = benchmark.pedantic(
        _mask_and_grid, args=(gigapixel,), rounds=3, iterations=1, warmup_rounds=1
    )
    assert regions >= 1 and 0 < kept < full
    s = benchmark.stats.stats.median
    benchmark.extra_info.update(
        s_per_slide=round(s, 3), tiles_kept=kept, tiles_full_grid=full, regions=regions
    )
    if "baseline" in RESULTS:  # what the study's loop would take over the full grid
        benchmark.extra_info["baseline_estimate_s"] = round(full * RESULTS["baseline"] / 1e6)
    RESULTS["gigapixel"] = s
