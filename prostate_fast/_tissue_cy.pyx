# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Pixel kernels for tissue detection (chroma and pixel class of a bright-field thumbnail) and
for filling the pixels off the tissue mask (predict's tiles partly off tissue).

Private: ``prostate_fast.tissue`` validates the arrays, resolves defaults and the thread count and
calls it; the kernel checks nothing. A plain typed-memoryview loop, hence Cython (the rule is in
setup.py's docstring). The tissue stage's other kernel, the white-pixel count, is C++
(``csrc/tissue.cpp``): it needs an AVX2 copy picked at run time, which Cython cannot express.
Integer-only and per pixel, so any thread count gives the same result.
"""
import numpy as np
from cython.parallel cimport prange
from libc.math cimport floor

cdef extern from *:
    """
    #ifdef _OPENMP
    #define PF_OPENMP_ON 1
    #else
    #define PF_OPENMP_ON 0
    #endif
    """
    int PF_OPENMP_ON


def built_with_openmp():
    """True when this extension was compiled with OpenMP."""
    return PF_OPENMP_ON == 1


cdef inline unsigned char _pixel_class(int r, int g, int b, int mx, int c, int dark_max,
                                       int pen_chroma, int hue_lo, int hue_hi) noexcept nogil:
    """Class of a pixel, brightest channel ``mx``, chroma ``c``: 0 stain or glass, 1 dark, 2 pen.

    Hue (degrees) times chroma is computed exactly in integers, as in HSV: hue =
    60 * ((G-B)/C mod 6) | 60 * (2 + (B-R)/C) | 60 * (4 + (R-G)/C) for max R | G | B.
    """
    cdef int hue_c
    if mx < dark_max:
        return 1
    if c < pen_chroma:
        return 0
    if mx == r:
        hue_c = 60 * (g - b) if g >= b else 360 * c - 60 * (b - g)
    elif mx == g:
        hue_c = 120 * c + 60 * (b - r)
    else:
        hue_c = 240 * c + 60 * (r - g)
    return 2 if hue_c < hue_lo * c or hue_c > hue_hi * c else 0


def classify_pixels(const unsigned char[:, :, ::1] rgb, unsigned char[:, ::1] chroma,
                    unsigned char[:, ::1] cls, int dark_max, int pen_chroma, int hue_lo,
                    int hue_hi, bint reject_pen, int n_threads):
    """Per pixel of a bright-field RGB image: chroma (max - min) and class.

    Class 0: stain-coloured or glass (its chroma is the tissue score), 1: dark (max < dark_max:
    black scanner border, black marker), 2: pen ink (chroma >= pen_chroma and hue outside
    [hue_lo, hue_hi] degrees; only when ``reject_pen``).
    """
    cdef Py_ssize_t rows = rgb.shape[0], cols = rgb.shape[1], y, x
    cdef int r, g, b, mx, mn
    cdef int pen = pen_chroma if reject_pen else 256
    with nogil:
        for y in prange(rows, num_threads=n_threads, schedule="static"):
            for x in range(cols):
                r = rgb[y, x, 0]
                g = rgb[y, x, 1]
                b = rgb[y, x, 2]
                mx = r if r > g else g
                mn = r if r < g else g
                mx = mx if mx > b else b
                mn = mn if mn < b else b
                chroma[y, x] = <unsigned char>(mx - mn)
                cls[y, x] = _pixel_class(r, g, b, mx, mx - mn, dark_max, pen, hue_lo, hue_hi)


def fill_off_tissue(unsigned char[:, :, :, ::1] tiles, const long long[:, ::1] origin,
                    const unsigned char[:, ::1] mask, double scale,
                    const unsigned char[::1] fill):
    """Set the pixels of ``tiles[k]`` (tile origin ``origin[k]`` = (x0, y0) at the tiling level)
    that the tissue ``mask`` does not cover to ``fill``, in place.

    A pixel (x, y) is covered when ``mask[r, c]``, r = floor((y + 0.5) * scale), c likewise,
    both clipped to the mask (the nearest-neighbour rule of
    ``prostate_fast.predict.scoregrid.tissue_pixels``, the same float64 arithmetic as its
    NumPy form). The mask is nonempty.
    """
    cdef Py_ssize_t n = tiles.shape[0], h = tiles.shape[1], w = tiles.shape[2]
    cdef Py_ssize_t rows = mask.shape[0], cols = mask.shape[1], k, y, x, r, c
    cdef unsigned char f0 = fill[0], f1 = fill[1], f2 = fill[2]
    cdef Py_ssize_t[::1] mc = np.empty(max(w, 1), np.intp)
    with nogil:
        for k in range(n):
            for x in range(w):
                c = <Py_ssize_t>floor((<double>(origin[k, 0] + x) + 0.5) * scale)
                mc[x] = 0 if c < 0 else (cols - 1 if c > cols - 1 else c)
            for y in range(h):
                r = <Py_ssize_t>floor((<double>(origin[k, 1] + y) + 0.5) * scale)
                r = 0 if r < 0 else (rows - 1 if r > rows - 1 else r)
                for x in range(w):
                    if not mask[r, mc[x]]:
                        tiles[k, y, x, 0] = f0
                        tiles[k, y, x, 1] = f1
                        tiles[k, y, x, 2] = f2
