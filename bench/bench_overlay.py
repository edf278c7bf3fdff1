"""Overlay stage: blend + pyramidal TIFF writer against pyvips and against the 2018 study's way.

Run: ``pytest bench/bench_overlay.py --benchmark-only -s`` (about 2 minutes on 2 cores).

Input: one synthetic 16384 x 8192 slide at 20x (the tiling level is level 0: 134 megapixels,
a 64 x 128 grid of 128 px tiles), generated once per session, and its scores from the truth mask
(tissue tiles only; p(cancer) >= 0.6 on cancer, so the cancer tiles are predicted positive).
Every contender makes the same picture: green at alpha 0.4 over the predicted tiles.

* ``ours``: :func:`prostate_fast.overlay.write_overlay` (strip reader, native blend, one-pass
  pyramid of 256 px JPEG q90 tiles, mpp; the slide's own levels (1x, 4x, 16x: the synthetic
  writer's, as scanners' SVS), whose tiles no coloured cell lies under are the slide's JPEG bytes,
  copied at every level: only the touched tiles are decoded, blended or reduced, and encoded),
  all cores and one thread, no thumbnail; ``ours+extras``
  adds the PNG thumbnail and the GeoJSON;
* ``pyvips``: the best general-purpose tool: ``new_from_file`` + an RGBA layer from the grid
  (``zoom`` by the tile size: nearest neighbour) + ``composite2(..., "over")`` + ``tiffsave``
  (tiled, pyramid, JPEG Q 90, 256 px tiles, resolution), libvips' own threads (all cores);
  its pyramid halves per level (tiffsave has no other factor): its 2x level adds about a
  quarter of level 0's pixels to reduce and encode, which ours, on the slide's 4x levels, skips;
* ``blend kernel``: :func:`prostate_fast.overlay.blend_tiles` on one 1024-row strip against the
  best NumPy form (a Python loop over the tinted cells, integer blend of each slice);
* ``study``: :mod:`prostate_fast.baseline.overlay`: tile JPEG files blended one by one with
  ``cv2.addWeighted`` and rewritten, then read back and reassembled into one flat JPEG
  ("montage"). Timed on a sample of tiles and **extrapolated** to the slide's tiles (per-tile cost
  x number of tiles), plus the measured write of the full flat JPEG.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

from prostate_fast.baseline.overlay import (
    blend_tile_files,
    cut_tile_files,
    reassemble_tile_files,
)
from prostate_fast.geojson import export_geojson
from prostate_fast.overlay import blend_tables, blend_tiles, write_overlay

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _scoregrid import make_scores  # noqa: E402

SIZE = (16384, 8192)
TILE = 128
ALPHA = 0.4
SAMPLE = 512  # tiles the study's way is timed on
RESULTS: dict[str, tuple[float, int]] = {}  # name: (seconds per slide, tiles it stands for)


@pytest.fixture(scope="session")
def made(tmp_path_factory):
    from prostate_fast.synthetic import make_synthetic

    out = tmp_path_factory.mktemp("bench_overlay")
    return make_synthetic(out, name="bench", width=SIZE[0], height=SIZE[1], seed=7)


@pytest.fixture(scope="session")
def scores(made):
    return make_scores(made, tile=TILE)


@pytest.fixture(scope="session", autouse=True)
def report():
    yield
    if not RESULTS:
        return
    n = SIZE[0] // TILE * (SIZE[1] // TILE)
    print(f"\noverlay of a {SIZE[0]} x {SIZE[1]} slide ({n} tiles of {TILE} px):")
    base = RESULTS.get("study (extrapolated)", (None, 0))[0]
    for name, (sec, _) in RESULTS.items():
        vs = f"  {base / sec:7.1f}x faster than the study" if base else ""
        print(f"  {name:24} {sec:8.2f} s per slide {sec / n * 1e6:9.1f} us per tile{vs}")
    ours, vips = RESULTS.get("ours (all cores)"), RESULTS.get("pyvips")
    if ours and vips:
        print(
            f"  overlay vs pyvips: {vips[0] / ours[0]:.2f}x (untouched JPEG tiles copied at every level)"
        )


def _record(name: str, seconds: float) -> None:
    RESULTS[name] = (seconds, SIZE[0] // TILE * (SIZE[1] // TILE))


@pytest.mark.benchmark(group="overlay-slide")
@pytest.mark.parametrize("threads", [None, 1], ids=["all-cores", "1-thread"])
def test_ours(benchmark, made, scores, tmp_path, threads) -> None:
    out = tmp_path / "ours.tif"

    def run():
        write_overlay(made.slide, scores, out, thumbnail=False, overwrite=True, n_threads=threads)

    benchmark.pedantic(run, rounds=2, iterations=1)
    _record(f"ours ({'all cores' if threads is None else '1 thread'})", benchmark.stats.stats.min)
    import openslide

    osr = openslide.OpenSlide(str(out))
    osr.read_region((0, 0), 0, (1024, 1024))  # copied and encoded tiles side by side decode
    assert osr.dimensions == SIZE and float(osr.properties["openslide.mpp-x"]) == 0.5
    osr.close()


@pytest.mark.benchmark(group="overlay-slide")
def test_ours_with_extras(benchmark, made, scores, tmp_path) -> None:
    def run():
        write_overlay(made.slide, scores, tmp_path / "o.tif", overwrite=True)
        export_geojson(scores, tmp_path / "o.geojson", overwrite=True)

    benchmark.pedantic(run, rounds=1, iterations=1)
    _record("ours + thumb + geojson", benchmark.stats.stats.min)


def pyvips_overlay(slide: Path, scores, out: Path) -> None:
    """The same overlay with pyvips: composite an RGBA grid layer, save a pyramidal JPEG TIFF."""
    import pyvips

    base = pyvips.Image.new_from_file(str(slide), access="sequential")
    rows, cols = scores.grid_shape
    layer = np.zeros((rows, cols, 4), np.uint8)
    rc = scores.tile_rc[np.asarray(scores.predicted) > 0]
    layer[rc[:, 0], rc[:, 1]] = (0, 255, 0, round(ALPHA * 255))
    ov = pyvips.Image.new_from_memory(layer.tobytes(), cols, rows, 4, "uchar")
    ov = ov.copy(interpretation="srgb").zoom(scores.tile_size, scores.tile_size)
    ov = ov.embed(0, 0, base.width, base.height)  # transparent beyond the grid
    img = base.composite2(ov, "over").extract_band(0, n=3).cast("uchar")
    px_per_mm = 1000.0 / scores.mpp
    img.tiffsave(
        str(out),
        tile=True,
        pyramid=True,
        compression="jpeg",
        Q=90,
        tile_width=256,
        tile_height=256,
        xres=px_per_mm,
        yres=px_per_mm,
        resunit="cm",
    )


@pytest.mark.benchmark(group="overlay-slide")
def test_pyvips(benchmark, made, scores, tmp_path) -> None:
    pytest.importorskip("pyvips")
    out = tmp_path / "vips.tif"
    benchmark.pedantic(pyvips_overlay, args=(made.slide, scores, out), rounds=2, iterations=1)
    _record("pyvips", benchmark.stats.stats.min)
    import openslide

    ours = tmp_path / "ours-cmp.tif"
    write_overlay(made.slide, scores, ours, thumbnail=False)
    a, b = openslide.OpenSlide(str(out)), openslide.OpenSlide(str(ours))
    assert a.dimensions == b.dimensions == SIZE
    rc = scores.tile_rc[np.asarray(scores.predicted) > 0][0]
    xy = (int(rc[1]) * TILE - 64, int(rc[0]) * TILE - 64)
    pa = np.asarray(a.read_region(xy, 0, (512, 512)))[..., :3].astype(int)
    pb = np.asarray(b.read_region(xy, 0, (512, 512)))[..., :3].astype(int)
    diff = np.abs(pa - pb).mean()
    print(f"\npyvips vs ours, mean |difference| around a cancer tile: {diff:.2f} grey levels")
    assert diff < 4.0


@pytest.mark.benchmark(group="overlay-blend")
@pytest.mark.parametrize("how", ["native-all", "native-1", "numpy"])
def test_blend_kernel(benchmark, made, scores, how) -> None:
    """In place on a 1024-row strip (as write_overlay blends), ns per tinted pixel."""
    from prostate_fast.slide import open_slide

    tables = blend_tables(scores, alpha=ALPHA)
    per_band = ((tables.cls >= 0) & (tables.alpha > 0)).reshape(-1, 1024 // TILE, 128).sum((1, 2))
    y0 = int(np.argmax(per_band)) * 1024  # the 1024-row band with the most tinted cells
    with open_slide(made.slide) as sl:
        strip = sl.read_region((0, y0), 0, (SIZE[0], 1024))
    want = numpy_blend(strip.copy(), tables, y0)
    work = strip.copy()
    if how == "numpy":
        benchmark.pedantic(numpy_blend, args=(work, tables, y0), rounds=5, iterations=1)
    else:
        threads = None if how == "native-all" else 1
        benchmark(blend_tiles, work, tables, origin=(0, y0), out=work, n_threads=threads)
    r0, r1 = y0 // TILE, (y0 + 1024) // TILE
    tinted = int(((tables.cls[r0:r1] >= 0) & (tables.alpha[r0:r1] > 0)).sum()) * TILE * TILE
    ns = benchmark.stats.stats.min / max(tinted, 1) * 1e9
    print(f"\nblend {how}: {ns:.2f} ns per tinted pixel ({tinted / strip[..., 0].size:.1%} tinted)")
    np.testing.assert_array_equal(want, blend_tiles(strip, tables, origin=(0, y0)))


def numpy_blend(strip: np.ndarray, t, y0: int) -> np.ndarray:
    """Best NumPy form we found (stride == tile): blend only the tinted cells, slice by slice.

    Tinted tiles are a small share of a slide, so looping over them in Python and blending each
    slice with uint32 arithmetic beats any whole-strip formulation (per-pixel weight maps by
    ``np.repeat`` cost about 90 ns per pixel).
    """
    out = strip  # in place, as the kernel
    h, w = strip.shape[:2]
    T = t.tile_size
    r0, r1 = y0 // T, min(-(-(y0 + h) // T), t.cls.shape[0])
    for r in range(r0, r1):
        ya, yb = max(r * T - y0, 0), min(r * T + T - y0, h)
        for c in np.flatnonzero((t.cls[r] >= 0) & (t.alpha[r] > 0)).tolist():
            a = np.uint32(t.alpha[r, c])
            col = t.colours[t.cls[r, c]].astype(np.uint32) * a + np.uint32(128)
            sl = out[ya:yb, c * T : min(c * T + T, w)]
            sl[:] = ((sl.astype(np.uint32) * (np.uint32(256) - a) + col) >> 8).astype(np.uint8)
    return out


@pytest.mark.benchmark(group="overlay-slide")
def test_study_way(benchmark, made, scores, tmp_path) -> None:
    import cv2

    from prostate_fast.slide import open_slide

    rows, cols = scores.grid_shape
    n_all = rows * cols  # the study wrote, blended and reassembled every tile
    rng = np.random.default_rng(0)
    pick = np.sort(rng.choice(n_all, SAMPLE, replace=False))
    rc = np.stack([pick // cols, pick % cols], axis=1)
    pos_cells = np.zeros((rows, cols), bool)
    prc = scores.tile_rc[np.asarray(scores.predicted) > 0]
    pos_cells[prc[:, 0], prc[:, 1]] = True
    positive = pos_cells[rc[:, 0], rc[:, 1]].tolist()
    with open_slide(made.slide) as sl:
        files = cut_tile_files(
            lambda x, y, w, h: sl.read_region((x, y), 0, (w, h)), rc, TILE, tmp_path / "tiles"
        )
        band = sl.read_region((0, SIZE[1] // 2), 0, (SIZE[0], 1024))

    def blend():
        return blend_tile_files(files, positive, tmp_path / "blended", alpha=ALPHA)

    benchmark.pedantic(blend, rounds=1, iterations=1)
    per_tile_blend = benchmark.stats.stats.min / SAMPLE
    blended = blend()
    t0 = time.perf_counter()
    reassemble_tile_files(blended, rc, TILE, (rows, cols), None)
    with_tiles = time.perf_counter() - t0
    t0 = time.perf_counter()
    reassemble_tile_files([], rc[:0], TILE, (rows, cols), None)  # the canvas alone, once
    canvas = time.perf_counter() - t0
    per_tile_montage = max(0.0, with_tiles - canvas) / SAMPLE
    flat = np.tile(band, (SIZE[1] // 1024, 1, 1))  # an assembled image of slide content
    t0 = time.perf_counter()
    cv2.imwrite(str(tmp_path / "montage.jpg"), flat, [cv2.IMWRITE_JPEG_QUALITY, 90])
    write = time.perf_counter() - t0
    del flat
    total = (per_tile_blend + per_tile_montage) * n_all + canvas + write
    print(
        f"\nstudy: blend {per_tile_blend * 1e6:.0f} us/tile, montage read+paste "
        f"{per_tile_montage * 1e6:.0f} us/tile, canvas {canvas:.2f} s, flat JPEG write "
        f"{write:.2f} s (sample of {SAMPLE} tiles, extrapolated to {n_all})"
    )
    _record("study (extrapolated)", total)
