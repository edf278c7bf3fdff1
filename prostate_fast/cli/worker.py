"""The dist_sync worker entry: ``python -m prostate_fast.cli.worker train DATASET -o MODEL ...``.

:func:`prostate_fast.train.distributed.launch_local` starts workers with it, and on a cluster each
worker machine runs it (README, *Distributed training*).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence

from .main import main

__all__ = ["worker_main"]


def worker_main(argv: Sequence[str] | None = None) -> int:
    """Run ``prostate-fast`` with ``argv`` as a parameter-server worker; leave at once on failure.

    A worker that fails (bad dataset, an exception) would otherwise hang while exiting: MXNet's
    kvstore waits in its finaliser for the other workers, so neither the launcher nor a cluster
    scheduler would see it fail. Here a non-zero status ends the process with ``os._exit`` after
    flushing its output. ``python -m prostate_fast.cli.worker train DATASET -o MODEL ...`` (or the older
    ``python -m prostate_fast.distributed``) runs this (what :func:`launch_local` starts, and what the README shows for several machines).

    Returns
    -------
    int
        0 on success (a failure does not return).
    """
    import traceback

    try:
        status = main(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # argparse
        status = exc.code if isinstance(exc.code, int) else 2
    except BaseException:  # noqa: BLE001 - reported, then the process ends
        traceback.print_exc()
        status = 1
    if status:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(int(status))
    return 0


if __name__ == "__main__":  # pragma: no cover - the worker process
    sys.exit(worker_main())
