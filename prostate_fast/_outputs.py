"""What an output may replace: ownership marks, inputs, temporary names, stale temporaries, locks.

The rule (quoted by the README)
-------------------------------
``--overwrite`` replaces only an output that prostate-fast wrote, and nothing the user gave:

1. **Only our own outputs.** An existing file is replaced only when it carries our mark: a TIFF
   whose first ImageDescription is JSON with a ``"prostate_fast"`` key (overlays, synthetic
   slides), a PNG with the tEXt chunk ``Software: prostate-fast``, an ``.npz`` whose ``meta`` is
   one of our headers (score grid, tile table, label table), a CSV whose first line is one of our
   headers (``# prostate-fast ...`` or a registered header such as the worklist's), a JSON/GeoJSON
   whose first key is ``"prostate_fast"``, ``"format": "prostate-fast..."`` or
   ``"generator": "prostate_fast..."``. Anything else of the same name is refused: "was not
   written by prostate-fast".
2. **Folders only whole and only ours.** A folder output (dataset, model, demo) is replaced only
   when it holds our manifest (``dataset.json``/``model.json`` with their ``"format"``, the demo's
   ``.prostate-fast-demo``) and every entry in it is something we write there; a folder holding
   anything else is refused. An empty folder is filled, not replaced.
3. **Never an input.** An output that is an input of the same command (same file by real path or
   inode: a symlink, ``./p/../p`` or a hard link to it), or a folder containing one, is refused,
   with or without ``--overwrite``.
4. **Unique temporary names.** Work in progress is written under
   ``.NAME.pf-PID-RANDOM.tmp`` beside ``NAME`` and renamed into place when complete; an old
   output being replaced is moved aside under ``.NAME.pf-PID-RANDOM.old``. No fixed name a user
   may own (``NAME.old``, ``.NAME.part``) is created or removed.
5. **Stale temporaries are cleaned.** Before writing ``NAME``, temporaries of ``NAME`` in that
   naming scheme whose process (PID) is gone are removed: a run killed by SIGKILL leaves nothing
   behind after the next run.
6. **One writer per output.** A writer holds an exclusive ``fcntl.flock`` on ``.NAME.pf-lock``
   beside the output while it writes; a second writer of the same output fails at once with one
   line naming it. The kernel releases the lock when the process ends, however it ends, so a
   lock file left by a killed run is no obstacle (the next writer takes it and removes it).
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import fcntl
import fnmatch
import json
import os
import re
import secrets
import shutil
import struct
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

__all__ = [
    "OutputError",
    "check_replaceable",
    "clean_stale",
    "command_inputs",
    "mark_png",
    "output_lock",
    "register_csv_header",
    "remove_output",
    "temp_path",
    "written_by_us",
]

#: The PNG tEXt chunk (keyword, value) that marks our PNGs.
PNG_SOFTWARE = (b"Software", b"prostate-fast")
_TEMP = re.compile(r"^\.(?P<name>.+)\.pf-(?P<pid>\d+)-[0-9a-f]{8}\.(?:tmp|old)$")
_HEAD = 65536  # bytes read to recognise a file
_CSV_HEADERS: set[str] = set()
_INPUTS: contextvars.ContextVar[tuple[Path, ...]] = contextvars.ContextVar(
    "prostate_fast_inputs", default=()
)


class OutputError(FileExistsError):
    """An output exists and may not be replaced (not ours, an input, or being written)."""


# -- inputs -------------------------------------------------------------------------------------
@contextlib.contextmanager
def command_inputs(paths: Iterable[object]) -> Iterator[None]:
    """Declare ``paths`` inputs of the running command: no output inside the block replaces one.

    Items that are not paths (None, an open slide or score grid) count by their ``path``
    attribute, if any.
    """
    found = (p if isinstance(p, str | os.PathLike) else getattr(p, "path", None) for p in paths)
    new = tuple(Path(p) for p in found if isinstance(p, str | os.PathLike))
    token = _INPUTS.set(_INPUTS.get() + new)
    try:
        yield
    finally:
        _INPUTS.reset(token)


def _input_clash(out: Path) -> tuple[Path, str] | None:
    """The declared input that ``out`` (an existing path) is, holds or lies inside, else None.

    Returned with that relation: ``"is"`` (same file by inode, a hard link, or by real path, a
    symlink or ``..``), ``"holds"`` (a folder holding an input) or ``"is inside"`` (a path inside
    an input folder, part of that input).
    """
    real_out = Path(os.path.realpath(out))
    for inp in _INPUTS.get():
        if not (inp.exists() or inp.is_symlink()):
            continue
        with contextlib.suppress(OSError):
            if os.path.samefile(inp, out):
                return inp, "is"
        real_in = Path(os.path.realpath(inp))
        if real_in == real_out:
            return inp, "is"
        if real_out in real_in.parents:
            return inp, "holds"
        if real_in in real_out.parents:
            return inp, "is inside"
    return None


# -- replacing ----------------------------------------------------------------------------------
def check_replaceable(
    out: str | os.PathLike[str], *, overwrite: bool, folder: bool = False
) -> None:
    """Raise unless writing ``out`` loses nothing (see the module's rule).

    ``folder``: ``out`` is a folder output (an existing empty folder is filled, not replaced).

    Raises
    ------
    FileExistsError
        ``out`` exists and ``overwrite`` is false.
    OutputError
        ``out`` is (or holds) an input of this command, or was not written by prostate-fast.
    """
    out = Path(out)
    if not (out.exists() or out.is_symlink()):
        return
    clash = _input_clash(out)
    if clash is not None:
        inp, what = clash
        raise OutputError(f"{out}: {what} an input of this command ({inp}); choose another output")
    if folder and out.is_dir() and not out.is_symlink() and not any(out.iterdir()):
        return  # an empty folder is filled, nothing is lost
    if not overwrite:
        raise FileExistsError(
            f"{out}: already exists; pass overwrite=True (--overwrite) to replace it"
        )
    if not written_by_us(out):
        kind = "a folder holding files" if out.is_dir() else "a file"
        raise OutputError(
            f"{out}: {kind} not written by prostate-fast; not replaced (choose another output)"
        )


def temp_path(final: str | os.PathLike[str], kind: str = "tmp") -> Path:
    """A fresh temporary name beside ``final``: ``.NAME.pf-PID-RANDOM.tmp`` (or ``.old``)."""
    final = Path(final)
    return final.parent / f".{final.name}.pf-{os.getpid()}-{secrets.token_hex(4)}.{kind}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(final: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporaries of ``final`` (our naming scheme) whose process is gone."""
    final = Path(final)
    removed = []
    try:
        names = os.listdir(final.parent)
    except OSError:
        return removed
    for name in names:
        m = _TEMP.match(name)
        if m is None or m["name"] != final.name or _alive(int(m["pid"])):
            continue
        p = final.parent / name
        with contextlib.suppress(OSError):
            remove_output(p)
            removed.append(p)
    return removed


def remove_output(path: str | os.PathLike[str]) -> None:
    """Remove a file, symlink or folder tree (ours: checked by the caller)."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


# -- locks --------------------------------------------------------------------------------------
@contextlib.contextmanager
def output_lock(final: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive lock on ``final`` (``.NAME.pf-lock`` beside it) for the block.

    Raises ``OutputError`` at once when another process holds it. The parent folder must exist.
    """
    final = Path(final)
    lock = final.parent / f".{final.name}.pf-lock"
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, str(final)) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise OutputError(
                    f"{final}: another prostate-fast run is writing it; try again when it ends"
                ) from None
            raise OSError(exc.errno, exc.strerror, str(final)) from exc
        try:  # the file may have been removed by the previous holder: lock the one on disk
            same = os.path.samestat(os.fstat(fd), os.stat(lock))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            if os.fstat(fd).st_size == 0 and os.path.samestat(os.fstat(fd), os.stat(lock)):
                os.unlink(lock)  # still held: a waiting opener sees the inode change and retries
        os.close(fd)


