"""``python -m prostate_fast.distributed``: the dist_sync worker, under its 0.1 name.

Cluster scripts written for 0.1 start workers this way; it runs
:func:`prostate_fast.cli.worker.worker_main`. The launcher lives in :mod:`prostate_fast.train.distributed`.
"""

from __future__ import annotations

if __name__ == "__main__":  # pragma: no cover - the worker process
    import sys

    from .cli.worker import worker_main

    sys.exit(worker_main())
