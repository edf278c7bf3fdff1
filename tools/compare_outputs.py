"""Compare two output folders of prostate-fast (e.g. two ``prostate-fast demo`` runs) file by file.

A behaviour-preserving change must leave every artefact the same. This tool says so, or names what
differs. What may differ between two correct runs is ignored:

* the folder itself: absolute paths of the first folder are read as those of the second;
* wall-clock fields: CSV columns and JSON keys named ``seconds``, ``*_seconds``, ``time``,
  ``created``, ``elapsed``, ``timings``; log lines with a time stamp;
* encoder metadata: images and TIFFs are compared by decoded pixels (every page of a TIFF) plus
  their geometry, not by bytes.

Everything else is compared exactly: label tables and score grids array by array, RecordIO files,
side-car CSVs, parameters and checkpoints byte by byte, worklist rows cell by cell.

Usage::

    python tools/compare_outputs.py BEFORE AFTER        # exit 0 identical, 1 different

For example, before and after a refactor::

    prostate-fast demo -o /tmp/before   # on the old commit
    prostate-fast demo -o /tmp/after    # on the new one
    python tools/compare_outputs.py /tmp/before /tmp/after
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import sys
from pathlib import Path

import numpy as np

TIME_KEYS = re.compile(r"^(seconds|.*_seconds|time|created|elapsed|timings|wall_s|.*_s)$")
# Lines of MXNet's log and of our logs that carry a time or a speed.
TIME_LINE = re.compile(r"\d\d:\d\d:\d\d|Time cost|samples/sec|seconds|\bs\)")


def _norm_text(text: str, a: Path, b: Path) -> str:
    return text.replace(str(a), "<ROOT>").replace(str(b), "<ROOT>")


def _norm_string(text: str, root: Path) -> object:
    """A string cell: paths made relative; JSON (e.g. a score grid's ``meta``) without its times."""
    text = _norm_text(text, root, root)
    if text[:1] in "{[":
        try:
            return json.dumps(_strip_times(json.loads(text)), sort_keys=True)
        except ValueError:
            pass
    return text


def _strip_times(obj: object) -> object:
    if isinstance(obj, dict):
        return {k: _strip_times(v) for k, v in obj.items() if not TIME_KEYS.match(str(k))}
    if isinstance(obj, list):
        return [_strip_times(v) for v in obj]
    return obj


def _json(path: Path, root: Path) -> object:
    text = path.read_text(encoding="utf-8")
    return _strip_times(json.loads(_norm_text(text, root, root)))


def _csv_rows(path: Path, root: Path) -> list[dict[str, str]]:
    text = _norm_text(path.read_text(encoding="utf-8"), root, root)
    rows = list(csv.DictReader(io.StringIO(text)))
    return [{k: v for k, v in r.items() if not TIME_KEYS.match(k or "")} for r in rows]


def _npz(path: Path, root: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        out = {}
        for k in z.files:
            v = z[k]
            if v.dtype.kind in "US":
                v = np.vectorize(lambda s: _norm_string(str(s), root), otypes=[object])(v)
            out[k] = v
        return out


def _tiff_pages(path: Path) -> list[tuple[tuple[int, ...], np.ndarray]]:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        return [(p.shape, p.asarray()) for p in tif.pages]


def _image(path: Path) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError(f"{path}: not an image")
    return img


def _log_lines(path: Path, root: Path) -> list[str]:
    lines = _norm_text(path.read_text(encoding="utf-8", errors="replace"), root, root)
    return [ln for ln in lines.splitlines() if not TIME_LINE.search(ln)]


def compare_file(a: Path, b: Path, root_a: Path, root_b: Path) -> str | None:
    """Return None when ``a`` and ``b`` are the same artefact, else what differs."""
    suffix = a.suffix.lower()
    if suffix in (".json", ".geojson"):
        same = _json(a, root_a) == _json(b, root_b)
    elif suffix == ".csv":
        ra, rb = _csv_rows(a, root_a), _csv_rows(b, root_b)
        if len(ra) != len(rb):
            return f"{len(ra)} rows against {len(rb)}"
        for i, (x, y) in enumerate(zip(ra, rb, strict=True)):
            if x != y:
                diff = {
                    k: (x.get(k), y.get(k)) for k in x.keys() | y.keys() if x.get(k) != y.get(k)
                }
                return f"row {i + 1} differs: {diff}"
        same = True
    elif suffix == ".npz":
        za, zb = _npz(a, root_a), _npz(b, root_b)
        if za.keys() != zb.keys():
            return f"arrays {sorted(za)} against {sorted(zb)}"
        for k in za:
            if za[k].dtype != zb[k].dtype or not np.array_equal(za[k], zb[k]):
                return f"array {k!r} differs"
        same = True
    elif suffix in (".tif", ".tiff"):
        pa, pb = _tiff_pages(a), _tiff_pages(b)
        if [s for s, _ in pa] != [s for s, _ in pb]:
            return f"pages {[s for s, _ in pa]} against {[s for s, _ in pb]}"
        for i, ((_, x), (_, y)) in enumerate(zip(pa, pb, strict=True)):
            if not np.array_equal(x, y):
                return f"page {i} pixels differ ({int((x != y).any(axis=-1).sum())} px)"
        same = True
    elif suffix in (".png", ".jpg", ".jpeg"):
        x, y = _image(a), _image(b)
        same = x.shape == y.shape and np.array_equal(x, y)
    elif suffix == ".log":
        same = _log_lines(a, root_a) == _log_lines(b, root_b)
    else:
        same = a.read_bytes() == b.read_bytes()
    return None if same else "content differs"


def compare_folders(a: Path, b: Path, skip: tuple[str, ...] = ()) -> list[str]:
    """Compare every file of two output folders; return one line per difference."""
    fa = {p.relative_to(a) for p in a.rglob("*") if p.is_file()}
    fb = {p.relative_to(b) for p in b.rglob("*") if p.is_file()}
    problems = [f"only in {a}: {p}" for p in sorted(fa - fb)]
    problems += [f"only in {b}: {p}" for p in sorted(fb - fa)]
    for rel in sorted(fa & fb):
        if any(rel.match(pattern) for pattern in skip):
            continue
        why = compare_file(a / rel, b / rel, a, b)
        if why:
            problems.append(f"{rel}: {why}")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    ap.add_argument("--skip", action="append", default=[], help="glob of files not to compare")
    args = ap.parse_args(argv)
    problems = compare_folders(args.before.resolve(), args.after.resolve(), tuple(args.skip))
    n = sum(1 for p in args.before.rglob("*") if p.is_file())
    for line in problems:
        print(line)
    print(f"{n} files compared: {'identical' if not problems else f'{len(problems)} differ'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
