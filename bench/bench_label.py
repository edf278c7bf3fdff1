"""Label stage: the painted-copy kernel against the best NumPy form and the 2018 study's loop.

Run: ``pytest bench/bench_label.py --benchmark-only -s`` (well under 2 minutes on 2 cores).

Input: the 2048 tiles (128 px at 20x) of a synthetic 8192 x 4096 slide and of its painted copy
(6 cancer regions painted green), read once into memory (2 x 100 MB). Every contender computes the
same thing: per tile, the marked pixels (a channel differs by more than 60 and the painted pixel is
within 64 of the marker green) and the sums of their painted colour.

* ``native``: :func:`prostate_fast.label.painted_tile_stats` (C++, SSE2, OpenMP), all cores and
  one thread;
* ``numpy``: the same rule vectorised over batches of 256 tiles (channel planes, boolean masks,
  ``bincount`` sums): the best plain-NumPy form we found;
* ``opencv-batch``: the study's OpenCV calls applied to a whole batch at once (a batch of tiles
  is one tall image), then per-tile ``countNonZero``/``sumElems``: the best NumPy/OpenCV form;
* ``baseline``: :func:`prostate_fast.baseline.label.painted_labels_baseline`, the study's
  per-tile OpenCV loop (absdiff, threshold, inRange, countNonZero, mean), on a 256-tile sample.

Each result records ``us_per_tile`` (from the fastest round: the least disturbed by other load)
in ``extra_info``; the summary printed at the end gives the speed-ups. Results are checked equal
before timing.
"""

from __future__ import annotations

import numpy as np
import pytest

from prostate_fast.baseline.label import painted_labels_baseline
from prostate_fast.label import painted_tile_stats
from prostate_fast.slide import open_slide
from prostate_fast.synthetic import make_synthetic
from prostate_fast.tile import full_grid, read_tiles

GREEN = np.array([[0, 255, 0]], np.uint8)
THRESHOLD, TOL = 60, 64
SAMPLE = 256
RESULTS: dict[str, float] = {}


@pytest.fixture(scope="module")
def tiles(tmp_path_factory):
    made = make_synthetic(tmp_path_factory.mktemp("bench-label"), seed=4, n_cancer=6)
    with open_slide(made.slide) as slide, open_slide(made.painted) as painted:
        grid = full_grid(slide, slide.choose_level(magnification=20.0), 128)
        o, p = read_tiles(slide, grid), read_tiles(painted, grid)
    # every contender gives the same result (checked here: --benchmark-only skips plain tests)
    want = painted_tile_stats(o, p, GREEN, threshold=THRESHOLD, colour_tol=TOL)
    assert want[0].sum() > 100_000  # the painted cancer is in there
    base = painted_labels_baseline(o[:SAMPLE], p[:SAMPLE], GREEN)
    for got in (numpy_stats(o, p), opencv_batch_stats(o, p), base):
        m = len(got[0])
        np.testing.assert_array_equal(got[0], want[0][:m])
        np.testing.assert_array_equal(got[1], want[1][:m])
    return o, p


@pytest.fixture(scope="module", autouse=True)
def summary():
    yield
    if "baseline" in RESULTS:
        print("\nlabel-painted, µs per 128 px tile:")
        for name, us in RESULTS.items():
            print(f"  {name:12} {us:9.2f}  ({RESULTS['baseline'] / us:6.1f}x the baseline)")


