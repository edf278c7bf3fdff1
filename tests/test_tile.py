"""Tile grids over tissue masks, tile reading, tile tables and the ``tiles`` command."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from prostate_fast.cli.main import main
from prostate_fast.errors import DatasetError
from prostate_fast.slide import ArraySlide, open_slide
from prostate_fast.tile import (
    MIN_TISSUE,
    TileGrid,
    build_grid,
    full_grid,
    load_tile_table,
    read_tiles,
    render_grid_thumbnail,
    save_tile_table,
    tile_slide,
    tile_white_fraction,
)
from prostate_fast.tile.grid import _box_share, _integral
from prostate_fast.tissue import detect_tissue, tissue_mask_from_rgb, white_fraction


def _disc_slide(w: int = 2048, h: int = 1536) -> ArraySlide:
    yy, xx = np.mgrid[:h, :w]
    img = np.full((h, w, 3), (236, 235, 238), np.uint8)
    img[((yy - h / 2) / (h / 3)) ** 2 + ((xx - w / 2) / (w / 3)) ** 2 <= 1] = (214, 140, 190)
    return ArraySlide(img, mpp=0.5, objective_power=20, downsamples=(1, 4), name="disc.png")


# -- tissue fraction per tile -------------------------------------------------------------------
def test_box_share_is_exact_for_fractional_boxes():
    rng = np.random.default_rng(0)
    mask = rng.random((13, 17)) < 0.4
    ii = _integral(mask)
    fine = np.repeat(np.repeat(mask, 8, axis=0), 8, axis=1)  # 1/8 pixel resolution
    x0 = rng.integers(-16, 17 * 8, 200) / 8
    y0 = rng.integers(-16, 13 * 8, 200) / 8
    side = 3.375
    got = _box_share(ii, x0, y0, side)
    for x, y, g in zip(x0, y0, got, strict=True):
        c0, r0 = int(x * 8), int(y * 8)
        c1, r1 = c0 + int(side * 8), r0 + int(side * 8)
        want = fine[max(r0, 0) : max(r1, 0), max(c0, 0) : max(c1, 0)].sum() / (side * 8) ** 2
        assert g == pytest.approx(want, abs=1e-9)


def test_build_grid_keeps_tissue_tiles_with_fractions_and_regions():
    slide = _disc_slide()
    tissue = detect_tissue(slide)
    grid = build_grid(slide, tissue)
    full = full_grid(slide, grid.choice)
    assert grid.grid_shape == full.grid_shape == (12, 16) and grid.tile_size == grid.stride == 128
    assert 0 < len(grid) < len(full)
    assert (grid.tissue_fraction >= MIN_TISSUE).all() and (grid.region == 1).all()
    assert grid.tissue_fraction.dtype == np.float32 and grid.region.dtype == np.int32
    centre = np.flatnonzero((grid.tile_rc == (6, 8)).all(axis=1))
    assert len(centre) == 1 and grid.tissue_fraction[centre[0]] == 1.0
    rc = grid.tile_rc
    assert (np.diff(rc[:, 0] * 1000 + rc[:, 1]) > 0).all()  # row-major
    np.testing.assert_array_equal(grid.l0_xy, rc[:, ::-1] * 128)
    every = build_grid(slide, tissue, min_tissue=1e-6)
    assert len(every) > len(grid)
    strict = build_grid(slide, tissue, min_tissue=1.0)
    assert 0 < len(strict) < len(grid) and (strict.tissue_fraction == 1).all()


def test_build_grid_scale_stride_and_regions():
    slide = _disc_slide()
    tissue = detect_tissue(slide)
    ten = build_grid(slide, tissue, magnification=10)
    assert ten.choice.level == 0 and ten.choice.scale == 2.0 and ten.l0_tile_size == 256
    overlap = build_grid(slide, tissue, stride=64)
    assert overlap.grid_shape == (23, 31) and overlap.stride == 64
    by_mpp = build_grid(slide, tissue, mpp=1.0)
    assert by_mpp.downsample == 2.0
    by_level = build_grid(slide, tissue, level=1, tile_size=64)
    assert by_level.choice.level == 1 and by_level.l0_tile_size == 256
    assert len(build_grid(slide, tissue, regions=[1])) == len(build_grid(slide, tissue))
    assert len(build_grid(slide)) == len(build_grid(slide, tissue))  # detects by itself


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"min_tissue": 0}, "min_tissue"),
        ({"min_tissue": 1.5}, "min_tissue"),
        ({"regions": [2]}, "regions"),
        ({"tile_size": 0}, "tile_size"),
        ({"stride": -1}, "stride"),
        ({"mpp": 0.1}, "finer"),
    ],
)
def test_build_grid_rejects_bad_arguments(kwargs, match):
    slide = _disc_slide()
    with pytest.raises(ValueError, match=match):
        build_grid(slide, detect_tissue(slide), **kwargs)


def test_build_grid_rejects_a_mask_of_another_slide():
    slide = _disc_slide()
    other = detect_tissue(_disc_slide(1024, 1024))
    with pytest.raises(ValueError, match="does not cover"):
        build_grid(slide, other)


def test_regions_of_tiles_follow_the_cores():
    img = np.full((1024, 4096, 3), (236, 235, 238), np.uint8)
    img[100:400, 200:3800] = (214, 140, 190)
    img[650:950, 300:3900] = (214, 140, 190)
    slide = ArraySlide(img, mpp=0.5, objective_power=20)
    tissue = detect_tissue(slide)
    assert tissue.region_ids == (1, 2)
    grid = build_grid(slide, tissue)
    assert set(np.unique(grid.region)) == {1, 2}
    assert (grid.l0_xy[grid.region == 1, 1] < 512).all()
    assert (grid.l0_xy[grid.region == 2, 1] >= 512).all()
    two = build_grid(slide, tissue, regions=[2])
    assert len(two) == (grid.region == 2).sum() and (two.region == 2).all()


# -- the issue's check: coverage of ground-truth tissue tiles --------------------------------------
def _coverage(syn) -> tuple[float, float, int]:
    with open_slide(syn.slide) as slide:
        tissue = detect_tissue(slide)
        grid = build_grid(slide, tissue)
        full = full_grid(slide, grid.choice)
    d = syn.mask_downsample
    ii = _integral(syn.truth_mask() > 0)
    truth = _box_share(ii, full.l0_xy[:, 0] / d, full.l0_xy[:, 1] / d, full.l0_tile_size / d)
    kept = np.zeros(len(full), bool)
    kept[grid.tile_rc[:, 0] * full.grid_shape[1] + grid.tile_rc[:, 1]] = True
    tissue_tiles = truth >= 0.5
    coverage = (kept & tissue_tiles).sum() / tissue_tiles.sum()
    glass = (kept & (truth == 0)).sum() / kept.sum()
    return coverage, glass, int(tissue_tiles.sum())


def test_grid_covers_synthetic_tissue(synthetic_small):
    coverage, glass, n = _coverage(synthetic_small)
    assert n > 100
    assert coverage >= 0.99, coverage
    assert glass <= 0.02, glass


@pytest.mark.parametrize("seed", [11, 12])
def test_grid_covers_other_synthetic_slides(tmp_path: Path, seed: int):
    from prostate_fast.synthetic import make_synthetic

    syn = make_synthetic(tmp_path, width=5120, height=2560, seed=seed, pen_marks=seed % 2 == 0)
    coverage, glass, _ = _coverage(syn)
    assert coverage >= 0.99 and glass <= 0.02, (coverage, glass)


# -- reading tiles ----------------------------------------------------------------------------------
def test_read_tiles_equals_one_read_per_tile(synthetic_small):
    with open_slide(synthetic_small.slide) as slide:
        for stride in (128, 96):
            grid = build_grid(slide, stride=stride)
            rng = np.random.default_rng(stride)
            some = rng.choice(len(grid), 40, replace=False)
            for idx in (some, np.sort(some), np.arange(60, 120), np.array([3])):
                want = [slide.read_region(tuple(grid.l0_xy[i]), 0, (128, 128)) for i in idx]
                for threads in (1, 3):
                    got = read_tiles(slide, grid, idx, n_threads=threads)
                    np.testing.assert_array_equal(got, np.stack(want))
        for bad in (0, -1, 1.5, True):
            with pytest.raises(ValueError, match="n_threads"):
                read_tiles(slide, grid, np.arange(4), n_threads=bad)


def test_read_tiles_scaled_grid_and_white_fraction():
    slide = _disc_slide()
    grid = build_grid(slide, magnification=10)
    tiles = read_tiles(slide, grid)
    want = [slide.read_scaled(tuple(xy), (128, 128), grid.choice) for xy in grid.l0_xy]
    np.testing.assert_array_equal(tiles, np.stack(want))
    np.testing.assert_array_equal(read_tiles(slide, grid, n_threads=2), tiles)
    white = tile_white_fraction(slide, grid, batch=7, n_threads=1)
    np.testing.assert_array_equal(white, white_fraction(tiles))
    strict = tile_white_fraction(slide, grid, min_brightness=255)
    assert (strict == 0).all()
    with pytest.raises(ValueError, match="batch"):
        tile_white_fraction(slide, grid, batch=0)


# -- tile tables --------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".csv", ".npz"])
def test_tile_table_round_trip(tmp_path: Path, suffix: str):
    slide = _disc_slide()
    grid = build_grid(slide, stride=100)
    white = np.random.default_rng(1).random(len(grid)).astype(np.float32)
    path = save_tile_table(grid, white, tmp_path / f"t{suffix}")
    back, white_back = load_tile_table(path)
    assert isinstance(back, TileGrid) and back.choice == grid.choice
    for name in ("slide_name", "tile_size", "stride", "grid_shape"):
        assert getattr(back, name) == getattr(grid, name), name
    for name in ("tile_rc", "l0_xy", "tissue_fraction", "region"):
        a, b = getattr(back, name), getattr(grid, name)
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(white_back, white)
    with pytest.raises(FileExistsError):
        save_tile_table(grid, white, path)
    save_tile_table(grid.subset(np.zeros(len(grid), bool)), None, path, overwrite=True)
    empty, w = load_tile_table(path)
    assert len(empty) == 0 and w.shape == (0,) and empty.grid_shape == grid.grid_shape
    assert not list(tmp_path.glob(".*part"))


def test_tile_table_csv_is_readable_text(tmp_path: Path):
    grid = build_grid(_disc_slide())
    save_tile_table(grid, None, tmp_path / "t.csv")
    lines = (tmp_path / "t.csv").read_text().splitlines()
    assert lines[0].startswith("# prostate-fast tile table")
    assert lines[2] == (
        "l0_x,l0_y,level,downsample,tile_size,row,col,tissue_fraction,white_fraction,region"
    )
    assert len(lines) == 3 + len(grid) and lines[3].endswith(",nan,1")


def test_tile_table_errors(tmp_path: Path):
    grid = build_grid(_disc_slide())
    with pytest.raises(ValueError, match=r"\.csv or \.npz"):
        save_tile_table(grid, None, tmp_path / "t.txt")
    with pytest.raises(ValueError, match="white_fraction"):
        save_tile_table(grid, np.zeros(3), tmp_path / "t.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("x,y\n1,2\n")
    with pytest.raises(DatasetError, match="bad.csv"):
        load_tile_table(bad)
    with pytest.raises(DatasetError, match="missing.npz"):
        load_tile_table(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DatasetError, match="junk.npz"):
        load_tile_table(tmp_path / "junk.npz")


def test_thumbnail_has_the_slide_aspect():
    slide = _disc_slide()
    tissue = detect_tissue(slide)
    img = render_grid_thumbnail(slide, build_grid(slide, tissue), tissue, max_size=400)
    assert img.shape == (300, 400, 3) and img.dtype == np.uint8
    dense = build_grid(slide, tissue, tile_size=32)  # tiles too small to outline one by one
    assert render_grid_thumbnail(slide, dense, max_size=400).shape == (300, 400, 3)
    tm = tissue_mask_from_rgb(np.full((8, 8, 3), 240, np.uint8))
    assert tm.regions == ()


# -- the command ----------------------------------------------------------------------------------
def test_tile_slide_is_tissue_grid_white_fraction_and_thumbnail():
    slide = _disc_slide()
    tiled = tile_slide(slide, tile_size=64, min_tissue=0.5, thumbnail_size=400, n_threads=1)
    grid = build_grid(slide, detect_tissue(slide), tile_size=64, min_tissue=0.5)
    assert tiled.slide_name == "disc.png" and tiled.dimensions == (2048, 1536)
    assert np.array_equal(tiled.grid.l0_xy, grid.l0_xy) and tiled.min_tissue == 0.5
    assert tiled.n_full == len(full_grid(slide, grid.choice, 64)) > len(grid) > 0
    assert np.array_equal(tiled.white_fraction, tile_white_fraction(slide, grid))
    assert tiled.thumbnail.dtype == np.uint8 and max(tiled.thumbnail.shape[:2]) == 400
    assert set(tiled.seconds) == {"mask", "grid", "white_fraction"}


def test_tile_slide_on_blank_glass_gives_an_empty_grid():
    blank = ArraySlide(np.full((1024, 1024, 3), 245, np.uint8), mpp=0.5, name="glass.png")
    tiled = tile_slide(blank, level=0)
    assert len(tiled.grid) == 0 and tiled.n_full == 64 and tiled.white_fraction.shape == (0,)


def test_tiles_command_writes_table_and_thumbnail(synthetic_small, tmp_path: Path, capsys):
    out = tmp_path / "run" / "tiles.csv"
    assert main(["tiles", str(synthetic_small.slide), "-o", str(out), "--threads", "2"]) == 0
    text = capsys.readouterr().out
    assert "region 3" in text and "kept of" in text
    grid, white = load_tile_table(out)
    assert len(grid) > 100 and (grid.region > 0).all() and (white < 0.9).mean() > 0.9
    thumb = tmp_path / "run" / "tiles-thumb.png"
    assert thumb.stat().st_size > 1000
    assert main(["tiles", str(synthetic_small.slide), "-o", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    npz = tmp_path / "run" / "one.npz"
    args = ["tiles", str(synthetic_small.slide), "-o", str(npz), "--regions", "2"]
    assert main([*args, "--stride", "64", "--min-tissue", "0.9"]) == 0
    sub, _ = load_tile_table(npz)
    assert (sub.region == 2).all() and sub.stride == 64 and (sub.tissue_fraction >= 0.9).all()
    assert main(["tiles", str(synthetic_small.slide), "-o", str(tmp_path / "t.txt")]) == 2
    assert main([*args[:3], str(tmp_path / "r.csv"), "--regions", "9"]) == 2
    assert "regions [9]" in capsys.readouterr().err
    assert not (tmp_path / "r.csv").exists() and not (tmp_path / "r-thumb.png").exists()


def test_tiles_command_bad_arguments(synthetic_small, tmp_path: Path):
    base = ["tiles", str(synthetic_small.slide), "-o", str(tmp_path / "t.csv")]
    for extra in (["--regions", "a"], ["--min-tissue", "0"], ["--mpp", "1", "--level", "0"]):
        with pytest.raises(SystemExit) as exc:
            main(base + extra)
        assert exc.value.code == 2


def test_tiles_command_on_real_slides(data_dir: Path, tmp_path: Path, capsys):
    svs = data_dir / "wsi" / "CMU-1-Small-Region.svs"
    assert main(["tiles", str(svs), "-o", str(tmp_path / "cmu.npz")]) == 0
    grid, white = load_tile_table(tmp_path / "cmu.npz")
    assert 100 < len(grid) < 300 and grid.choice.magnification == 20
    tcga = data_dir / "wsi" / "tcga-cr-7395-01a-01-ts1.svs"
    assert main(["tiles", str(tcga), "-o", str(tmp_path / "tcga.csv")]) == 2
    assert "neither objective power nor mpp" in capsys.readouterr().err
    ndpi = data_dir / "wsi" / "test3-DAPI-2-387.ndpi"
    assert main(["tiles", str(ndpi), "-o", str(tmp_path / "dapi.csv")]) == 0
    assert "dark field" in capsys.readouterr().err
