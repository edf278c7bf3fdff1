"""A screening output folder for the viewer's tests: two screened slides and one failure."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path

from _scoregrid import make_scores


def make_output_folder(root: Path, width: int = 2048, height: int = 1024) -> Path:
    """``root/out`` as ``screen`` writes it (worklist.csv, per-slide folders) from truth scores."""
    from prostate_fast.screen import error_row, rank_worklist, screen_scored, write_worklist
    from prostate_fast.synthetic import make_synthetic

    slides = root / "slides"
    out = root / "out"
    rows = []
    for i, (name, k) in enumerate({"cancer1": 2, "benign1": 0}.items()):
        syn = make_synthetic(
            slides, name=name, width=width, height=height, seed=i + 5, n_cores=2, n_cancer=k
        )
        rows.append(screen_scored(syn.slide, make_scores(syn, tile=64), out))
    rows.append(error_row(slides / "broken.svs", OSError("cannot open")))
    write_worklist(rank_worklist(rows), out / "worklist.csv")
    return out


@contextmanager
def running(target: Path, scores: Path | None = None, cache_bytes: int = 8 << 20):
    """A ViewServer on a free loopback port, serving in a thread; yields it."""
    from prostate_fast.view import make_server, open_catalog

    server = make_server(open_catalog(target, scores), "127.0.0.1", 0, cache_bytes=cache_bytes)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        thread.join()
        server.server_close()
