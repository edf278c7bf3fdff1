"""Overlay: native blend vs NumPy reference, pyramidal TIFF that OpenSlide opens, GeoJSON, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from _scoregrid import make_scores

from prostate_fast import SlideError
from prostate_fast.geojson import export_geojson
from prostate_fast.overlay import (
    BlendTables,
    blend_tables,
    blend_tiles,
    parse_colour,
    write_overlay,
)


# -- NumPy reference of csrc/blend.hpp -------------------------------------------------------------
def _axis(v: np.ndarray, tile: int, stride: int, n: int) -> np.ndarray:
    c = np.floor_divide(2 * v + 1 - tile + stride, 2 * stride)
    off = v - c * stride
    return np.where((c >= 0) & (c < n) & (off >= 0) & (off < tile), c, -1)


def reference_blend(img: np.ndarray, t: BlendTables, x0: int = 0, y0: int = 0) -> np.ndarray:
    h, w = img.shape[:2]
    rows, cols = t.cls.shape
    xs, ys = np.arange(x0, x0 + w), np.arange(y0, y0 + h)
    cx, cy = _axis(xs, t.tile_size, t.stride, cols), _axis(ys, t.tile_size, t.stride, rows)
    ow = t.outline_width

    def border(v: np.ndarray, c: np.ndarray, n: int) -> np.ndarray:
        a, b = _axis(v - ow, t.tile_size, t.stride, n), _axis(v + ow, t.tile_size, t.stride, n)
        return (c >= 0) & (ow > 0) & ((a != c) | (b != c))

    bx, by = border(xs, cx, cols), border(ys, cy, rows)
    valid = (cy[:, None] >= 0) & (cx[None, :] >= 0)
    r, c = np.maximum(cy, 0)[:, None], np.maximum(cx, 0)[None, :]
    k = np.where(valid, t.cls[r, c], -1)
    a = np.where(k >= 0, t.alpha[r, c], 0).astype(np.int64)[..., None]
    col = t.colours[np.maximum(k, 0)].astype(np.int64)
    out = (img.astype(np.int64) * (256 - a) + col * a + 128) >> 8
    edge = (k >= 0) & (t.outline[r, c] > 0) & (by[:, None] | bx[None, :])
    out[edge] = col[edge]
    return out.astype(np.uint8)


def _random_tables(rng, rows, cols, tile, stride, outline=0, k=3) -> BlendTables:
    cls = rng.integers(-1, k, (rows, cols)).astype(np.int16)
    alpha = rng.integers(0, 257, (rows, cols)).astype(np.uint16)
    ol = rng.integers(0, 2, (rows, cols)).astype(np.uint8)
    colours = rng.integers(0, 256, (k, 3)).astype(np.uint8)
    names = tuple(f"c{i}" for i in range(k))
    return BlendTables(cls, alpha, ol, colours, names, tile, stride, outline)


@pytest.mark.parametrize(
    ("tile", "stride", "outline"), [(16, 16, 0), (16, 16, 2), (16, 12, 1), (10, 13, 1), (7, 5, 3)]
)
def test_blend_equals_numpy_reference(tile, stride, outline) -> None:
    rng = np.random.default_rng(tile * 100 + stride)
    t = _random_tables(rng, 9, 11, tile, stride, outline)
    img = rng.integers(0, 256, (9 * stride + tile, 11 * stride + tile + 5, 3)).astype(np.uint8)
    got = blend_tiles(img, t, n_threads=2)
    np.testing.assert_array_equal(got, reference_blend(img, t))
    # a strip with an origin (as write_overlay blends) gives the same pixels as the whole image
    strip = img[23:61, 5:].copy()
    blend_tiles(strip, t, origin=(5, 23), out=strip, n_threads=1)
    np.testing.assert_array_equal(strip, got[23:61, 5:])


def test_blend_per_tile_loop_reference() -> None:
    # Independent of the pixel-to-cell formula: with stride == tile, tile (r, c) is a plain slice.
    rng = np.random.default_rng(1)
    t = _random_tables(rng, 4, 5, 32, 32)
    img = rng.integers(0, 256, (4 * 32 + 7, 5 * 32 + 9, 3)).astype(np.uint8)
    want = img.astype(np.int64)
    for r in range(4):
        for c in range(5):
            k = int(t.cls[r, c])
            if k < 0:
                continue
            a, col = int(t.alpha[r, c]), t.colours[k].astype(np.int64)
            sl = want[r * 32 : r * 32 + 32, c * 32 : c * 32 + 32]
            sl[:] = (sl * (256 - a) + col * a + 128) >> 8
    np.testing.assert_array_equal(blend_tiles(img, t), want.astype(np.uint8))


def test_blend_same_bytes_for_any_thread_count() -> None:
    rng = np.random.default_rng(7)
    t = _random_tables(rng, 40, 30, 8, 8, 1)
    img = rng.integers(0, 256, (40 * 8, 30 * 8, 3)).astype(np.uint8)
    one = blend_tiles(img, t, n_threads=1)
    np.testing.assert_array_equal(one, blend_tiles(img, t, n_threads=2))
    np.testing.assert_array_equal(one, blend_tiles(img, t, n_threads=5))
    np.testing.assert_array_equal(img, img.copy())  # input untouched without out=


def test_blend_alpha_extremes_and_bad_inputs() -> None:
    t = _random_tables(np.random.default_rng(0), 1, 1, 4, 4)
    t = replace(t, cls=np.array([[1]], np.int16), alpha=np.array([[256]], np.uint16))
    img = np.full((4, 4, 3), 200, np.uint8)
    assert (blend_tiles(img, t) == t.colours[1]).all()
    t0 = replace(t, alpha=np.array([[0]], np.uint16))
    np.testing.assert_array_equal(blend_tiles(img, t0), img)
    with pytest.raises(ValueError, match="image"):
        blend_tiles(img.astype(np.float32), t)
    with pytest.raises(ValueError, match="out"):
        blend_tiles(img, t, out=np.empty((4, 5, 3), np.uint8))
    bad = replace(t, cls=np.array([[9]], np.int16))
    with pytest.raises(ValueError, match="cls"):
        blend_tiles(img, bad)


def test_blend_tables_modes(synthetic_small) -> None:
    s = make_scores(synthetic_small)
    pred = np.asarray(s.predicted)
    t = blend_tables(s, alpha=0.5)
    rc = s.tile_rc
    assert (t.cls[rc[:, 0], rc[:, 1]] == np.where(pred > 0, pred, -1)).all()
    assert set(np.unique(t.alpha)) <= {0, 128}
    assert tuple(t.colours[1]) == (0, 255, 0)
    g = blend_tables(s, alpha=0.5, mode="graded", outline=2, colours={"cancer": (255, 0, 0)})
    p = np.asarray(s.prob)[:, 1]
    np.testing.assert_array_equal(g.alpha[rc[:, 0], rc[:, 1]], np.rint(0.5 * p * 256))
    assert (g.outline[rc[:, 0], rc[:, 1]] == (pred > 0)).all()
    assert tuple(g.colours[1]) == (255, 0, 0)
    for kw, match in [
        ({"alpha": 1.5}, "alpha"),
        ({"mode": "x"}, "mode"),
        ({"outline": -1}, "outline"),
        ({"colours": {"tumour": (1, 2, 3)}}, "unknown classes"),
        ({"colours": {"cancer": (1, 2, 300)}}, "cancer"),
    ]:
        with pytest.raises(ValueError, match=match):
            blend_tables(s, **kw)


def test_parse_colour() -> None:
    assert parse_colour("cancer=0,255,0") == ("cancer", (0, 255, 0))
    assert parse_colour("g4=#ff8000") == ("g4", (255, 128, 0))
    for bad in ("cancer", "cancer=1,2", "=1,2,3", "cancer=0,0,256", "c=#12"):
        with pytest.raises(ValueError, match="colour"):
            parse_colour(bad)


# -- the whole-slide writer ------------------------------------------------------------------------
def test_overlay_lossless_pixels_equal_reference(synthetic_small, tmp_path) -> None:
    import openslide

    from prostate_fast.slide import open_slide

    s = make_scores(synthetic_small)
    out = tmp_path / "ov.tif"
    res = write_overlay(
        synthetic_small.slide,
        s,
        out,
        compression="none",
        outline=1,
        strip_pixels=4096 * 256,
        n_threads=2,
    )
    tables = blend_tables(s, outline=1)
    with open_slide(synthetic_small.slide) as sl:  # OpenSlide's pixels
        base = sl.read_region((0, 0), 0, sl.dimensions)
    with tifffile.TiffFile(out) as tf:
        assert len(tf.pages) == len(res.level_dimensions) == 4
        got = tf.pages[0].asarray()
        lvl1 = tf.pages[1].asarray()
    # sampled tiles (predicted, negative, outside the tissue, the grid's edges) against NumPy
    rng = np.random.default_rng(0)
    pos = s.tile_rc[np.asarray(s.predicted) > 0]
    neg = s.tile_rc[np.asarray(s.predicted) == 0]
    rows, cols = s.grid_shape
    cells = [
        *pos[rng.choice(len(pos), 8)],
        *neg[rng.choice(len(neg), 4)],
        (0, 0),
        (rows - 1, cols - 1),
    ]
    for r, c in cells:
        y, x = int(r) * 128, int(c) * 128
        want = reference_blend(base[y : y + 160, x : x + 160], tables, x, y)
        np.testing.assert_array_equal(got[y : y + 160, x : x + 160], want)
    # the whole level 0, and level 1 = 2 x 2 means of it
    np.testing.assert_array_equal(got, blend_tiles(base, tables))
    want1 = cv2.resize(got, (2048, 1024), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(lvl1, want1)
    osr = openslide.OpenSlide(str(out))
    assert osr.level_dimensions == ((4096, 2048), (2048, 1024), (1024, 512), (512, 256))
    assert float(osr.properties["openslide.mpp-x"]) == pytest.approx(0.5)
    assert osr.properties["openslide.vendor"] == "generic-tiff"
    desc = json.loads(osr.properties["tiff.ImageDescription"])["prostate_fast"]
    assert desc["slide"] == synthetic_small.slide.name and desc["classes"] == ["benign", "cancer"]
    osr.close()


def test_overlay_jpeg_thumbnail_geojson_and_threads(synthetic_small, tmp_path) -> None:
    import openslide

    s = make_scores(synthetic_small)
    a = write_overlay(synthetic_small.slide, s, tmp_path / "a.tif", n_threads=1)
    geojson = export_geojson(a.scores, tmp_path / "a.geojson")
    b = write_overlay(
        synthetic_small.slide,
        s,
        tmp_path / "b.tif",
        n_threads=2,
        thumbnail=False,
        strip_pixels=1 << 20,
    )
    assert (tmp_path / "a.tif").read_bytes() == (tmp_path / "b.tif").read_bytes()
    assert b.thumbnail is None and not (tmp_path / "b-thumb.png").exists()
    osr = openslide.OpenSlide(str(a.path))
    slide_levels = openslide.OpenSlide(str(synthetic_small.slide)).level_dimensions
    assert osr.level_dimensions == slide_levels == a.level_dimensions  # the slide's own levels
    assert float(osr.properties["openslide.mpp-y"]) == pytest.approx(0.5)
    # JPEG is lossy: decoded pixels of the predicted tiles stay close to the exact blend
    rc = s.tile_rc[np.asarray(s.predicted) > 0][:6]
    from prostate_fast.slide import open_slide

    with open_slide(synthetic_small.slide) as sl:
        for r, c in rc:
            x, y = int(c) * 128, int(r) * 128
            src = sl.read_region((x, y), 0, (128, 128))
            want = reference_blend(src, blend_tables(s), x, y)
            got = np.asarray(osr.read_region((x, y), 0, (128, 128)).convert("RGB"))
            assert np.abs(got.astype(int) - want).mean() < 4.0
    osr.close()
    thumb = cv2.imread(str(a.thumbnail))
    assert thumb.shape[1] == 2048 and thumb.shape[0] > 1024  # slide + legend panel
    doc = json.loads(geojson.read_text())
    assert doc["type"] == "FeatureCollection"
    assert len(doc["features"]) == int((np.asarray(s.predicted) > 0).sum()) > 0
    f = doc["features"][0]
    ring = f["geometry"]["coordinates"][0]
    assert f["geometry"]["type"] == "Polygon" and ring[0] == ring[-1] and len(ring) == 5
    assert ring[2][0] - ring[0][0] == 128
    props = f["properties"]
    assert props["objectType"] == "detection"
    assert props["classification"] == {"name": "cancer", "color": [0, 255, 0]}
    assert props["measurements"]["probability"] >= 0.5 and "p_benign" in props["measurements"]


def test_overlay_tiling_level_not_a_pyramid_level(synthetic_small, tmp_path) -> None:
    # 10x tiles from a 20x slide whose next level is 4x smaller: level 0 shrunk by 2
    import openslide

    s = make_scores(synthetic_small, tile=64, downsample=2.0, scale=2.0)
    res = write_overlay(synthetic_small.slide, s, tmp_path / "x.tif", thumbnail=False)
    assert res.level_dimensions[0] == (2048, 1024)
    osr = openslide.OpenSlide(str(res.path))
    assert float(osr.properties["openslide.mpp-x"]) == pytest.approx(1.0)
    osr.close()


def test_overlay_errors_leave_nothing(synthetic_small, tmp_path) -> None:
    s = make_scores(synthetic_small)
    slide = synthetic_small.slide
    with pytest.raises(SlideError, match="computed for"):
        write_overlay(
            slide, make_scores(synthetic_small, slide_name="other.svs"), tmp_path / "o.tif"
        )
    with pytest.raises(SlideError, match="does not fit"):
        write_overlay(slide, make_scores(synthetic_small, grid_shape=(20, 32)), tmp_path / "o.tif")
    with pytest.raises(SlideError, match="level"):
        write_overlay(slide, replace(s, level=7), tmp_path / "o.tif")
    with pytest.raises(SlideError, match="downsample"):
        write_overlay(slide, replace(s, downsample=3.0), tmp_path / "o.tif")
    for kw, match in [
        ({"quality": 0}, "quality"),
        ({"compression": "lzw"}, "compression"),
        ({"alpha": -0.1}, "alpha"),
        ({"thumbnail_size": 10}, "thumbnail_size"),
    ]:
        with pytest.raises(ValueError, match=match):
            write_overlay(slide, s, tmp_path / "o.tif", **kw)
    with pytest.raises(SlideError):
        write_overlay(tmp_path / "missing.tif", s, tmp_path / "o.tif")
    assert list(tmp_path.iterdir()) == []
    existing = tmp_path / "o.tif"
    existing.write_bytes(b"keep")
    with pytest.raises(FileExistsError):
        write_overlay(slide, s, existing)
    (tmp_path / "p-thumb.png").write_bytes(b"keep")
    with pytest.raises(FileExistsError):
        write_overlay(slide, s, tmp_path / "p.tif")  # the thumbnail would be replaced
    assert existing.read_bytes() == b"keep" and not (tmp_path / "p.tif").exists()


def test_overlay_read_failure_midway_leaves_no_file(synthetic_small, tmp_path, monkeypatch) -> None:
    from prostate_fast.slide import open_slide

    with open_slide(synthetic_small.slide) as sl:
        calls, read_scaled = [], sl.read_scaled

        def failing(*a):
            calls.append(a)
            if len(calls) == 2:
                raise SlideError("damaged tile")
            return read_scaled(*a)

        monkeypatch.setattr(sl, "_level_decoder", lambda level: None)  # the slow path
        monkeypatch.setattr(sl, "read_scaled", failing)
        with pytest.raises(SlideError, match="damaged tile"):
            write_overlay(
                sl, make_scores(synthetic_small), tmp_path / "o.tif", strip_pixels=1 << 20
            )
    assert list(tmp_path.iterdir()) == []


def _overlay_rss(slide: Path, scores_code: str, out: Path) -> int:
    code = f"""
