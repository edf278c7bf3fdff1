# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Pixel kernels for tissue detection: white-pixel counts per tile, pixel classes of a thumbnail.

Private: ``prostate_fast.tissue`` validates the arrays, resolves defaults and calls these. Every
kernel is integer-only and per-pixel (or per-tile), so any thread count gives the same result.
"""
from cython.parallel cimport prange

cdef extern from * nogil:
    """
    #ifdef _OPENMP
    #define PF_OPENMP_ON 1
    #else
    #define PF_OPENMP_ON 0
    #endif

    /* GCC builds an AVX2 copy beside the baseline one and picks it at load time (no -march). */
    #if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
    #define PF_CLONES __attribute__((target_clones("avx2", "default")))
    #else
    #define PF_CLONES
    #endif

    /* White pixels among n interleaved RGB pixels: min(R,G,B) >= lo and max - min <= spread.
       Counted in blocks of 8192 pixels in 32-bit so that the loop vectorises. */
    static PF_CLONES long long pf_count_white(const unsigned char *p, long long n,
                                             unsigned char lo, unsigned char spread) {
        long long total = 0;
        while (n > 0) {
            long long m = n < 8192 ? n : 8192;
            unsigned int c = 0;
            for (long long i = 0; i < m; ++i) {
                unsigned char r = p[3 * i], g = p[3 * i + 1], b = p[3 * i + 2];
                unsigned char mn = r < g ? r : g;
                unsigned char mx = r > g ? r : g;
                mn = mn < b ? mn : b;
                mx = mx > b ? mx : b;
                c += (unsigned int)((mn >= lo) & ((unsigned char)(mx - mn) <= spread));
            }
            total += c;
            p += 3 * m;
            n -= m;
        }
        return total;
    }

    /* Class of one bright-field pixel: 0 stain-coloured or glass, 1 dark, 2 pen ink.
       Hue (degrees) times chroma is computed exactly in integers, as in HSV:
       hue = 60 * ((G-B)/C mod 6) | 60 * (2 + (B-R)/C) | 60 * (4 + (R-G)/C) for max R | G | B. */
    static inline unsigned char pf_pixel_class(int r, int g, int b, int dark_max, int pen_chroma,
                                               int hue_lo, int hue_hi, unsigned char *chroma) {
        int mx = r > g ? r : g, mn = r < g ? r : g;
        int c, hue_c;
        mx = mx > b ? mx : b;
        mn = mn < b ? mn : b;
        c = mx - mn;
        *chroma = (unsigned char)c;
        if (mx < dark_max) return 1;
        if (c < pen_chroma) return 0;
        if (mx == r) hue_c = g >= b ? 60 * (g - b) : 360 * c - 60 * (b - g);
        else if (mx == g) hue_c = 120 * c + 60 * (b - r);
        else hue_c = 240 * c + 60 * (r - g);
        return (hue_c < hue_lo * c || hue_c > hue_hi * c) ? 2 : 0;
    }
    """
    int PF_OPENMP_ON
    long long pf_count_white(const unsigned char *p, long long n, unsigned char lo,
                             unsigned char spread)
    unsigned char pf_pixel_class(int r, int g, int b, int dark_max, int pen_chroma, int hue_lo,
                                 int hue_hi, unsigned char *chroma)


def built_with_openmp():
    """True when this extension was compiled with OpenMP."""
    return PF_OPENMP_ON == 1


def count_white(const unsigned char[:, ::1] tiles, long long[::1] out, int min_brightness,
                int max_saturation, int n_threads):
    """Write into ``out[i]`` the number of white pixels of tile ``i``.

    ``tiles`` is (n, pixels * 3): each row one tile's interleaved RGB bytes. White: the smallest
    channel >= ``min_brightness`` and (largest - smallest) <= ``max_saturation``.
    Requires n >= 1, a row length divisible by 3 and both thresholds in [0, 255].
    """
    cdef Py_ssize_t n = tiles.shape[0], i
    cdef long long pixels = tiles.shape[1] // 3
    cdef unsigned char lo = <unsigned char>min_brightness, spread = <unsigned char>max_saturation
    with nogil:
        # dynamic: a thread slowed by other processes does not hold the others back
        for i in prange(n, num_threads=n_threads, schedule="dynamic", chunksize=4):
            out[i] = pf_count_white(&tiles[i, 0], pixels, lo, spread)


def classify_pixels(const unsigned char[:, :, ::1] rgb, unsigned char[:, ::1] chroma,
                    unsigned char[:, ::1] cls, int dark_max, int pen_chroma, int hue_lo,
                    int hue_hi, bint reject_pen, int n_threads):
    """Per pixel of a bright-field RGB image: chroma (max - min) and class.

    Class 0: stain-coloured or glass (its chroma is the tissue score), 1: dark (max < dark_max:
    black scanner border, black marker), 2: pen ink (chroma >= pen_chroma and hue outside
    [hue_lo, hue_hi] degrees; only when ``reject_pen``).
    """
    cdef Py_ssize_t rows = rgb.shape[0], cols = rgb.shape[1], r, c
    cdef unsigned char k, ch
    cdef int pen = pen_chroma if reject_pen else 256
    with nogil:
        for r in prange(rows, num_threads=n_threads, schedule="static"):
            for c in range(cols):
                k = pf_pixel_class(rgb[r, c, 0], rgb[r, c, 1], rgb[r, c, 2], dark_max, pen,
                                   hue_lo, hue_hi, &ch)
                chroma[r, c] = ch
                cls[r, c] = k