def numpy_stats(original: np.ndarray, painted: np.ndarray, batch: int = 256):
    """The marking rule vectorised with NumPy, batch by batch to bound the temporaries.

    Channel planes as strided views (cheaper than reductions over a length-3 axis), uint8
    differences without overflow, and per-tile sums with ``bincount`` over the marked pixels only
    (faster than a masked product when few pixels are marked, as on real slides).
    """
    n = len(original)
    counts = np.zeros(n, np.int64)
    sums = np.zeros((n, 3), np.int64)
    lo = np.clip(GREEN[0].astype(np.int16) - TOL, 0, 255).astype(np.uint8)
    hi = np.clip(GREEN[0].astype(np.int16) + TOL, 0, 255).astype(np.uint8)
    for s in range(0, n, batch):
        k = min(batch, n - s)
        o = original[s : s + k].reshape(k, -1, 3)
        p = painted[s : s + k].reshape(k, -1, 3)
        edited = near = None
        for c in range(3):
            oc, pc = o[:, :, c], p[:, :, c]
            big = (np.maximum(oc, pc) - np.minimum(oc, pc)) > THRESHOLD
            ok = (pc >= lo[c]) & (pc <= hi[c])
            edited = big if edited is None else edited | big
            near = ok if near is None else near & ok
        marked = edited & near
        counts[s : s + k] = marked.sum(axis=1)
        t, i = np.nonzero(marked)
        vals = p[t, i]
        for c in range(3):
            sums[s : s + k, c] = np.bincount(t, weights=vals[:, c], minlength=k).astype(np.int64)
    return counts, sums


def opencv_batch_stats(original: np.ndarray, painted: np.ndarray, batch: int = 256):
    """The rule with whole-batch OpenCV calls: a batch of tiles is one tall image, so each pixel
    step (absdiff, channel max, threshold, inRange, and) is one SIMD call for 256 tiles; the
    per-tile reductions are ``cv2.countNonZero`` and, for tiles with marks only,
    ``cv2.sumElems`` (faster than NumPy reductions over the batch)."""
    import cv2

    n, h, w, _ = original.shape
    counts = np.zeros(n, np.int64)
    sums = np.zeros((n, 3), np.int64)
    lo = np.clip(GREEN[0].astype(np.int16) - TOL, 0, 255).astype(np.uint8)
    hi = np.clip(GREEN[0].astype(np.int16) + TOL, 0, 255).astype(np.uint8)
    for s in range(0, n, batch):
        k = min(batch, n - s)
        o = original[s : s + k].reshape(k * h, w, 3)
        p = painted[s : s + k].reshape(k * h, w, 3)
        r, g, b = cv2.split(cv2.absdiff(o, p))
        _, marked = cv2.threshold(cv2.max(cv2.max(r, g), b), THRESHOLD, 255, cv2.THRESH_BINARY)
        marked = cv2.bitwise_and(marked, cv2.inRange(p, lo, hi)).reshape(k, h, w)
        for i in range(k):
            counts[s + i] = c = cv2.countNonZero(marked[i])
            if c:
                tile = painted[s + i]
                kept = cv2.bitwise_and(tile, tile, mask=marked[i])
                sums[s + i] = np.rint(cv2.sumElems(kept)[:3]).astype(np.int64)
    return counts, sums


def _record(benchmark, name: str, n_tiles: int) -> None:
    us = benchmark.stats.stats.min / n_tiles * 1e6
    benchmark.extra_info["us_per_tile"] = round(us, 3)
    benchmark.extra_info["tiles"] = n_tiles
    RESULTS[name] = us


@pytest.mark.benchmark(group="label-painted")
@pytest.mark.parametrize("threads", [None, 1], ids=["all-cores", "1-thread"])
def test_native(benchmark, tiles, threads) -> None:
    o, p = tiles
    benchmark(
        painted_tile_stats, o, p, GREEN, threshold=THRESHOLD, colour_tol=TOL, n_threads=threads
    )
    _record(benchmark, f"native-{'all' if threads is None else 1}", len(o))


@pytest.mark.benchmark(group="label-painted")
def test_numpy(benchmark, tiles) -> None:
    o, p = tiles
    benchmark.pedantic(numpy_stats, args=(o, p), rounds=3, iterations=1)
    _record(benchmark, "numpy", len(o))


@pytest.mark.benchmark(group="label-painted")
def test_opencv_batch(benchmark, tiles) -> None:
    o, p = tiles
    benchmark.pedantic(opencv_batch_stats, args=(o, p), rounds=5, iterations=1)
    _record(benchmark, "opencv-batch", len(o))


@pytest.mark.benchmark(group="label-painted")
def test_baseline(benchmark, tiles) -> None:
    o, p = tiles
    benchmark.pedantic(
        painted_labels_baseline, args=(o[:SAMPLE], p[:SAMPLE], GREEN), rounds=3, iterations=1
    )
    _record(benchmark, "baseline", SAMPLE)