import resource, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from prostate_fast.synthetic import SyntheticSlide
from prostate_fast.overlay import write_overlay
from _scoregrid import make_scores
{scores_code}
write_overlay({str(slide)!r}, s, {str(out)!r}, n_threads=2, thumbnail=False, strip_pixels=1 << 20)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""
    # glibc keeps freed strip buffers in its heap once its dynamic mmap threshold has risen, which
    # adds 20-30 MB of noise that depends on the number of strips, not their size: fix it.
    env = {**os.environ, "MALLOC_ARENA_MAX": "2", "MALLOC_MMAP_THRESHOLD_": "1048576"}
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    return int(res.stdout.split()[-1]) * 1024


@pytest.mark.slow
def test_overlay_memory_does_not_grow_with_slide_size(tmp_path) -> None:
    from prostate_fast.synthetic import make_synthetic

    rss = []
    for name, height in (("small", 2048), ("large", 8192)):  # 16.8 and 67 megapixels
        syn = make_synthetic(tmp_path, name=name, width=8192, height=height, seed=5, n_cores=3)
        code = (
            "import pickle; syn = pickle.loads(" + repr(__import__("pickle").dumps(syn)) + ")\n"
            "s = make_scores(syn)"
        )
        rss.append(_overlay_rss(syn.slide, code, tmp_path / f"{name}-ov.tif"))
    # The larger slide's level 0 alone is 150 MB more: a whole-slide buffer would show it. What
    # may differ is how full the pipeline gets (up to ~4 strips of 6 MB in flight, plus encoder
    # buffers), which depends on timing and on the load of the machine: 5 to 40 MB measured.
    assert rss[1] - rss[0] < 64 * 2**20, [r / 2**20 for r in rss]


