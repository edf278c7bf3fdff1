"""The marker-colour tally of a painted copy: the native kernel against the NumPy reference."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from prostate_fast.label.marker import _HUES, MIN_SATURATION, MarkerTally

INKS = np.array(
    [
        [0, 255, 0],  # green
        [0, 0, 255],  # blue
        [255, 255, 0],  # yellow
        [30, 200, 60],
        [255, 127, 0],  # near the orange / red boundary
        [255, 0, 127],
        [127, 255, 0],
        [0, 128, 255],
        [200, 100, 100],  # saturation exactly 100
        [200, 101, 101],  # saturation 99
    ]
)


def _tallies(o, p, colours=((0, 255, 0),), threshold=60, tol=64, threads=(1, 2, 3)):
    want = MarkerTally(np.array(colours), threshold, tol)
    want._add_numpy(o, p)
    got = []
    for t in threads:
        tally = MarkerTally(np.array(colours), threshold, tol)
        tally.add(o, p, n_threads=t)
        got.append(tally)
    return want, got


def _assert_same(want, got) -> None:
    for g in got:
        np.testing.assert_array_equal(g.count, want.count)
        np.testing.assert_array_equal(g.matched, want.matched)
        np.testing.assert_array_equal(g.sums, want.sums)


def _strokes(shape, seed):
    """Random tiles and a copy painted with strokes of several inks, plus JPEG-like noise."""
    rng = np.random.default_rng(seed)
    o = rng.integers(0, 256, (24, *shape, 3), dtype=np.uint8)
    p = o.copy()
    edit = rng.random((24, *shape)) < 0.4
    p[edit] = INKS[rng.integers(0, len(INKS), edit.sum())]
    noise = rng.integers(-40, 41, p.shape) * (rng.random(p.shape) < 0.3)
    return o, np.clip(p.astype(int) + noise, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("shape", [(128, 128), (7, 5), (1, 17), (33, 1), (64, 63), (1, 1)])
def test_native_tally_equals_numpy_for_any_shape_rule_and_threads(shape) -> None:
    o, p = _strokes(shape, sum(shape))
    for colours, thr, tol in [
        ([(0, 255, 0)], 60, 64),
        ([(0, 255, 0), (0, 0, 255), (255, 255, 0)], 30, 40),
        ([(0, 255, 0)], 0, 0),
        ([(0, 255, 0)], 255, 255),
        ([(0, 128, 255)], 100, 10),
    ]:
        want, got = _tallies(o, p, colours, thr, tol)
        assert shape == (1, 1) or thr == 255 or want.count.sum() > 0
        _assert_same(want, got)


def test_native_hue_bins_equal_numpy_over_the_colour_cube() -> None:
    # every colour on an even grid, and every colour of planes where one channel is the max:
    # the hue bins of NumPy's float32 formula, bit for bit, with the boundaries included
    g = np.arange(0, 256, 2, dtype=np.uint8)
    cube = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    full = np.arange(256, dtype=np.uint8)
    ab = np.stack(np.meshgrid(full, full, indexing="ij"), -1).reshape(-1, 2)
    planes = []
    for top, ch in itertools.product((255, 200, 150, 100), range(3)):
        plane = np.insert(ab, ch, top, axis=1)
        planes.append(plane[plane.max(axis=1) == top])
    px = np.concatenate([cube, *planes])
    p = px.reshape(-1, 1, 1, 3)
    o = np.where(p >= 128, 0, 255).astype(np.uint8)  # every channel differs by >= 128
    want, got = _tallies(o, p, [(0, 255, 0), (255, 255, 0)], 60, 64, threads=(2,))
    assert (want.count > 0).all()
    _assert_same(want, got)


def test_threshold_and_saturation_limits_count_alike() -> None:
    thr = 60
    cases = []
    for sat, diff in itertools.product((MIN_SATURATION - 1, MIN_SATURATION, 255), (thr, thr + 1)):
        for hue in range(_HUES):
            painted = np.zeros(3, int)
            painted[hue % 3] = 150 + sat // 2
            painted[(hue + 1) % 3] = 150 + sat // 2 - sat
            painted[(hue + 2) % 3] = 150 + sat // 2 - (sat * hue) // _HUES
            painted = np.clip(painted, 0, 255)
            orig = painted.copy()
            orig[hue % 3] = painted[hue % 3] - diff if painted[hue % 3] >= diff else diff
            cases.append((orig, painted))
    o = np.array([c[0] for c in cases], np.uint8).reshape(-1, 1, 1, 3)
    p = np.array([c[1] for c in cases], np.uint8).reshape(-1, 1, 1, 3)
    want, got = _tallies(o, p, threshold=thr)
    assert 0 < want.count.sum() < len(cases)
    _assert_same(want, got)


def test_non_contiguous_batches_and_batches_that_add_up() -> None:
    o, p = _strokes((96, 80), 5)
    want, _ = _tallies(o, p)
    tally = MarkerTally(np.array([(0, 255, 0)]), 60, 64)
    tally.add(o[:10], p[:10], n_threads=2)
    tally.add(o[10:], p[10:], n_threads=2)
    _assert_same(want, [tally])
    # views: flipped, strided and a window of bigger tiles
    for view in (np.s_[:, ::-1], np.s_[:, ::3, 1::2], np.s_[::2, 5:70, 3:60]):
        want, got = _tallies(o[view], p[view])
        _assert_same(want, got)


def test_add_refuses_bad_arrays_and_ignores_empty_batches() -> None:
    tally = MarkerTally(np.array([(0, 255, 0)]), 60, 64)
    t = np.zeros((2, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="uint8"):
        tally.add(t.astype(np.float32), t)
    with pytest.raises(ValueError, match="must match"):
        tally.add(t, t[:, :4])
    with pytest.raises(ValueError, match=r"\(n, h, w, 3\)"):
        tally.add(t[..., :2], t[..., :2])
    tally.add(t[:0], t[:0])
    tally.add(t[:, :0], t[:, :0])
    assert tally.count.sum() == 0 and tally.sums.sum() == 0


def test_painted_labels_and_marker_check_do_not_depend_on_the_batch_size(tmp_path) -> None:
    # _measure reads the next batch while the kernels run on this one
    from prostate_fast.label import label_tiles
    from prostate_fast.slide import open_slide
    from prostate_fast.synthetic import make_synthetic
    from prostate_fast.tile import full_grid

    syn = make_synthetic(tmp_path, seed=3, n_cancer=4)
    with open_slide(syn.slide) as slide:
        grid = full_grid(slide, slide.choose_level(magnification=20), 128)
        tables = [label_tiles(slide, syn.painted, grid, batch_size=b) for b in (7, 1000)]
    assert len(grid) > 7 * 3 and (tables[0].label == 1).sum() > 0
    for name in ("label", "coverage", "white_fraction"):
        np.testing.assert_array_equal(getattr(tables[0], name), getattr(tables[1], name))
