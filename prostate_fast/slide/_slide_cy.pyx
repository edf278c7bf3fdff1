# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Pixel kernels for reading slides: compositing transparent pixels on white.

Private: ``prostate_fast.slide`` validates the arrays and calls these.
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


def composite_on_white(const unsigned char[:, :, ::1] rgba, unsigned char[:, :, ::1] out,
                       int n_threads):
    """Write RGBA (straight alpha) composited over white into RGB ``out`` (same rows, cols).

    out = round(c * a / 255 + 255 * (1 - a / 255)), computed in integers as
    (c * a + 255 * (255 - a) + 127) // 255 so that every thread count gives the same bytes.
    """
    cdef Py_ssize_t rows = rgba.shape[0], cols = rgba.shape[1]
    cdef Py_ssize_t r, c, k
    cdef unsigned int a
    with nogil:
        for r in prange(rows, num_threads=n_threads, schedule="static"):
            for c in range(cols):
                a = rgba[r, c, 3]
                for k in range(3):
                    out[r, c, k] = <unsigned char>((rgba[r, c, k] * a + 255 * (255 - a) + 127) // 255)