# -- real slides (PROSTATE_FAST_DATA) --------------------------------------------------------------
def _random_scores(path: Path, level: int, tile: int = 64):
    from prostate_fast.predict import ScoreGrid
    from prostate_fast.slide import open_slide
    from prostate_fast.tile import full_grid

    with open_slide(path) as sl:
        choice = sl.choose_level(level=level)
        g = full_grid(sl, choice, tile)
    p = np.random.default_rng(0).uniform(0, 1, len(g)).astype(np.float32)
    return ScoreGrid(
        slide_path=str(path),
        slide_name=path.name,
        classes=("benign", "cancer"),
        colours={"cancer": (0, 255, 0)},
        tile_size=tile,
        stride=tile,
        level=choice.level,
        downsample=choice.downsample,
        scale=choice.scale,
        mpp=choice.mpp,
        grid_shape=g.grid_shape,
        tile_rc=g.tile_rc,
        l0_xy=g.l0_xy,
        prob=np.stack([1 - p, p], 1),
        thresholds={"cancer": 0.5},
        model="random",
        engine="none",
    )


@pytest.mark.parametrize(
    ("name", "level", "mpp"),
    [
        ("CMU-1-Small-Region.svs", 0, 0.499),  # Aperio JPEG 240 px tiles: the fast reader
        ("tcga-cr-7395-01a-01-ts1.svs", 1, None),  # JPEG 2000, downsample 2.0005, no mpp
        ("test3-DAPI-2-387.ndpi", 2, 0.228 * 4),  # NDPI: OpenSlide's reader
    ],
)
def test_overlay_real_slides(data_dir, tmp_path, name, level, mpp) -> None:
    import openslide

    path = data_dir / "wsi" / name
    s = _random_scores(path, level)
    out = tmp_path / "o.tif"
    res = write_overlay(path, s, out, compression="none", outline=1, n_threads=2)
    with tifffile.TiffFile(path) as tf:  # the level's own pixels, row for row
        src = tf.series[0].levels[level].asarray() if name.endswith(".svs") else None
    if src is None:
        with openslide.OpenSlide(str(path)) as osr:
            w, h = osr.level_dimensions[level]
            src = np.asarray(osr.read_region((0, 0), level, (w, h)))[..., :3]
    with tifffile.TiffFile(out) as tf:
        got = tf.pages[0].asarray()
    np.testing.assert_array_equal(got, blend_tiles(src, blend_tables(s, outline=1)))
    with openslide.OpenSlide(str(out)) as osr:
        assert osr.level_dimensions == res.level_dimensions
        assert osr.dimensions == (src.shape[1], src.shape[0])
        if mpp is None:
            assert "openslide.mpp-x" not in osr.properties
        else:
            assert float(osr.properties["openslide.mpp-x"]) == pytest.approx(mpp, rel=1e-3)


