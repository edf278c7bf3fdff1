# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Pixel kernel for tissue detection: chroma and pixel class of a bright-field thumbnail.

Private: ``prostate_fast.tissue`` validates the arrays, resolves defaults and the thread count and
calls it; the kernel checks nothing. A plain typed-memoryview loop, hence Cython (the rule is in
setup.py's docstring). The tissue stage's other kernel, the white-pixel count, is C++
(``csrc/tissue.cpp``): it needs an AVX2 copy picked at run time, which Cython cannot express.
Integer-only and per pixel, so any thread count gives the same result.
"""
from cython.parallel cimport prange

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
