"""Batch: screen many slides, resumably, on a local process pool or a Dask cluster.

* :mod:`.core`: :func:`run_batch` (discovery, skipping complete slides, the per-slide work in a
  worker: the slide opened once, predicted, its outputs written into a ``.part`` folder renamed
  when complete; the summary and the worklist);
* :mod:`.manifest`: the one owner of ``manifest.json`` (what a slide folder was made from, and
  whether a rerun may skip it);
* :mod:`.executors`: the ``spawn`` process pool that survives a dying worker, the Dask runner,
  the progress bar.

Options come as one :class:`~prostate_fast.screen.ScreeningOptions`, as for ``screen``.
"""

from __future__ import annotations

from .core import (
    SLIDE_EXTENSIONS,
    BatchResult,
    SlideResult,
    discover_slides,
    run_batch,
)
from .manifest import read_manifest

__all__ = [
    "SLIDE_EXTENSIONS",
    "BatchResult",
    "SlideResult",
    "discover_slides",
    "read_manifest",
    "run_batch",
]