# -- tiles partly off tissue -----------------------------------------------------------------------
def _scores_with_tissue(syn):
    """Every tissue tile (128 px, 20x) predicted cancer, with the tissue share and mask recorded."""
    from prostate_fast.slide import open_slide
    from prostate_fast.tile import build_grid
    from prostate_fast.tissue import detect_tissue

    with open_slide(syn.slide) as sl:
        tissue = detect_tissue(sl)
        grid = build_grid(sl, tissue, tile_size=128)
        base = sl.read_region((0, 0), 0, sl.dimensions)
    s = make_scores(syn)
    n = len(grid)
    prob = np.tile(np.array([[0.1, 0.9]], np.float32), (n, 1))
    s = replace(
        s,
        tile_rc=grid.tile_rc.astype(np.int32),
        l0_xy=grid.l0_xy.astype(np.int64),
        prob=prob,
        tissue_fraction=grid.tissue_fraction.astype(np.float32),
        tissue_mask=tissue.mask.astype(bool),
        tissue_downsample=float(tissue.downsample),
    )
    return s, base


def test_overlay_tints_tissue_pixels_only(synthetic_small, tmp_path) -> None:
    from prostate_fast.predict.scoregrid import load_score_grid, tissue_pixels

    s, base = _scores_with_tissue(synthetic_small)
    partial = s.tissue_fraction < 1.0
    assert partial.sum() >= 5 and (~partial).sum() >= 5
    s.save(tmp_path / "s.npz")
    for scores in (s, tmp_path / "s.npz"):  # in memory and through the file
        out = tmp_path / f"ov{len(str(scores))}.tif"
        write_overlay(synthetic_small.slide, scores, out, compression="none", n_threads=2)
        with tifffile.TiffFile(out) as tf:
            got = tf.pages[0].asarray()
        tinted = blend_tiles(base, blend_tables(s))  # the kernel: whole tiles
        h, w = base.shape[:2]
        tissue = tissue_pixels(s.tissue_mask, s.tissue_downsample, 1.0, (0, 0, w, h))
        np.testing.assert_array_equal(got[tissue], tinted[tissue])  # tissue: the kernel's bytes
        np.testing.assert_array_equal(got[~tissue], base[~tissue])  # glass: untouched
        for (r, c), part in zip(s.tile_rc, partial, strict=True):
            box = (slice(r * 128, r * 128 + 128), slice(c * 128, c * 128 + 128))
            if not part:  # fully on tissue: exactly as before
                np.testing.assert_array_equal(got[box], tinted[box])
            else:  # an edge tile: tinted on its tissue, its glass left as it is
                on = tissue[box]
                assert on.any() and (~on).any()
                assert (got[box][on] != base[box][on]).any()
                np.testing.assert_array_equal(got[box][~on], base[box][~on])
    # a grid without the mask (version 1, or a CSV) tints whole tiles as before
    old = replace(s, tissue_mask=None, tissue_downsample=None)
    write_overlay(synthetic_small.slide, old, tmp_path / "old.tif", compression="none")
    with tifffile.TiffFile(tmp_path / "old.tif") as tf:
        np.testing.assert_array_equal(tf.pages[0].asarray(), blend_tiles(base, blend_tables(s)))
    assert load_score_grid(tmp_path / "s.npz").tissue_mask.shape == s.tissue_mask.shape


