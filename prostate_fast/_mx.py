"""Load MXNet once, with thread counts set, and make contexts from user strings.

``import mxnet`` sets the process's OpenMP thread count to half the cores, which also caps our own
OpenMP kernels (measured: 300 vs 570 tiles/s on 2 cores). So the environment is set before the
first import when the user did not set it, and every native kernel passes its thread count
explicitly. MXNet 1.9.1 needs numpy < 1.24 (it uses ``np.bool``); a clear error says so.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

from ._util import resolve_threads
from .errors import ModelError

__all__ = ["import_mxnet", "parse_context"]


def import_mxnet(n_threads: int | None = None) -> ModuleType:
    """Import and return ``mxnet``, first setting OMP/MXNet thread variables the user left unset.

    Raises
    ------
    ModelError
        MXNet is not installed (install the ``cpu`` extra or an ``mxnet-cuXX`` wheel) or cannot
        be imported with this numpy.
    """
    import sys

    if "mxnet" not in sys.modules:
        threads = str(resolve_threads(n_threads))
        os.environ.setdefault("OMP_NUM_THREADS", threads)
        os.environ.setdefault("MXNET_OMP_MAX_THREADS", threads)
        os.environ.setdefault("MXNET_CPU_WORKER_NTHREADS", threads)
    try:
        import mxnet
    except ImportError as exc:
        raise ModelError(
            "MXNet is not installed: pip install 'prostate-fast[cpu]' (CPU) or an mxnet-cuXX wheel"
        ) from exc
    except AttributeError as exc:  # np.bool and friends, removed in numpy 1.24
        import numpy

        raise ModelError(
            f"MXNet 1.9.1 cannot run with numpy {numpy.__version__}: install numpy==1.23.5"
        ) from exc
    return mxnet


def parse_context(spec: str | Any | None) -> list[Any]:
    """Turn ``"cpu"``, ``"gpu(0)"``, ``"gpu(0),gpu(1)"``, ``"gpu:0,1"`` or an mx.Context into a list.

    Raises
    ------
    ValueError
        Unparsable text.
    ModelError
        A GPU was asked for but this MXNet build has no CUDA or no GPU is visible.
    """
    import re

    mx = import_mxnet()
    if spec is None or spec == "":
        return [mx.cpu()]
    if isinstance(spec, mx.Context):
        return [spec]
    if isinstance(spec, list | tuple):
        return [c for s in spec for c in parse_context(s)]
    text = str(spec).strip().lower().replace(" ", "")
    if text == "cpu":
        return [mx.cpu()]
    ids: list[int] = []
    m = re.fullmatch(r"gpu:([0-9,]+)", text)
    if m:
        ids = [int(i) for i in m.group(1).split(",") if i]
    else:
        parts = text.split(",")
        for part in parts:
            g = re.fullmatch(r"gpu(?:\((\d+)\))?", part)
            if not g:
                raise ValueError(f"context must be cpu, gpu(N) or a list of gpu(N), got {spec!r}")
            ids.append(int(g.group(1) or 0))
    try:
        n_gpus = mx.context.num_gpus()
    except Exception:  # noqa: BLE001 - a CPU build raises MXNetError here
        n_gpus = 0
    bad = [i for i in ids if i >= n_gpus]
    if bad:
        raise ModelError(
            f"context {spec!r}: this MXNet build sees {n_gpus} GPU(s); install an mxnet-cuXX "
            "wheel matching your CUDA, or use --engine onnx for current GPUs"
        )
    return [mx.gpu(i) for i in ids]


@contextmanager
def native_log_to(path: str | os.PathLike[str]) -> Iterator[None]:
    """Send what native code writes to stderr (MXNet's ``[hh:mm:ss] ...cc:177: ...`` INFO lines,
    which no setting silences) to ``path`` (appended; a new file starts with a
    ``# prostate-fast`` line, so it counts as ours) while the block runs; Python's own
    ``sys.stderr`` is kept, so warnings and errors still reach the user."""
    sys.stderr.flush()
    saved = os.dup(2)  # the real stderr: Python writes to it meanwhile, and it is put back after
    with open(Path(path), "ab") as log:
        if log.tell() == 0:  # the mark that makes it ours (prostate_fast._outputs)
            log.write(b"# prostate-fast native log: what MXNet's C++ code printed\n")
            log.flush()
        os.dup2(log.fileno(), 2)
    old = sys.stderr
    try:
        sys.stderr = os.fdopen(saved, "w", buffering=1, closefd=False)
        yield
    finally:
        sys.stderr.flush()
        sys.stderr = old
        os.dup2(saved, 2)
        os.close(saved)
