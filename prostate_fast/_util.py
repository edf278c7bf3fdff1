"""Small helpers shared by every stage: thread counts, atomic outputs, array checks."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import io
import json
import math
import os
import signal
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "atomic_path",
    "check_image",
    "check_outputs",
    "check_parent",
    "check_writable",
    "csv_cell",
    "die_with_parent",
    "disk_error_naming",
    "naming_disk_errors",
    "resolve_threads",
    "write_json",
    "write_npz",
]


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


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (``PR_SET_PDEATHSIG``); else nothing.

    For child processes (the batch pool's workers, the distributed launcher's roles) that must not
    outlive a driver killed by SIGKILL. The signal comes when the *thread* that started the child
    exits, so start children from the main thread. Safe between fork and exec.
    """
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


#: First characters that make a spreadsheet read a cell as a formula (OWASP "CSV injection").
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> object:
    """``value`` made safe for a CSV cell that a spreadsheet may open: text is escaped, numbers kept.

    Text (``str``) starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets a
    leading single quote, as OWASP advises against formula injection; anything else (numbers,
    negative ones included, None) is returned unchanged. Call it before formatting numbers as
    text, on user-controlled text: slide names, paths, messages, class names.
    """
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it to ``final`` only if the block succeeds.

    Nothing is left behind on failure. An existing ``final`` is replaced only if ``overwrite`` is
    true and prostate-fast wrote it, never when it is an input of the running command
    (:mod:`prostate_fast._outputs`: ``FileExistsError`` otherwise). The block holds the lock of
    ``final`` (a second writer fails at once), and stale temporaries of ``final`` are removed.
    """
    from ._outputs import check_replaceable, clean_stale, output_lock, temp_path

    final = Path(final)
    check_replaceable(final, overwrite=overwrite)
    check_parent(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # read-only folder, ...: name the output, not the temporary name
        raise OSError(exc.errno, exc.strerror, str(final)) from exc
    with output_lock(final):
        check_replaceable(final, overwrite=overwrite)  # again, now that no one else writes it
        clean_stale(final)
        tmp_path = temp_path(final)
        try:  # a plain open()'s mode (0666 minus umask), never an existing file
            os.close(os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, str(final)) from exc
        try:
            with naming_disk_errors(final, also=tmp_path):
                yield tmp_path
                os.replace(tmp_path, final)
        finally:
            if tmp_path.exists():
                tmp_path.unlink()


#: errno values of a write that failed for lack of room (full disk, quota, file size limit).
_DISK_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


@contextlib.contextmanager
def naming_disk_errors(
    path: str | os.PathLike[str], *, also: str | os.PathLike[str] | None = None
) -> Iterator[None]:
    """Re-raise an ``OSError`` of the block as one naming ``path``.

    Only errors that name no file and say the disk is full (``ENOSPC``, ``EDQUOT``, ``EFBIG``:
    writers such as io, zipfile and tifffile report them so), or that name ``also`` (a temporary
    name of ``path``), are renamed; others pass unchanged.
    """
    try:
        yield
    except OSError as exc:
        named = disk_error_naming(exc, path, also=also)
        if named is None:
            raise
        raise named from exc


def disk_error_naming(
    exc: OSError, path: str | os.PathLike[str], *, also: str | os.PathLike[str] | None = None
) -> OSError | None:
    """``exc`` as an error naming ``path`` (see :func:`naming_disk_errors`), or None to keep it.

    ``also`` is a temporary name of ``path`` (a file, or a folder whose files are renamed too).
    """
    name = exc.filename
    temp = (
        also is not None
        and isinstance(name, str)
        and (Path(name) == Path(also) or Path(also) in Path(name).parents)
    )
    if temp or (name is None and exc.errno in _DISK_ERRORS):
        return OSError(exc.errno, exc.strerror or str(exc), str(path))
    return None


def check_parent(path: str | os.PathLike[str]) -> None:
    """Raise ``NotADirectoryError`` naming the file when an ancestor of ``path`` is not a folder.

    (``mkdir(parents=True, exist_ok=True)`` would say "File exists", naming no output.)
    """
    for parent in Path(path).parents:
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise NotADirectoryError(
                    errno.ENOTDIR, f"{parent} is a file, not a folder", str(path)
                )
            return


def check_image(name: str, arr: np.ndarray, *, channels: tuple[int, ...] = (3,)) -> np.ndarray:
    """Return ``arr`` as a C-contiguous uint8 (rows, cols, C) array, or raise ValueError naming it."""
    arr = np.asarray(arr)
    if arr.dtype != np.uint8:
        raise ValueError(f"{name} must be uint8, got {arr.dtype}")
    if arr.ndim != 3 or arr.shape[2] not in channels:
        raise ValueError(f"{name} must have shape (rows, cols, {channels}), got {arr.shape}")
    return np.ascontiguousarray(arr)


def check_writable(
    folder: str | os.PathLike[str], *, output: str | os.PathLike[str] | None = None
) -> None:
    """Check, creating nothing, that files can be written in ``folder`` (or made under it).

    A probe file (unnamed, never linked) is opened in ``folder``, or in its nearest existing
    ancestor when it does not exist yet. Commands that write their outputs only at the end call
    this first, so a read-only or impossible output folder fails before the work. Raises
    ``OSError`` naming ``output`` (default ``folder``).
    """
    folder = Path(folder)
    target = str(output if output is not None else folder)
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"{existing} is a file, not a folder", target)
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, target) from exc


def write_npz(path: str | os.PathLike[str], **arrays: np.ndarray) -> None:
    """``numpy.savez_compressed`` to ``path``, encoded in memory and written in one go.

    numpy leaves its ZipFile open when a write fails (a full disk); its ``__del__`` then prints
    "Exception ignored ... ValueError: seek of closed file" on stderr at exit. Encoding into a
    buffer first keeps that failure a plain ``OSError`` of the one file write.
    """
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    with open(path, "wb") as fh:
        fh.write(buf.getbuffer())


def write_json(path: str | os.PathLike[str], obj: object) -> None:
    """Write ``obj`` as indented strict JSON (NaN becomes null) through a temporary name.

    The text goes to a unique temporary name beside ``path`` (``.NAME.pf-PID-RANDOM.tmp``), then
    replaces ``path`` in one rename, so a reader never sees half a file. Values JSON cannot hold
    are written as ``str(value)``.
    """
    from ._outputs import temp_path

    path = Path(path)
    tmp = temp_path(path)
    try:
        tmp.write_text(json.dumps(_nan_to_none(obj), indent=2, default=str) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _nan_to_none(obj: object) -> object:
    """NaN -> None, recursively (strict JSON)."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_nan_to_none(v) for v in obj]
    return obj


def check_outputs(
    paths: Sequence[str | os.PathLike[str] | None], *, overwrite: bool, distinct: bool = True
) -> list[Path]:
    """The output files of one call (Nones dropped), checked before anything is written.

    Raises ``ValueError`` when two name the same file (unless ``distinct`` is false) and
    ``FileExistsError`` naming the first that exists when ``overwrite`` is false, or that may not
    be replaced (an input of the command, not written by prostate-fast: see
    :func:`~prostate_fast._outputs.check_replaceable`).
    """
    from ._outputs import check_replaceable

    targets = [Path(p) for p in paths if p is not None]
    if distinct and len({p.resolve() for p in targets}) != len(targets):
        raise ValueError(f"the outputs must be distinct files, got {[str(p) for p in targets]}")
    for p in targets:
        check_replaceable(p, overwrite=overwrite)
    return targets
