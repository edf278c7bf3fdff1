"""The 2018 study's tile labelling from a painted copy, written plainly: one OpenCV loop per tile.

For each tile: ``cv2.absdiff`` of the original and the painted copy, the largest channel
difference thresholded with ``cv2.threshold``, the marker colours found with ``cv2.inRange``,
the marked pixels counted with ``cv2.countNonZero`` and their mean painted colour taken with
``cv2.mean(painted, mask)``; the class is the map colour nearest to that mean. This is the
yardstick :func:`prostate_fast.label.painted_tile_stats` is checked (same counts, same class)
and timed against; it implements exactly the marking rule documented in ``csrc/label.hpp``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["painted_labels_baseline"]


def painted_labels_baseline(
    original: np.ndarray,
    painted: np.ndarray,
    colours: Sequence[Sequence[int]],
    *,
    threshold: int = 60,
    colour_tol: int = 64,
    min_coverage: float = 0.05,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Label tiles from a painted copy, one tile at a time with OpenCV.

    Parameters
    ----------
    original, painted : numpy.ndarray
        (n, h, w, 3) uint8 RGB tiles of the slide and of its painted copy.
    colours : sequence of (R, G, B)
        Marker colours, in class order.
    threshold : int
        A pixel is edited when some channel differs by more than this.
    colour_tol : int
        An edited pixel is marked when every channel is within this of some marker colour
        (255: any colour).
    min_coverage : float
        Share of marked pixels from which a tile takes the class of its mean colour.

    Returns
    -------
    counts : numpy.ndarray
        (n,) int64 marked pixels per tile.
    sums : numpy.ndarray
        (n, 3) int64 sums of the painted R, G, B over the marked pixels.
    colour_index : numpy.ndarray
        (n,) int64 index of the nearest colour to the mean marked colour, -1 for a tile below
        ``min_coverage``.
    """
    import cv2

    cols = np.asarray(colours, dtype=np.int64).reshape(-1, 3)
    n = len(original)
    counts = np.zeros(n, np.int64)
    sums = np.zeros((n, 3), np.int64)
    index = np.full(n, -1, np.int64)
    gate = colour_tol < 255 and len(cols) > 0
    for i in range(n):
        o, p = original[i], painted[i]
        diff = cv2.absdiff(o, p)
        r, g, b = cv2.split(diff)
        largest = cv2.max(cv2.max(r, g), b)
        _, marked = cv2.threshold(largest, threshold, 255, cv2.THRESH_BINARY)
        if gate:
            near = np.zeros(marked.shape, np.uint8)
            for c in cols:
                lo = np.clip(c - colour_tol, 0, 255).astype(np.uint8)
                hi = np.clip(c + colour_tol, 0, 255).astype(np.uint8)
                near = cv2.bitwise_or(near, cv2.inRange(p, lo, hi))
            marked = cv2.bitwise_and(marked, near)
        count = cv2.countNonZero(marked)
        counts[i] = count
        if count == 0:
            continue
        mean = np.array(cv2.mean(p, mask=marked)[:3])
        sums[i] = np.rint(mean * count).astype(np.int64)
        if count / (p.shape[0] * p.shape[1]) >= min_coverage and len(cols):
            index[i] = int(np.argmin(((mean[None, :] - cols) ** 2).sum(axis=1)))
    return counts, sums, index
