"""Tiles partly off tissue: their glass is filled with the slide's glass colour before the model
sees them (the native fill follows ``tissue_pixels``; the colour is the light through the glass,
not a scanner's white fill), so ink and dust beside a biopsy do not drive its score."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mxnet")

TILE = 64


# model_dir (64 px tiles) and synthetic_slide: tests/conftest.py


def test_tiles_partly_off_tissue_are_scored_on_their_tissue(
    model_dir: Path, synthetic_slide: Path
) -> None:
    """Ink painted on the glass of edge tiles does not change their score (it did before)."""
    from prostate_fast.predict import load_model, predict_slide
    from prostate_fast.predict.core import glass_colour
    from prostate_fast.predict.scoregrid import tissue_pixels
    from prostate_fast.slide import ArraySlide, open_slide
    from prostate_fast.tile import build_grid, read_tiles
    from prostate_fast.tissue import detect_tissue

    with open_slide(synthetic_slide) as sl:
        image = sl.read_region((0, 0), 0, sl.dimensions)
    kw = {"mpp": 0.5, "objective_power": 20.0, "name": synthetic_slide.name}
    clean = ArraySlide(image, **kw)
    tissue = detect_tissue(clean)
    grid = build_grid(clean, tissue, tile_size=TILE)
    partial = np.flatnonzero(grid.tissue_fraction < 1.0)
    assert len(partial) >= 5
    inked = image.copy()
    for k in partial[::2]:  # ink on the glass of every other edge tile
        (x, y), (r, c) = grid.l0_xy[k], grid.tile_rc[k]
        on = tissue_pixels(tissue.mask, tissue.downsample, 1.0, (c * TILE, r * TILE, TILE, TILE))
        inked[y : y + TILE, x : x + TILE][~on] = (20, 30, 140)
    inked_slide = ArraySlide(inked, **kw)

    pred = load_model(model_dir, engine="native", batch_size=32)

    def darkness(x: np.ndarray) -> np.ndarray:  # a model that looks at every pixel
        p = np.clip(1.0 - x.mean(axis=(1, 2, 3)), 0.0, 1.0)
        return np.stack([1.0 - p, p], 1).astype(np.float32)

    pred._run = darkness  # type: ignore[method-assign]
    a = predict_slide(pred, clean, tissue=tissue)
    b = predict_slide(pred, inked_slide, tissue=tissue)
    full = grid.tissue_fraction == 1.0
    np.testing.assert_array_equal(a.prob[full], b.prob[full])
    raw = pred.predict_batch(read_tiles(inked_slide, grid, partial[::2]))[:, 1]
    clean_raw = pred.predict_batch(read_tiles(clean, grid, partial[::2]))[:, 1]
    assert np.abs(raw - clean_raw).min() > 0.02  # the ink matters to this model ...
    assert np.abs(a.prob[partial, 1] - b.prob[partial, 1]).max() < 0.005  # ... not to the score
    # the score of an edge tile is the score of its tissue on the slide's glass colour
    fill = glass_colour(clean, tissue)
    assert (fill > 200).all()
    tiles = read_tiles(clean, grid, partial)
    for i, k in enumerate(partial):
        r, c = grid.tile_rc[k]
        on = tissue_pixels(tissue.mask, tissue.downsample, 1.0, (c * TILE, r * TILE, TILE, TILE))
        tiles[i][~on] = fill
    np.testing.assert_allclose(a.prob[partial], pred.predict_batch(tiles), atol=1e-6)
    assert a.tissue_mask is not None and a.tissue_downsample == tissue.downsample


def test_glass_colour_is_the_glass_not_the_scanners_white_fill() -> None:
    """The fill of tiles partly off tissue is the light through the slide's glass, read as the
    stain normalisation reads it: a scanner's pure white fill of unscanned area (here most of
    the background), ink and dust do not count; a dark background keeps the background median."""
    from types import SimpleNamespace

    from prostate_fast.predict.core import glass_colour
    from prostate_fast.slide import ArraySlide
    from prostate_fast.stain import IO

    img = np.full((512, 1024, 3), 255, np.uint8)  # unscanned area: pure white fill
    img[:, 600:] = (236, 231, 241)  # the scanned strip's glass ...
    img[100:400, 700:900] = (180, 90, 160)  # ... with tissue on it
    img[20:40, 620:680] = (20, 30, 140)  # and a little ink
    mask = np.zeros((32, 64), bool)
    mask[100 // 16 : 400 // 16, 700 // 16 : 900 // 16] = True
    tissue = SimpleNamespace(mask=mask, downsample=16.0)
    slide = ArraySlide(img, mpp=0.5)
    assert glass_colour(slide, tissue).tolist() == [236, 231, 241]
    white = ArraySlide(np.full((512, 1024, 3), 255, np.uint8), mpp=0.5)
    assert glass_colour(white, tissue).tolist() == [round(IO)] * 3  # no glass seen
    dark = np.zeros((512, 1024, 3), np.uint8)
    dark[100:400, 700:900] = (30, 200, 40)
    tissue_dark = SimpleNamespace(mask=mask, downsample=16.0, background="dark")
    assert glass_colour(ArraySlide(dark, mpp=0.5), tissue_dark).tolist() == [0, 0, 0]


@pytest.mark.parametrize("mds, ds", [(16.0, 1.0), (32.0, 2.0), (24.0, 1.0), (7.3, 1.0), (4.0, 4.0)])
def test_off_tissue_fill_follows_tissue_pixels(mds: float, ds: float) -> None:
    """predict's native fill of partial tiles sets exactly the pixels tissue_pixels calls off the
    tissue (fractional scales, tiles over the mask's edges), and leaves full tiles as read."""
    from types import SimpleNamespace

    from prostate_fast.predict.core import _fill_off_tissue
    from prostate_fast.predict.scoregrid import tissue_pixels

    rng = np.random.default_rng(int(mds * 10 + ds))
    mask = rng.random((23, 31)) > 0.5
    t, stride = 48, 40
    rc = np.array([[0, 0], [1, 2], [3, 5], [int(23 * mds / ds / stride), 1], [2, 2]], np.int32)
    frac = np.array([0.5, 0.2, 0.9, 0.3, 1.0], np.float32)  # the last: a full tile
    grid = SimpleNamespace(
        tile_size=t, stride=stride, downsample=ds, tile_rc=rc, tissue_fraction=frac
    )
    tissue = SimpleNamespace(mask=mask, downsample=mds)
    tiles = rng.integers(0, 256, (len(rc), t, t, 3), np.uint8)
    fill = np.array([241, 237, 250], np.uint8)
    want = tiles.copy()
    for k, (r, c) in enumerate(rc[:-1]):
        want[k][~tissue_pixels(mask, mds, ds, (c * stride, r * stride, t, t))] = fill
    idx = np.arange(len(rc))
    got = _fill_off_tissue(tiles.copy(), grid, idx, tissue, fill)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(  # a batch holding some of them, in another order
        _fill_off_tissue(tiles[[4, 1]].copy(), grid, idx[[4, 1]], tissue, fill), want[[4, 1]]
    )
    empty = SimpleNamespace(mask=np.zeros((0, 0), bool), downsample=mds)
    none = _fill_off_tissue(tiles.copy(), grid, idx, empty, fill)
    assert (none[:-1] == fill).all() and np.array_equal(none[-1], tiles[-1])
