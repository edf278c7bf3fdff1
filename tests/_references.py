"""NumPy references that kernel tests compare the native code with."""

from __future__ import annotations

import numpy as np


def painted_reference(
    original: np.ndarray, painted: np.ndarray, colours: np.ndarray, threshold: int, colour_tol: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per tile: marked-pixel count and painted RGB sums, the rule of ``label.painted_tile_stats``.

    A pixel is marked when some channel differs from the original by more than ``threshold`` and,
    when ``colour_tol < 255``, every channel of the painted pixel is within ``colour_tol`` of one of
    ``colours``. Works for empty batches and empty tiles.
    """
    o, p = original.astype(np.int64), painted.astype(np.int64)
    marked = np.abs(o - p).max(axis=-1) > threshold
    if colour_tol < 255 and len(colours):
        near = np.zeros(marked.shape, bool)
        for c in np.asarray(colours, np.int64):
            near |= np.abs(p - c).max(axis=-1) <= colour_tol
        marked &= near
    n, pixels = o.shape[0], o.shape[1] * o.shape[2]
    counts = marked.reshape(n, pixels).sum(axis=1)
    sums = (p.reshape(n, pixels, 3) * marked.reshape(n, pixels, 1)).sum(axis=1)
    return counts, sums
