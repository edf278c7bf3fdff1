"""Synthetic slides: file formats, determinism, truth consistency, errors and atomic output."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
import tifffile

from prostate_fast.slide.pyramid import level_dimensions
from prostate_fast.synthetic import (
    CODES,
    SyntheticSlide,
    make_synthetic,
    render_region,
    synthetic_params,
    truth_mask,
    writer,
)

W, H, SEED = 2048, 1024, 3
KW = {"width": W, "height": H, "seed": SEED, "pen_marks": True}
FILES = ("slide", "painted", "geojson", "mask", "meta")


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> SyntheticSlide:
    return make_synthetic(tmp_path_factory.mktemp("synth"), **KW)


@pytest.fixture(scope="module")
def level0(made) -> tuple[np.ndarray, np.ndarray]:
    return tifffile.imread(made.slide, key=0), tifffile.imread(made.painted, key=0)


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _upsample(mask: np.ndarray, d: int) -> np.ndarray:
    """Mask codes at every level-0 pixel of the slide (nearest)."""
    return np.repeat(np.repeat(mask, d, axis=0), d, axis=1)[:H, :W]


def _erode(binary: np.ndarray, r: int) -> np.ndarray:
    k = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * r + 1, 2 * r + 1))
    return cv2.erode(binary.astype(np.uint8), k).astype(bool)


def test_openslide_reads_generic_tiff(made) -> None:
    openslide = pytest.importorskip("openslide")
    for path in (made.slide, made.painted):
        with openslide.OpenSlide(str(path)) as s:
            assert s.properties["openslide.vendor"] == "generic-tiff"
            assert float(s.properties["openslide.mpp-x"]) == pytest.approx(0.5)
            assert float(s.properties["openslide.mpp-y"]) == pytest.approx(0.5)
            assert s.level_count == 2
            assert s.level_dimensions == ((W, H), (W // 4, H // 4))
            region = np.asarray(s.read_region((512, 256), 0, (300, 200)).convert("RGB"))
        decoded = tifffile.imread(path, key=0)[256:456, 512:812]
        assert np.array_equal(region, decoded)


def test_tiff_tags(made) -> None:
    with tifffile.TiffFile(made.slide) as tif:
        assert len(tif.pages) == 2
        meta = json.loads(tif.pages[0].description)["prostate_fast"]
        assert meta == {
            "generator": "prostate_fast.synthetic",
            "version": 1,
            "seed": SEED,
            "mpp": 0.5,
            "objective_power": 20.0,
            "width": W,
            "height": H,
        }
        for lvl, page in enumerate(tif.pages):
            assert page.is_tiled and page.tilewidth == page.tilelength == 256
            assert page.compression == tifffile.COMPRESSION.JPEG
            assert page.tags["NewSubfileType"].value == (0 if lvl == 0 else 1)
            num, den = page.tags["XResolution"].value
            assert num / den == pytest.approx(1e4 / (0.5 * 4**lvl))
            assert page.tags["ResolutionUnit"].value == tifffile.RESUNIT.CENTIMETER
        assert tif.pages[1].shape == (H // 4, W // 4, 3)


def test_same_seed_byte_identical_for_any_thread_count(made, tmp_path) -> None:
    again = make_synthetic(tmp_path, n_threads=1, **KW)  # `made` used every core
    for f in FILES:
        assert _sha(getattr(again, f)) == _sha(getattr(made, f)), f


def test_different_seed_differs(made, tmp_path) -> None:
    other = make_synthetic(tmp_path, **{**KW, "seed": SEED + 1})
    for f in ("slide", "painted", "mask", "geojson"):
        assert _sha(getattr(other, f)) != _sha(getattr(made, f)), f


def test_painted_copy_is_green_over_cancer_only(made, level0) -> None:
    slide, painted = level0
    assert painted.shape == slide.shape == (H, W, 3)
    codes = _upsample(made.truth_mask(), made.mask_downsample)
    cancer = _erode(codes == 2, 12)  # a mask pixel is 8 level-0 pixels
    assert cancer.sum() > 1000
    px = painted[cancer].astype(int)
    assert px[:, 1].min() > 200 and px[:, 0].max() < 60 and px[:, 2].max() < 60
    away = _erode(codes != 2, 40)
    diff = np.abs(painted[away].astype(int) - slide[away])
    assert diff.max() <= 3 and diff.mean() < 0.05
    assert not np.array_equal(painted, slide)


def test_geojson_matches_mask(made) -> None:
    geo = json.loads(made.geojson.read_text())
    assert geo["type"] == "FeatureCollection"
    assert len(geo["features"]) == len(made.cancer_polygons) >= 1
    d = made.mask_downsample
    mask = made.truth_mask()
    inside = np.zeros(mask.shape, np.int8)  # +1 inside, 0 on the edge, -1 outside a polygon
    inside[:] = -1
    for feat, poly in zip(geo["features"], made.cancer_polygons, strict=True):
        assert feat["properties"]["objectType"] == "annotation"
        assert feat["properties"]["classification"] == {"name": "Cancer", "color": [0, 255, 0]}
        assert feat["geometry"]["type"] == "Polygon"
        ring = np.array(feat["geometry"]["coordinates"][0], float)
        assert np.array_equal(ring[0], ring[-1]) and np.array_equal(ring[:-1], poly)
        contour = ring[:-1].astype(np.float32).reshape(-1, 1, 2)
        for i in range(mask.shape[0]):  # mask pixel centres, in level-0 coordinates
            for j in range(mask.shape[1]):
                pt = (d * j + (d - 1) / 2, d * i + (d - 1) / 2)
                inside[i, j] = max(inside[i, j], cv2.pointPolygonTest(contour, pt, False))
    assert np.all(mask[inside > 0] == 2)
    assert np.all(mask[inside < 0] != 2)
    assert (inside > 0).sum() > 100


def test_mask_codes_and_meta(made) -> None:
    mask = made.truth_mask()
    d = made.mask_downsample
    assert d == 8 and mask.dtype == np.uint8 and mask.shape == (-(-H // d), -(-W // d))
    assert set(np.unique(mask)) == {0, 1, 2}
    meta = json.loads(made.meta.read_text())
    assert meta["codes"] == CODES == {"background": 0, "benign": 1, "cancer": 2}
    assert meta["colors"] == {"cancer": [0, 255, 0]}
    assert meta["mask_downsample"] == d and meta["seed"] == SEED
    assert (meta["width"], meta["height"], meta["mpp"]) == (W, H, 0.5)
    assert meta["files"]["slide"] == made.slide.name
    assert len(meta["core_polygons"]) == len(made.core_polygons)
    assert np.array_equal(np.array(meta["cancer_polygons"][0]), made.cancer_polygons[0])
    assert np.array_equal(mask, truth_mask(synthetic_params(W, H, SEED, pen_marks=True), d))


def test_tissue_is_darker_and_cancer_is_purple(made, level0) -> None:
    slide = level0[0].astype(np.float64)
    codes = _upsample(made.truth_mask(), made.mask_downsample)
    glass, tissue = _erode(codes == 0, 16), _erode(codes > 0, 16)
    assert slide[glass].mean() > 220
    assert slide[tissue].mean() < 200
    benign, cancer = _erode(codes == 1, 16), _erode(codes == 2, 16)
    b, c = slide[benign].mean(axis=0), slide[cancer].mean(axis=0)
    assert c.mean() < b.mean() - 15  # darker
    assert c[2] - c[0] > b[2] - b[0]  # more blue than red: more haematoxylin


def test_benign_slide(tmp_path) -> None:
    res = make_synthetic(tmp_path, **{**KW, "n_cancer": 0})
    assert res.cancer_polygons == ()
    assert set(np.unique(res.truth_mask())) == {0, 1}
    assert json.loads(res.geojson.read_text())["features"] == []
    assert _sha(res.slide) == _sha(res.painted)


def test_render_region_matches_file(made, level0) -> None:
    params = synthetic_params(W, H, SEED, pen_marks=True)
    cx, cy = made.cancer_polygons[0].mean(axis=0).astype(int)
    x, y = int(np.clip(cx - 256, 0, W - 512)) // 8 * 8, int(np.clip(cy - 200, 0, H - 400)) // 8 * 8
    rgb, codes = render_region(params, (x, y), (512, 400))
    assert rgb.shape == (400, 512, 3) and codes.shape == (400, 512)
    assert rgb.dtype == codes.dtype == np.uint8
    diff = np.abs(rgb.astype(int) - level0[0][y : y + 400, x : x + 512])
    assert diff.mean() < 3
    assert {1, 2} <= set(np.unique(codes))
    d = made.mask_downsample
    mask = made.truth_mask()[y // d : (y + 400) // d, x // d : (x + 512) // d]
    at_centres = codes[d // 2 :: d, d // 2 :: d]  # (x, y) are multiples of d
    assert (mask == at_centres).mean() > 0.98  # the level-0 fill is up to 1 px wider at edges


def test_render_region_is_seamless() -> None:
    params = synthetic_params(W, H, SEED, pen_marks=True)
    full, codes = render_region(params, (0, 0), (W, H))
    for x, y, w, h in ((300, 200, 700, 300), (1, 333, 1500, 257), (-40, -30, 300, 300)):
        part, pc = render_region(params, (x, y), (w, h))
        x0, y0 = max(x, 0), max(y, 0)
        assert np.array_equal(part[y0 - y :, x0 - x :], full[y0 : y + h, x0 : x + w])
        assert np.array_equal(pc[y0 - y :, x0 - x :], codes[y0 : y + h, x0 : x + w])


def test_pen_marks_only_on_glass() -> None:
    plain, codes = render_region(synthetic_params(W, H, SEED), (0, 0), (W, H))
    inked, codes2 = render_region(synthetic_params(W, H, SEED, pen_marks=True), (0, 0), (W, H))
    assert np.array_equal(codes, codes2)
    changed = np.any(plain != inked, axis=2)
    assert changed.sum() > 1000
    assert np.all(codes[changed] == 0)


def test_default_mask_downsample_grows_with_size() -> None:
    assert writer._default_mask_downsample(8192, 4096) == 8
    assert writer._default_mask_downsample(100_000, 50_000) == 32
    assert level_dimensions(100_000, 50_000, **writer._PYRAMID)[-1] == (390, 195)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"width": 1000}, "width"),
        ({"width": 2048.0}, "width"),
        ({"height": True}, "height"),
        ({"seed": -1}, "seed"),
        ({"mpp": 0}, "mpp"),
        ({"objective_power": -20}, "objective_power"),
        ({"n_cores": 0}, "n_cores"),
        ({"n_cores": 2, "n_cancer": 7}, "n_cancer"),
        ({"n_cancer": -1}, "n_cancer"),
        ({"jpeg_quality": 101}, "jpeg_quality"),
        ({"tile": 200}, "tile"),
        ({"name": "a/b"}, "name"),
        ({"mask_downsample": 0}, "mask_downsample"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, name) -> None:
    with pytest.raises(ValueError, match=name):
        make_synthetic(tmp_path / "out", **{**KW, **kwargs})
    assert not (tmp_path / "out").exists()


def test_render_region_bad_arguments() -> None:
    params = synthetic_params(W, H, SEED)
    with pytest.raises(ValueError, match="size"):
        render_region(params, (0, 0), (0, 10))
    with pytest.raises(ValueError, match="params"):
        render_region("nope", (0, 0), (10, 10))  # type: ignore[arg-type]


def test_existing_files_are_not_touched(made, tmp_path) -> None:
    first = make_synthetic(tmp_path, **{**KW, "n_cancer": 0})
    before = {f: _sha(getattr(first, f)) for f in FILES}
    with pytest.raises(FileExistsError, match="synthetic"):
        make_synthetic(tmp_path, **KW)
    assert {f: _sha(getattr(first, f)) for f in FILES} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        getattr(first, f).name for f in FILES
    )
    # one existing file is enough to refuse, before anything is written
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "x.json").write_text("{}")
    with pytest.raises(FileExistsError, match=r"x\.json"):
        make_synthetic(lone, name="x", **KW)
    assert [p.name for p in lone.iterdir()] == ["x.json"]
    again = make_synthetic(tmp_path, overwrite=True, **KW)
    assert _sha(again.slide) == _sha(made.slide)


def test_no_temporary_files_left(made) -> None:
    names = sorted(p.name for p in made.slide.parent.iterdir())
    assert names == sorted(getattr(made, f).name for f in FILES)


def test_render_failure_leaves_nothing(tmp_path, monkeypatch) -> None:
    real, calls = writer._render, []

    def failing(*args):
        calls.append(1)
        if len(calls) > 3:
            raise RuntimeError("render exploded")
        return real(*args)

    monkeypatch.setattr(writer, "_render", failing)
    with pytest.raises(RuntimeError, match="render exploded"):
        make_synthetic(tmp_path, **KW)
    assert list(tmp_path.iterdir()) == []


def test_painted_writer_failure_leaves_nothing(tmp_path, monkeypatch) -> None:
    real = writer._write_pyramid

    def failing(path, strips, params, opts):
        if "painted" in path.name:
            next(iter(strips))
            raise OSError("disk full")
        real(path, strips, params, opts)

    monkeypatch.setattr(writer, "_write_pyramid", failing)
    with pytest.raises(OSError, match="disk full"):
        make_synthetic(tmp_path, **KW)
    assert list(tmp_path.iterdir()) == []


def test_import_is_light() -> None:
    code = (
        "import sys, prostate_fast.synthetic; "
        "assert 'mxnet' not in sys.modules and 'openslide' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
