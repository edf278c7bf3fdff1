"""Small helpers shared by every stage: thread counts, atomic outputs, array checks."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

__all__ = ["atomic_path", "check_image", "resolve_threads"]


def resolve_threads(n_threads: int | None) -> int:
    """Return the thread count for ``n_threads`` (None or 0 = every core this process may use)."""
    if n_threads is None or n_threads == 0:
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # pragma: no cover - not Linux
            return max(1, os.cpu_count() or 1)
    if isinstance(n_threads, bool) or not isinstance(n_threads, int | np.integer) or n_threads < 0:
        raise ValueError(f"n_threads must be None or a positive integer, got {n_threads!r}")
    return int(n_threads)


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it to ``final`` only if the block succeeds.

    Nothing is left behind on failure, and an existing ``final`` is never replaced unless
    ``overwrite`` is true (``FileExistsError`` otherwise): what the user gave is not overwritten.
    """
    final = Path(final)
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final}: already exists; refusing to overwrite it")
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".part", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates 0600; give the output the mode a plain open() would (0666 minus umask).
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        yield tmp_path
        os.replace(tmp_path, final)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def check_image(name: str, arr: np.ndarray, *, channels: tuple[int, ...] = (3,)) -> np.ndarray:
    """Return ``arr`` as a C-contiguous uint8 (rows, cols, C) array, or raise ValueError naming it."""
    arr = np.asarray(arr)
    if arr.dtype != np.uint8:
        raise ValueError(f"{name} must be uint8, got {arr.dtype}")
    if arr.ndim != 3 or arr.shape[2] not in channels:
        raise ValueError(f"{name} must have shape (rows, cols, {channels}), got {arr.shape}")
    return np.ascontiguousarray(arr)