# -- recognising our outputs --------------------------------------------------------------------
def register_csv_header(line: str) -> None:
    """Register the first line of a CSV prostate-fast writes (the worklist's, ...)."""
    _CSV_HEADERS.add(line.strip())


def mark_png(png: bytes) -> bytes:
    """``png`` with the tEXt chunk ``Software: prostate-fast`` after its IHDR (our mark)."""
    data = PNG_SOFTWARE[0] + b"\0" + PNG_SOFTWARE[1]
    chunk = struct.pack(">I", len(data)) + b"tEXt" + data
    chunk += struct.pack(">I", zlib.crc32(b"tEXt" + data) & 0xFFFFFFFF)
    return png[:33] + chunk + png[33:]  # 8 signature + IHDR (4 + 4 + 13 + 4)


def written_by_us(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` (a file, or a folder and everything in it) carries prostate-fast's mark."""
    path = Path(path)
    try:
        if path.is_dir():
            return _folder_ours(path)
        return _file_ours(path)
    except (OSError, ValueError):
        return False


def _file_ours(path: Path) -> bool:
    if _TEMP.match(path.name) or re.match(r"^\..+\.pf-lock$", path.name):
        return True
    with open(path, "rb") as fh:
        head = fh.read(_HEAD)
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return _png_ours(head)
    if head[:4] in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"):
        return _tiff_ours(path)
    if head.startswith(b"PK"):
        return _npz_ours(path)
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff")
    first = text.partition("\n")[0].strip()
    if first.startswith("# prostate-fast ") or first in _CSV_HEADERS:
        return True
    return bool(_JSON_MARK.match(text))


_JSON_MARK = re.compile(
    r'\s*\{\s*(?:"prostate_fast"\s*:|"format"\s*:\s*"prostate-fast|"generator"\s*:\s*"prostate_fast)'
)


def _png_ours(head: bytes) -> bool:
    pos = 8
    while pos + 8 <= len(head):
        n, kind = struct.unpack(">I4s", head[pos : pos + 8])
        if kind == b"IDAT":
            return False
        if kind == b"tEXt":
            key, _, value = head[pos + 8 : pos + 8 + n].partition(b"\0")
            if (key, value) == PNG_SOFTWARE:
                return True
        pos += 12 + n
    return False


def _tiff_ours(path: Path) -> bool:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        desc = tif.pages[0].description or ""
    meta = json.loads(desc) if desc.lstrip().startswith("{") else None
    return isinstance(meta, dict) and "prostate_fast" in meta


def _npz_ours(path: Path) -> bool:
    import zipfile

    with zipfile.ZipFile(path) as z:
        info = z.getinfo("meta.npy")
        if info.file_size > 1 << 20:
            return False
        import io

        import numpy as np

        meta = json.loads(str(np.load(io.BytesIO(z.read(info)), allow_pickle=False)))
    if not isinstance(meta, dict):
        return False
    fmt = meta.get("format")
    label_table = {"classes", "slide_path", "rule"} <= meta.keys()
    return (isinstance(fmt, str) and fmt.startswith("prostate-fast")) or label_table


#: The names in a training run's work folder (``MODEL.partial``: state.json, train.log, ...).
_TRAINING = ("*.json", "*.params", "*.states", "*.log", "log.csv", ".*.part", "*.png")
#: Folder outputs: manifest file, its "format" (None: only its presence), the names inside.
_FOLDERS: dict[str, tuple[str | None, tuple[str, ...]]] = {
    "dataset.json": ("prostate-fast-dataset", ("*.json", "*.rec", "*.idx", "*.lst", "*.csv")),
    "model.json": (
        "prostate-fast-model",
        ("*.json", "*.params", "*.states", "*.log", "*.png", "*.onnx", "*.txt", "*.csv", ".*.part"),
    ),
    "state.json": (None, _TRAINING),
    "train.log": (None, _TRAINING),
    ".prostate-fast-demo": (None, (".prostate-fast-demo",)),
}


def _folder_ours(folder: Path) -> bool:
    """A folder with our manifest whose every entry is ours (by mark, or by name inside it)."""
    for manifest, (fmt, names) in _FOLDERS.items():
        m = folder / manifest
        if not m.is_file():
            continue
        if fmt is not None:
            meta = json.loads(m.read_text(encoding="utf-8"))
            if not (isinstance(meta, dict) and meta.get("format") == fmt):
                return False
        return all(_entry_ours(p, names) for p in folder.iterdir())
    return False


def _entry_ours(p: Path, names: tuple[str, ...]) -> bool:
    if p.is_symlink():
        return False
    if p.is_dir():
        if _folder_ours(p):
            return True
        return all(_entry_ours(q, names) for q in p.iterdir())  # an empty folder loses nothing
    named = any(fnmatch.fnmatchcase(p.name, n) for n in names)
    if named and p.suffix.lower() not in (".png", ".tif", ".tiff", ".npz"):
        return True
    return _file_ours(p)
