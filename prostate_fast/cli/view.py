"""``prostate-fast view``: the browser viewer of an output folder or a slide."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import _positive_int


def _add_view(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "view",
        help="browse a screening output folder (or one slide) in the web browser",
        description="Serve the worklist of a `screen`/`batch`/`run` output folder, or one slide "
        "(with --scores, its prediction layer), to a web browser: the slides at full resolution, "
        "the prediction layer (toggle, opacity, class or graded), 'reviewed' marks saved to "
        "OUT/review.csv. Prints the URL; Ctrl-C stops it. Works without network.",
    )
    p.add_argument("target", type=Path, help="output folder (with worklist.csv) or slide file")
    p.add_argument("--scores", type=Path, default=None, help="ScoreGrid of the slide (.npz)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument(
        "--port", type=int, default=8765, help="port to listen on (default 8765; 0: any free port)"
    )
    p.add_argument("--open", action="store_true", help="open the page in the default browser")
    p.add_argument(
        "--cache-mb", type=_positive_int, default=64, help="tile cache size in MiB (default 64)"
    )
    p.set_defaults(handler=_cmd_view)


def _cmd_view(args: argparse.Namespace) -> int:
    from ..view import serve

    try:
        serve(
            args.target,
            scores=args.scores,
            host=args.host,
            port=args.port,
            open_browser=args.open,
            cache_mb=args.cache_mb,
        )
    except KeyboardInterrupt:
        print("prostate-fast view: stopped")
    return 0
