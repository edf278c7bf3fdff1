"""The browser viewer: ``prostate-fast view OUT`` or ``prostate-fast view SLIDE [--scores S]``.

The page (``static/``, OpenSeadragon vendored from npm with its licence, no CDN) shows the
worklist ranked as in ``worklist.csv``; a click opens the slide at full resolution (Deep Zoom
tiles read through the package's own reader) with the prediction as a separate layer drawn from
the ScoreGrid by the blend kernel (toggle, opacity, class or graded mode, legend, the class
probabilities of the tile under the pointer), the GeoJSON contours on demand, next/previous slide
with the keyboard (``j``/``k``, arrows), and "reviewed" marks saved to ``review.csv``.

* :mod:`.catalog`: what is served (worklist rows and their files), the review marks;
* :mod:`.tiles`: Deep Zoom geometry, slide and prediction tiles, the bounded tile cache;
* :mod:`.server`: the HTTP server (standard library; why: see its docstring).
"""

from __future__ import annotations

import os
import sys
from typing import TextIO

from .catalog import REVIEW, Catalog, ViewError, open_catalog
from .server import ViewServer, make_server

__all__ = ["REVIEW", "Catalog", "ViewError", "ViewServer", "make_server", "open_catalog", "serve"]


def serve(
    target: str | os.PathLike[str],
    *,
    scores: str | os.PathLike[str] | None = None,
    host: str = "127.0.0.1",
    port: int = 8765,
    open_browser: bool = False,
    cache_mb: int = 64,
    stream: TextIO | None = None,
) -> None:
    """Serve the viewer of an output folder or a slide until interrupted.

    Parameters
    ----------
    target : path
        A ``screen``/``batch``/``run`` output folder (holding ``worklist.csv``) or a slide file.
    scores : path, optional
        The slide's ScoreGrid (``-scores.npz``), with a slide file only.
    host, port : str, int
        Where to listen (default loopback only; port 0: any free port).
    open_browser : bool
        Open the page in the default browser.
    cache_mb : int
        Size of the encoded-tile cache in MiB.
    stream : text stream, optional
        Where the URL is printed (default stdout).

    Raises
    ------
    ViewError
        ``target`` is neither an output folder nor an existing file.
    ValueError
        Bad port or cache size.
    OSError
        The address is in use or cannot be bound.
    """
    if not 0 <= int(port) <= 65535:
        raise ValueError(f"port must be in [0, 65535], got {port!r}")
    if int(cache_mb) < 1:
        raise ValueError(f"cache_mb must be at least 1, got {cache_mb!r}")
    catalog = open_catalog(target, scores)
    if catalog.review is None:  # one slide: fail now on a file that is no slide
        from ..slide import open_slide

        open_slide(catalog.entries[0].slide).close()
    server = make_server(catalog, host, int(port), cache_bytes=int(cache_mb) << 20)
    print(
        f"prostate-fast view: {server.url} (Ctrl-C to stop)", file=stream or sys.stdout, flush=True
    )
    if open_browser:
        import webbrowser

        webbrowser.open(server.url)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
