"""Property tests (hypothesis): the whitespace and compositing kernels agree with NumPy for any
batch, shape and thread count. (The label stage's properties, annotation parsers included, are in
test_label_properties.py.)
"""

from __future__ import annotations

import numpy as np
from _hypothesis import FEW, SOME
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp


# -- the whitespace kernel -----------------------------------------------------------------------
def _white_reference(tiles: np.ndarray, lo: int, spread: int) -> np.ndarray:
    t = tiles.astype(np.int16)
    mn, mx = t.min(axis=3), t.max(axis=3)
    white = (mn >= lo) & (mx - mn <= spread)
    return (white.sum(axis=(1, 2)) / (tiles.shape[1] * tiles.shape[2])).astype(np.float32)


# pixel values that straddle the default thresholds (brightness 200, saturation 18) often
pixel = st.one_of(st.integers(0, 255), st.integers(190, 255), st.sampled_from([199, 200, 218, 255]))
tile_shapes = st.tuples(st.integers(0, 5), st.integers(1, 9), st.integers(1, 9), st.just(3))


@SOME
@given(
    tiles=hnp.arrays(np.uint8, tile_shapes, elements=pixel),
    lo=st.one_of(st.just(200), st.integers(0, 255)),
    spread=st.one_of(st.just(18), st.integers(0, 255)),
    strided=st.booleans(),
)
def test_white_fraction_matches_numpy_for_any_threads(
    tiles: np.ndarray, lo: int, spread: int, strided: bool
) -> None:
    from prostate_fast.tissue import white_fraction

    if strided:  # a non-contiguous view of the same pixels
        tiles = np.ascontiguousarray(tiles[:, ::-1, :, ::-1])[:, :, :, ::-1][:, ::-1]
    ref = _white_reference(tiles, lo, spread)
    for threads in (1, 2, 3, 8):
        out = white_fraction(tiles, min_brightness=lo, max_saturation=spread, n_threads=threads)
        assert out.dtype == np.float32 and out.shape == (len(tiles),)
        assert ((out >= 0) & (out <= 1)).all()
        np.testing.assert_array_equal(out, ref)


@FEW
@given(
    shape=st.lists(st.integers(0, 4), min_size=0, max_size=5),
    dtype=st.sampled_from([np.uint8, np.int16, np.float32, np.bool_]),
    lo=st.integers(-300, 300),
)
def test_white_fraction_refuses_bad_input_with_value_error(shape: list, dtype, lo: int) -> None:  # noqa: ANN001
    from prostate_fast.tissue import white_fraction

    arr = np.zeros(shape, dtype)
    try:
        out = white_fraction(arr, min_brightness=lo)
    except ValueError:
        return
    assert arr.dtype == np.uint8 and arr.ndim == 4 and arr.shape[3] == 3 and 0 <= lo <= 255
    assert out.shape == (shape[0],) and ((out >= 0) & (out <= 1)).all()


# -- compositing on white ------------------------------------------------------------------------
def _composite_reference(rgba: np.ndarray) -> np.ndarray:
    c, a = rgba[..., :3].astype(np.int64), rgba[..., 3:4].astype(np.int64)
    return ((c * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)


@SOME
@given(
    rgba=hnp.arrays(
        np.uint8,
        st.tuples(st.integers(0, 12), st.integers(0, 12), st.just(4)),
        elements=st.one_of(st.integers(0, 255), st.sampled_from([0, 255])),
    )
)
def test_composite_on_white_matches_numpy_for_any_threads(rgba: np.ndarray) -> None:
    from prostate_fast.slide import _slide_cy
    from prostate_fast.slide.pixels import composite_on_white as _composite_on_white
    from prostate_fast.slide.pixels import to_rgb as _to_rgb

    ref = _composite_reference(rgba)
    assert np.array_equal(_composite_on_white(rgba, None), ref)
    assert np.array_equal(_to_rgb(rgba), ref)
    for threads in (1, 2, 3, 7):
        out = np.empty(rgba.shape[:2] + (3,), np.uint8)
        _slide_cy.composite_on_white(np.ascontiguousarray(rgba), out, threads)
        assert np.array_equal(out, ref)
    opaque, clear = rgba.copy(), rgba.copy()
    opaque[..., 3], clear[..., 3] = 255, 0
    assert np.array_equal(_to_rgb(opaque), rgba[..., :3])  # alpha 255: the colour itself
    assert (_to_rgb(clear) == 255).all()  # alpha 0: white


@FEW
@given(
    arr=hnp.arrays(
        st.sampled_from([np.uint8, np.uint16, np.bool_]),
        st.one_of(
            st.tuples(st.integers(0, 6), st.integers(0, 6)),
            st.tuples(st.integers(0, 6), st.integers(0, 6), st.integers(1, 4)),
        ),
    )
)
def test_any_decoded_image_becomes_rgb(arr: np.ndarray) -> None:
    from prostate_fast.slide.pixels import to_rgb as _to_rgb

    out = _to_rgb(arr)
    assert out.dtype == np.uint8 and out.shape == arr.shape[:2] + (3,) and out.flags.c_contiguous
    a8 = (arr >> 8).astype(np.uint8) if arr.dtype == np.uint16 else arr.astype(np.uint8)
    a8 = a8 * 255 if arr.dtype == np.bool_ else a8
    a8 = a8[:, :, None] if a8.ndim == 2 else a8
    grey = a8.shape[2] <= 2
    colour = np.repeat(a8[:, :, :1], 3, axis=2) if grey else a8[:, :, :3]
    if a8.shape[2] in (2, 4):
        alpha = a8[:, :, -1:]
        colour = _composite_reference(np.concatenate([colour, alpha], axis=2))
    np.testing.assert_array_equal(out, colour)