def test_score_grid_files_keep_the_tissue(synthetic_small, tmp_path) -> None:
    import json as _json

    from prostate_fast.predict.scoregrid import load_score_grid

    s, _ = _scores_with_tissue(synthetic_small)
    a = load_score_grid(s.save(tmp_path / "s.npz"))
    np.testing.assert_array_equal(a.tissue_mask, s.tissue_mask)
    np.testing.assert_array_equal(a.tissue_fraction, s.tissue_fraction)
    assert a.tissue_downsample == s.tissue_downsample
    b = load_score_grid(s.save(tmp_path / "s.csv"))
    np.testing.assert_array_equal(b.tissue_fraction, s.tissue_fraction)
    assert b.tissue_mask is None  # the CSV keeps the share, not the mask
    header = (tmp_path / "s.csv").read_text().splitlines()[1]
    assert header == "row,col,x,y,p_benign,p_cancer,tissue,predicted"
    # version 1 files (no tissue) still load
    old = replace(s, tissue_fraction=None, tissue_mask=None, tissue_downsample=None)
    text = (old.save(tmp_path / "v1.csv")).read_text().splitlines()
    meta = _json.loads(text[0].split(" grid ", 1)[1])
    meta["version"] = 1
    rows = [",".join(r.split(",")[:-2] + r.split(",")[-1:]) for r in text[1:]]
    (tmp_path / "v1.csv").write_text(
        f"# prostate-fast score grid {_json.dumps(meta)}\n" + "\n".join(rows) + "\n"
    )
    v1 = load_score_grid(tmp_path / "v1.csv")
    assert v1.tissue_fraction is None and v1.tissue_mask is None
    np.testing.assert_array_equal(v1.prob, s.prob)
    with pytest.raises(ValueError, match="both or neither"):
        replace(s, tissue_downsample=None)
