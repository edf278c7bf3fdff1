"""Slide reader: real files from PROSTATE_FAST_DATA, error paths, magnification choice."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from prostate_fast.errors import SlideError
from prostate_fast.slide import ArraySlide, ImageSlide, TiffSlide, open_slide

# Values from shared/data/MANIFEST.md.
REAL = {
    "CMU-1-Small-Region.svs": dict(
        fmt="aperio", dims=(2220, 2967), levels=1, mpp=0.499, objective=20.0
    ),
    "tcga-cr-7395-01a-01-ts1.svs": dict(
        fmt="aperio", dims=(4443, 3567), levels=2, mpp=None, objective=None
    ),
    "test3-DAPI-2-387.ndpi": dict(
        fmt="hamamatsu", dims=(3968, 4864), levels=7, mpp=0.228, objective=40.0
    ),
}


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_slides_open_with_manifest_values(data_dir: Path, name: str) -> None:
    want = REAL[name]
    with open_slide(data_dir / "wsi" / name) as slide:
        assert slide.format == want["fmt"]
        assert slide.dimensions == want["dims"]
        assert slide.level_count == want["levels"]
        if want["mpp"] is None:
            assert slide.mpp is None
        else:
            assert slide.mpp is not None
            assert slide.mpp[0] == pytest.approx(want["mpp"], abs=1e-3)
        assert slide.objective_power == want["objective"]
        for level in range(slide.level_count):
            region = slide.read_region((100, 50), level, (37, 23))
            assert region.shape == (23, 37, 3)
            assert region.dtype == np.uint8
            assert region.flags.c_contiguous


def test_read_region_matches_openslide_and_composites_outside_on_white(data_dir: Path) -> None:
    import openslide

    path = data_dir / "wsi" / "CMU-1-Small-Region.svs"
    with open_slide(path) as slide:
        ours = slide.read_region((1000, 1200), 0, (64, 48))
        ref = np.asarray(openslide.OpenSlide(str(path)).read_region((1000, 1200), 0, (64, 48)))
        np.testing.assert_array_equal(ours, ref[:, :, :3])  # opaque inside the slide
        w, h = slide.dimensions
        edge = slide.read_region((w - 10, h - 10), 0, (20, 20))
        assert (edge[10:, :] == 255).all() and (edge[:, 10:] == 255).all()


def test_tifffile_reader_matches_openslide(data_dir: Path) -> None:
    path = data_dir / "wsi" / "test3-DAPI-2-387.ndpi"
    with open_slide(path) as ref:
        tiff = TiffSlide(path)
        assert tiff.dimensions == ref.dimensions
        # Level-aligned corners: OpenSlide resamples at sub-pixel offsets, tifffile does not.
        for level in (0, 2):
            a = tiff.read_region((512, 1024), level, (300, 200))
            b = ref.read_region((512, 1024), level, (300, 200))
            np.testing.assert_array_equal(a, b)
        tiff.close()


def test_associated_images_and_thumbnail(data_dir: Path) -> None:
    with open_slide(data_dir / "wsi" / "CMU-1-Small-Region.svs") as slide:
        assert set(slide.associated_images) == {"label", "macro", "thumbnail"}
        label = slide.read_associated("label")
        assert label.ndim == 3 and label.shape[2] == 3
        with pytest.raises(KeyError):
            slide.read_associated("nope")
        thumb = slide.get_thumbnail((256, 256))
        assert max(thumb.shape[:2]) == 256 and thumb.dtype == np.uint8


def test_choose_level_by_objective_and_mpp(data_dir: Path) -> None:
    with open_slide(data_dir / "wsi" / "test3-DAPI-2-387.ndpi") as slide:  # 40x, 2x pyramid
        c20 = slide.choose_level(magnification=20)
        assert (c20.level, c20.scale, c20.downsample) == (1, 1.0, 2.0)
        assert c20.magnification == pytest.approx(20)
        c15 = slide.choose_level(magnification=15)  # no level matches: read 20x, shrink
        assert c15.level == 1 and c15.scale == pytest.approx(20 / 15)
        assert slide.read_scaled((0, 0), (64, 64), c15).shape == (64, 64, 3)
        cm = slide.choose_level(mpp=0.9127)
        assert cm.level == 2 and cm.scale == 1.0
        with pytest.raises(ValueError, match="finer than level 0"):
            slide.choose_level(magnification=80)
        with pytest.raises(ValueError, match="exactly one"):
            slide.choose_level(magnification=20, mpp=0.5)


def test_slide_without_mpp_asks_for_mpp_or_level(data_dir: Path) -> None:
    with open_slide(data_dir / "wsi" / "tcga-cr-7395-01a-01-ts1.svs") as slide:
        with pytest.raises(SlideError, match="--slide-mpp or --level") as err:
            slide.choose_level(magnification=20)
        assert "tcga-cr-7395" in str(err.value)
        assert slide.choose_level(level=1).level == 1


# -- bad input --------------------------------------------------------------------------------
def test_truncated_svs(data_dir: Path, tmp_path: Path) -> None:
    src = (data_dir / "wsi" / "tcga-cr-7395-01a-01-ts1.svs").read_bytes()
    bad = tmp_path / "truncated.svs"
    bad.write_bytes(src[: len(src) * 3 // 4])
    with pytest.raises(SlideError, match="truncated.svs"):
        open_slide(bad)


def test_zero_byte_file(tmp_path: Path) -> None:
    bad = tmp_path / "empty.svs"
    bad.touch()
    with pytest.raises(SlideError, match=r"empty\.svs: empty file"):
        open_slide(bad)


def test_text_file_renamed_svs(tmp_path: Path) -> None:
    bad = tmp_path / "notes.svs"
    bad.write_text("these are my notes, not a slide\n")
    with pytest.raises(SlideError, match=r"notes\.svs: not a valid SVS slide"):
        open_slide(bad)


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(SlideError, match=r"missing\.svs: no such file"):
        open_slide(tmp_path / "missing.svs")


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(SlideError, match="is a directory"):
        open_slide(tmp_path)


def test_corrupt_jpeg(tmp_path: Path) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 20)
    with pytest.raises(SlideError, match=r"broken\.jpg"):
        open_slide(bad)


# -- plain images and arrays ------------------------------------------------------------------
def test_png_with_alpha_is_composited_on_white(tmp_path: Path) -> None:
    import cv2

    rgba = np.zeros((40, 50, 4), np.uint8)
    rgba[..., 0] = 200  # red, in RGB order
    rgba[:20, :, 3] = 255
    rgba[20:, :, 3] = 0
    rgba[20:30, :10, 3] = 128
    cv2.imwrite(str(tmp_path / "a.png"), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    slide = open_slide(tmp_path / "a.png")
    assert isinstance(slide, ImageSlide) and slide.mpp is None and slide.level_count == 1
    img = slide.read_region((0, 0), 0, (50, 40))
    assert (img[:20] == [200, 0, 0]).all()
    assert (img[30:] == 255).all()
    # 128/255 of red over white, rounded: (200*128 + 255*127 + 127)//255 = 227; 0 → 127
    assert (img[20:30, :10] == [227, 127, 127]).all()


def test_composite_is_thread_count_independent() -> None:
    from prostate_fast.slide import _slide_cy

    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, size=(300, 257, 4), dtype=np.uint8)
    outs = []
    for threads in (1, 2, 3):
        out = np.empty((300, 257, 3), np.uint8)
        _slide_cy.composite_on_white(rgba, out, threads)
        outs.append(out)
    a = rgba[..., 3:].astype(np.int64)
    ref = rgba[..., :3].astype(np.int64) * a + 255 * (255 - a) + 127
    np.testing.assert_array_equal(outs[0], (ref // 255).astype(np.uint8))
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])


def test_array_slide_pyramid_and_region() -> None:
    img = np.arange(64 * 96 * 3, dtype=np.uint32).reshape(64, 96, 3).astype(np.uint8)
    slide = ArraySlide(img, mpp=0.25, objective_power=40, downsamples=(1, 2, 4))
    assert slide.level_dimensions == ((96, 64), (48, 32), (24, 16))
    np.testing.assert_array_equal(slide.read_region((10, 5), 0, (7, 3)), img[5:8, 10:17])
    c = slide.choose_level(magnification=20)
    assert (c.level, c.scale) == (1, 1.0)
    out = slide.read_region((-4, -4), 0, (8, 8))
    assert (out[:4] == 255).all() and (out[4:, 4:] == img[:4, :4]).all()
    with pytest.raises(ValueError, match="level"):
        slide.read_region((0, 0), 3, (4, 4))
    with pytest.raises(ValueError, match="size"):
        slide.read_region((0, 0), 0, (0, 4))


def test_copy_of_real_slide_opens_under_other_name(data_dir: Path, tmp_path: Path) -> None:
    dst = tmp_path / "copy with spaces.svs"
    shutil.copy(data_dir / "wsi" / "CMU-1-Small-Region.svs", dst)
    with open_slide(dst) as slide:
        assert slide.dimensions == (2220, 2967)


@pytest.mark.parametrize("name", ["CMU-1-Small-Region.svs", "tcga-cr-7395-01a-01-ts1.svs"])
def test_direct_tiff_reads_equal_openslide_everywhere(data_dir: Path, name: str) -> None:
    import openslide

    path = data_dir / "wsi" / name
    with open_slide(path) as slide:
        assert 0 in slide._direct_levels  # level 0 is decoded with tifffile, not OpenSlide
        ref = openslide.OpenSlide(str(path))
        rng = np.random.default_rng(7)
        for _ in range(30):
            level = int(rng.integers(0, slide.level_count))
            x, y = (int(rng.integers(-40, d)) for d in slide.dimensions)
            got = slide.read_region((x, y), level, (71, 53))
            rgba = np.asarray(ref.read_region((x, y), level, (71, 53))).astype(np.int64)
            a = rgba[..., 3:]
            want = ((rgba[..., :3] * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)
            np.testing.assert_array_equal(got, want, err_msg=f"level {level} at {(x, y)}")


def test_choice_for_downsample_rebuilds_choose_level() -> None:
    img = np.zeros((256, 512, 3), np.uint8)
    slide = ArraySlide(img, mpp=0.25, objective_power=40, downsamples=(1, 2, 4))
    for kwargs in ({"magnification": 20}, {"magnification": 15}, {"mpp": 1.0}, {"level": 2}):
        c = slide.choose_level(**kwargs)
        assert slide.choice_for_downsample(c.downsample, c.level) == c
    c = slide.choice_for_downsample(3.0)  # no level matches: level 1 (2x) shrunk by 1.5
    assert (c.level, c.scale, c.mpp, c.magnification) == (1, 1.5, 0.75, pytest.approx(40 / 3))
    assert slide.choice_for_downsample(2.02, 1).scale == 1.0  # within 2 %: read as it is
    assert slide.choice_for_downsample(1.0, 2).scale == 0.25  # finer than the level: callers refuse
    with pytest.raises(ValueError, match="downsample"):
        slide.choice_for_downsample(0)
    with pytest.raises(ValueError, match="level"):
        slide.choice_for_downsample(2.0, 5)


# -- one open slide: strips, views, threads ---------------------------------------------------
def _openslide_rgb(path: Path, l0_xy: tuple[int, int], level: int, size: tuple[int, int]):
    import openslide

    with openslide.OpenSlide(str(path)) as ref:
        rgba = np.asarray(ref.read_region(l0_xy, level, size)).astype(np.int64)
    a = rgba[..., 3:]
    return ((rgba[..., :3] * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)


@pytest.mark.parametrize(
    ("name", "level"), [("CMU-1-Small-Region.svs", 0), ("tcga-cr-7395-01a-01-ts1.svs", 1)]
)
def test_direct_strips_equal_openslide_level_pixels(data_dir: Path, name: str, level: int) -> None:
    path = data_dir / "wsi" / name
    with open_slide(path) as slide:
        assert level in slide._exact_levels  # proven at open (level 1 of tcga: downsample 2.0005)
        lw, lh = slide.level_dimensions[level]
        choice = slide.choice_for_downsample(slide.level_downsamples[level], level)
        with slide.strip_reader(choice, lw + 5, n_threads=2) as reader:
            assert reader.direct
            got = np.concatenate(list(reader.strips(lh + 3, 500)))
        assert got.shape == (lh + 3, lw + 5, 3)
        assert (got[lh:] == 255).all() and (got[:, lw:] == 255).all()
        np.testing.assert_array_equal(got[:lh, :lw], _openslide_rgb(path, (0, 0), level, (lw, lh)))


def test_strips_without_decoder_are_read_scaled(data_dir: Path) -> None:
    with open_slide(data_dir / "wsi" / "test3-DAPI-2-387.ndpi") as slide:  # not a TIFF vendor
        choice = slide.choose_level(magnification=15)  # level 1 shrunk by 4/3
        with slide.strip_reader(choice, 700) as reader:
            assert not reader.direct
            got = reader.read(96, 64)
        want = slide.read_scaled((0, round(96 * choice.downsample)), (700, 64), choice)
        np.testing.assert_array_equal(got, want)
    img = np.arange(40 * 60 * 3, dtype=np.uint32).reshape(40, 60, 3).astype(np.uint8)
    arr = ArraySlide(img, downsamples=(1, 2))
    with arr.strip_reader(arr.choose_level(level=0), 60, n_threads=1) as reader:
        np.testing.assert_array_equal(np.concatenate(list(reader.strips(40, 16))), img)
    with pytest.raises(ValueError, match="width"):
        arr.strip_reader(arr.choose_level(level=0), 0)


def test_with_mpp_is_a_view_of_the_same_open_slide(data_dir: Path) -> None:
    with open_slide(data_dir / "wsi" / "tcga-cr-7395-01a-01-ts1.svs") as slide:
        assert slide.mpp is None
        view = slide.with_mpp(0.25)
        assert view.mpp == (0.25, 0.25) and view.objective_power is None
        assert view.base_magnification == pytest.approx(40.0)
        assert (view.path, view.format, view.level_dimensions) == (
            slide.path,
            slide.format,
            slide.level_dimensions,
        )
        assert view.level_downsamples == slide.level_downsamples
        assert view.associated_images == slide.associated_images
        c = view.choose_level(magnification=20)
        assert (c.level, c.scale, c.mpp) == (1, 1.0, pytest.approx(0.5, rel=1e-3))
        np.testing.assert_array_equal(
            view.read_region((64, 128), 0, (50, 40)), slide.read_region((64, 128), 0, (50, 40))
        )
        with view.strip_reader(c, 300) as reader:
            assert reader.direct  # the view reads through the slide's TIFF decoder
            np.testing.assert_array_equal(
                reader.read(0, 20), slide.read_region((0, 0), 1, (300, 20))
            )
        view.close()  # a view owns nothing: the slide stays open
        assert slide.read_region((0, 0), 0, (8, 8)).shape == (8, 8, 3)
        for bad in (0, -1.0, True, "0.5", None):
            with pytest.raises(ValueError, match="mpp"):
                slide.with_mpp(bad)  # type: ignore[arg-type]


def test_one_slide_serves_tiles_and_strips_from_threads(data_dir: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with open_slide(data_dir / "wsi" / "CMU-1-Small-Region.svs") as slide:
        choice = slide.choose_level(level=0)
        width, height = slide.dimensions
        xy = [(x, y) for y in range(0, 2900, 700) for x in range(0, 2200, 500)]
        serial = [slide.read_region(p, 0, (256, 256)) for p in xy]
        with slide.strip_reader(choice, width, n_threads=2) as reader:
            whole = np.concatenate(list(reader.strips(height, 512)))
        with ThreadPoolExecutor(4) as pool:
            tiles = pool.map(lambda p: slide.read_region(p, 0, (256, 256)), xy)
            with slide.strip_reader(choice, width, n_threads=2) as reader:
                again = np.concatenate(list(reader.strips(height, 512)))
            for a, b in zip(tiles, serial, strict=True):
                np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(again, whole)


# -- striped TIFFs: read by strips, mpp from the resolution tags ----------------------------------
@pytest.mark.parametrize(
    ("resolution", "unit", "mpp"),
    [
        ((20000, 20000), "CENTIMETER", 0.5),
        ((101600, 101600), "INCH", 0.25),
        ((72, 72), "INCH", None),
    ],
)
def test_striped_tiff_mpp_from_resolution_tags(
    tmp_path: Path, capsys: pytest.CaptureFixture, resolution: tuple, unit: str, mpp: float | None
) -> None:
    import tifffile

    from prostate_fast.cli.main import main

    rgb = np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)
    path = tmp_path / "striped.tif"
    tifffile.imwrite(path, rgb, resolution=resolution, resolutionunit=unit, rowsperstrip=16)
    with open_slide(path) as sl:
        assert isinstance(sl, TiffSlide) and not sl.is_tiled
        np.testing.assert_array_equal(sl.read_region((0, 0), 0, (400, 300)), rgb)
        if mpp is None:  # 72 dpi is office software, no microscope scale
            assert sl.mpp is None and sl.mpp_source is None
            return
        assert sl.mpp == pytest.approx((mpp, mpp))
        assert sl.mpp_source == "TIFF resolution tags"
        assert sl.with_mpp(1.0).mpp_source == "given"
    assert main(["info", str(path)]) == 0
    assert f"{mpp:.4f} x {mpp:.4f} um/px (TIFF resolution tags)" in capsys.readouterr().out


@pytest.mark.parametrize("downsample", [1.0, 3.0, 8.0])
def test_low_res_bands_read_on_threads_give_the_same_pixels(
    data_dir: Path, downsample: float
) -> None:
    """read_low_res reads its bands side by side with several threads: the same image (each
    pixel is the mean of its own block), on a real SVS and on an in-memory slide."""
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (1037, 1543, 3), np.uint8)

    def array_slide(n: int) -> ArraySlide:
        slide = ArraySlide(image, mpp=0.5)
        slide.n_threads = n
        return slide

    for make in (
        lambda n: open_slide(data_dir / "wsi" / "CMU-1-Small-Region.svs", n_threads=n),
        array_slide,
    ):
        one, ds1 = make(1).read_low_res(downsample)
        three, ds3 = make(3).read_low_res(downsample)
        assert ds1 == ds3 and one.shape[0] > 3
        np.testing.assert_array_equal(one, three)


@pytest.mark.parametrize("name", ["CMU-1-Small-Region.svs", "synthetic"])
def test_whole_tiles_decoded_in_place_equal_the_cached_path(
    data_dir: Path, synthetic_small, name: str, monkeypatch
) -> None:
    """Regions holding whole JPEG tiles decode them straight into the region (RGB-coded Aperio
    tiles with shared tables, YCbCr tiles of our pyramids): the pixels of the tile-by-tile
    cached path, and OpenSlide's (damaged tiles: test_hardening)."""
    import openslide

    from prostate_fast.slide.tiff import TiffLevels

    path = synthetic_small.slide if name == "synthetic" else data_dir / "wsi" / name
    levels = TiffLevels(path)
    ref = openslide.OpenSlide(str(path))
    rng = np.random.default_rng(11)
    decoded = []
    into = levels._decode_into
    monkeypatch.setattr(levels, "_decode_into", lambda *a: decoded.append(into(*a)) or decoded[-1])
    try:
        assert levels._jpeg_args(0) is not None
        for _ in range(12):
            level = int(rng.integers(0, levels.level_count))
            lw, lh = levels.level_dimensions[level]
            x, y = int(rng.integers(-50, lw // 2)), int(rng.integers(-50, lh // 2))
            size = (int(rng.integers(300, 900)), int(rng.integers(300, 900)))
            direct = levels.read(level, x, y, size)
            with monkeypatch.context() as m:  # every tile through segment() and its cache
                m.setattr(levels, "_jpeg_args", lambda level: None)
                cached = levels.read(level, x, y, size)
            np.testing.assert_array_equal(direct, cached, err_msg=f"{level} {(x, y)} {size}")
            if level == 0:
                rgba = np.asarray(ref.read_region((x, y), 0, size)).astype(np.int64)
                a = rgba[..., 3:]
                want = ((rgba[..., :3] * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)
                np.testing.assert_array_equal(direct, want)
        assert sum(decoded) >= 5  # whole tiles went the direct way (others: cached already)
    finally:
        levels.close()
        ref.close()
