"""What each tile got: :class:`LabelTable`, the label stage's artefact, and its only reader and writer.

Every label table on disk is written by :meth:`LabelTable.save` and read by
:func:`load_label_table` (the CLI, the dataset stage and the tests all go through them). Table files are self-describing, for the dataset stage that reads many of them:

* ``.csv``: a first line ``# prostate-fast label table v1 {JSON}`` (slide name and path, classes,
  tile size, stride, downsample, level, source, rule, threshold), then the columns ``tile_row,
  tile_col, l0_x, l0_y, label, class, coverage_<class>..., white_fraction``.
* ``.npz``: the arrays under the same names plus ``meta`` (the JSON text). A table whose zip
  directory says its members inflate past :data:`MAX_TABLE_BYTES` (512 MiB) is refused before
  anything is decompressed (a few MB of zip can inflate to gigabytes).

Slide identity: a table records the slide's level-0 ``slide_dimensions`` and a content
``slide_fingerprint`` (:func:`slide_fingerprint`: a 32 x 32 grey thumbnail of the whole slide), so
the dataset stage can check that the slide it reads is the one that was labelled and that every
tile lies on it (:func:`check_table_slide`). Tables written before this carry neither; their
coordinates are still checked against the slide's dimensions. Coordinates that are not finite
integers within int64 make the table unreadable.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .._util import atomic_path, csv_cell, write_npz
from ..errors import DatasetError

__all__ = [
    "FINGERPRINT_SIZE",
    "LabelTable",
    "TileCoverage",
    "check_table_slide",
    "load_label_table",
    "slide_fingerprint",
]

#: Side of the grey thumbnail that fingerprints a slide.
FINGERPRINT_SIZE = 32
#: Largest grey-level difference of any thumbnail pixel between a slide and its fingerprint.
FINGERPRINT_TOLERANCE = 24

_MAGIC = "# prostate-fast label table v1 "
#: Scalar fields of the JSON header, after ``classes``.
_META_KEYS = (
    "slide_name",
    "slide_path",
    "tile_size",
    "stride",
    "downsample",
    "level",
    "source",
    "source_path",
    "min_coverage",
    "rule",
    "slide_dimensions",
    "slide_fingerprint",
)
#: Arrays of a table, as named in the ``.npz`` file.
_ARRAYS = ("tile_rc", "l0_xy", "label", "coverage", "white_fraction")


class TileCoverage(NamedTuple):
    """What one source of labels measured per tile, before the rule turns it into labels.

    ``coverage`` (n, n_classes) float share of each tile marked with each class; ``inside``
    (n, n_classes) bool, the tile's centre lies in the class (filled only for ``rule="centre"``);
    ``source`` and ``source_path`` as in :class:`LabelTable`; ``white_fraction`` (n,) when the
    source read the tiles anyway (a painted copy), else None.
    """

    coverage: np.ndarray
    inside: np.ndarray
    source: str
    source_path: str | None
    white_fraction: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class LabelTable:
    """Per-tile labels of one slide (see the module docstring for the file layout).

    Attributes
    ----------
    slide_name, slide_path : str, str or None
    classes : tuple of str
        Class names; index 0 is the negative class.
    tile_size, stride, downsample, level
        The grid: tile side and stride at the target scale, level-0 pixels per tile pixel, level.
    tile_rc, l0_xy : numpy.ndarray
        (n, 2) int32 grid (row, column) and (n, 2) int64 level-0 (x, y) of each tile.
    label : numpy.ndarray
        (n,) int16 class index.
    coverage : numpy.ndarray
        (n, n_classes) float32 share of the tile marked with each class.
    white_fraction : numpy.ndarray
        (n,) float32 share of white pixels (NaN when not computed).
    source, source_path : str, str or None
        ``painted``, ``geojson``, ``asap``, ``aperio`` or ``mask``, and the file.
    min_coverage, rule
        The rule that made ``label`` from ``coverage``.
    slide_dimensions : (int, int) or None
        Level-0 (width, height) of the slide (None in tables written before it was recorded).
    slide_fingerprint : str or None
        :func:`slide_fingerprint` of the slide (None likewise).
    """

    slide_name: str
    slide_path: str | None
    classes: tuple[str, ...]
    tile_size: int
    stride: int
    downsample: float
    level: int
    tile_rc: np.ndarray
    l0_xy: np.ndarray
    label: np.ndarray
    coverage: np.ndarray
    white_fraction: np.ndarray
    source: str
    source_path: str | None
    min_coverage: float
    rule: str
    slide_dimensions: tuple[int, int] | None = None
    slide_fingerprint: str | None = None

    def __post_init__(self) -> None:
        dims = self.slide_dimensions
        if dims is not None:
            if (
                len(dims) != 2
                or not all(
                    isinstance(v, int | np.integer) and not isinstance(v, bool) for v in dims
                )
                or min(dims) < 1
            ):
                raise ValueError(f"slide_dimensions must be 2 positive integers, got {dims!r}")
            object.__setattr__(self, "slide_dimensions", (int(dims[0]), int(dims[1])))
        fp = self.slide_fingerprint
        if fp is not None and (
            not isinstance(fp, str)
            or len(fp) != 2 * FINGERPRINT_SIZE**2
            or fp.strip("0123456789abcdef")
        ):
            raise ValueError("slide_fingerprint must be the hex text of a 32 x 32 thumbnail")
        n, k = len(self.label), len(self.classes)
        want = {"tile_rc": (n, 2), "l0_xy": (n, 2), "coverage": (n, k), "white_fraction": (n,)}
        for name, shape in want.items():
            if getattr(self, name).shape != shape:
                raise ValueError(f"{name} must have shape {shape}, got {getattr(self, name).shape}")

    def __len__(self) -> int:
        return len(self.label)

    def counts(self) -> dict[str, int]:
        """Tiles per class name."""
        c = np.bincount(self.label.astype(np.int64), minlength=len(self.classes))
        return {name: int(c[i]) for i, name in enumerate(self.classes)}

    def meta(self) -> dict[str, object]:
        """The JSON header of the saved files."""
        return {"classes": list(self.classes), **{k: getattr(self, k) for k in _META_KEYS}}

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write the table as ``.csv`` or ``.npz`` (by suffix), atomically.

        Raises
        ------
        ValueError
            Another suffix.
        FileExistsError
            ``path`` exists and ``overwrite`` is false.
        """
        p = Path(path)
        suffix = p.suffix.lower()
        if suffix not in (".csv", ".npz"):
            raise ValueError(f"{p}: a label table is saved as .csv or .npz")
        meta = json.dumps(self.meta(), sort_keys=True)
        with atomic_path(p, overwrite=overwrite) as tmp:
            if suffix == ".npz":
                write_npz(tmp, meta=np.array(meta), **{k: getattr(self, k) for k in _ARRAYS})
            else:
                tmp.write_text(_MAGIC + meta + "\n" + self._csv_body(), encoding="utf-8")
        return p

    def _csv_body(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        cover = [f"coverage_{c}" for c in self.classes]
        w.writerow(
            ["tile_row", "tile_col", "l0_x", "l0_y", "label", "class", *cover, "white_fraction"]
        )
        for i in range(len(self)):
            (r, c), (x, y), lab = self.tile_rc[i], self.l0_xy[i], self.label[i]
            w.writerow(
                [int(r), int(c), int(x), int(y), int(lab), csv_cell(self.classes[lab])]
                + [f"{v:.6g}" for v in self.coverage[i]]
                + [f"{self.white_fraction[i]:.6g}"]
            )
        return buf.getvalue()


def load_label_table(path: str | Path) -> LabelTable:
    """Read a table written by :meth:`LabelTable.save`.

    Raises
    ------
    DatasetError
        Missing file, another format, or a damaged table; the message names the file.
    """
    p = Path(path)
    try:
        meta, arrays = _read_npz(p) if p.suffix.lower() == ".npz" else _read_csv(p)
        return LabelTable(
            classes=tuple(meta.pop("classes")),
            **meta,
            tile_rc=arrays["tile_rc"].astype(np.int32),
            l0_xy=arrays["l0_xy"].astype(np.int64),
            label=arrays["label"].astype(np.int16),
            coverage=arrays["coverage"].astype(np.float32),
            white_fraction=arrays["white_fraction"].astype(np.float32),
        )
    except FileNotFoundError:
        raise DatasetError(f"{p}: no such label table") from None
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise DatasetError(f"{p}: not a readable label table ({exc})") from None


#: Most bytes the arrays of a ``.npz`` label table may inflate to (about 5 million tiles of
#: two classes); the sizes are read from the zip directory before anything is decompressed.
MAX_TABLE_BYTES = 512 << 20


def _check_npz_sizes(p: Path) -> None:
    """DatasetError when the zip directory says the members inflate past MAX_TABLE_BYTES."""
    import zipfile

    try:
        with zipfile.ZipFile(p) as z:
            total = sum(i.file_size for i in z.infolist())
            if total <= MAX_TABLE_BYTES:
                for info in z.infolist():  # an .npy header must not promise more than it holds
                    with z.open(info) as fh:
                        version = np.lib.format.read_magic(fh)
                        read = {(1, 0): np.lib.format.read_array_header_1_0}.get(
                            version, np.lib.format.read_array_header_2_0
                        )
                        shape, _, dtype = read(fh)
                    if int(np.prod(shape, dtype=np.float64)) * dtype.itemsize > info.file_size:
                        raise ValueError(f"{info.filename} claims shape {shape}")
    except zipfile.BadZipFile as exc:
        raise DatasetError(f"{p}: not a readable label table ({exc})") from None
    if total > MAX_TABLE_BYTES:
        raise DatasetError(
            f"{p}: its arrays inflate to {total / 2**20:.0f} MiB, over the label table limit of "
            f"{MAX_TABLE_BYTES >> 20} MiB; refused before decompressing"
        )


def _read_npz(p: Path) -> tuple[dict, dict[str, np.ndarray]]:
    _check_npz_sizes(p)
    with np.load(p, allow_pickle=False) as z:
        meta, arrays = json.loads(str(z["meta"])), {k: z[k] for k in _ARRAYS}
    for k in ("tile_rc", "l0_xy", "label"):
        _check_coordinates(arrays[k])
    return meta, arrays


def _check_coordinates(values: np.ndarray) -> None:
    """ValueError unless ``values`` are finite whole numbers that fit int64 (not NaN, not 1e30)."""
    v = np.asarray(values)
    if v.dtype.kind in "iub" or v.size == 0:
        return
    if v.dtype.kind != "f" or not np.isfinite(v).all() or (np.abs(v) >= 2.0**62).any():
        raise ValueError("tile positions and labels must be finite integers")
    if (v != np.round(v)).any():
        raise ValueError("tile positions and labels must be whole numbers")


def slide_fingerprint(slide: Any) -> str:
    """The content fingerprint of a slide: its 32 x 32 grey thumbnail, as hex text.

    Read from the slide's lowest useful level in bands (bounded memory, the cost of a tissue
    mask at most); compared with a tolerance (:data:`FINGERPRINT_TOLERANCE` grey levels per
    pixel), so another decoder's rounding does not matter while another slide does.
    """
    import cv2

    w, h = slide.dimensions
    target = max(1.0, min(w, h) / (2 * FINGERPRINT_SIZE))
    rgb, _ = slide.read_low_res(target)
    size = (FINGERPRINT_SIZE, FINGERPRINT_SIZE)
    grey = cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), size, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(grey, np.uint8).tobytes().hex()


def check_table_slide(table: Any, slide: Any, origin: str) -> None:
    """DatasetError unless ``slide`` is the slide ``table`` was made from and its tiles lie on it.

    Parameters
    ----------
    table
        A :class:`LabelTable` (or anything with ``l0_xy``, ``slide_dimensions`` and
        ``slide_fingerprint``; the last two may be None for a table of an older version).
    slide : Slide
        The slide the dataset would read.
    origin : str
        The table file, for the message.

    Raises
    ------
    DatasetError
        Other level-0 dimensions or content than recorded, or a tile whose level-0 corner lies
        outside the slide (the message names the table and the slide).
    """
    w, h = slide.dimensions
    where = f"{origin}: slide {slide.path or slide.name}"
    dims = getattr(table, "slide_dimensions", None)
    if dims is not None and tuple(dims) != (w, h):
        raise DatasetError(
            f"{where} is {w} x {h} px but the table was made from a {dims[0]} x {dims[1]} px "
            "slide: another slide"
        )
    xy = np.asarray(table.l0_xy, np.int64).reshape(-1, 2)
    out = (xy[:, 0] < 0) | (xy[:, 0] >= w) | (xy[:, 1] < 0) | (xy[:, 1] >= h)
    if out.any():
        x, y = (int(v) for v in xy[np.argmax(out)])
        raise DatasetError(
            f"{where}: {int(out.sum())} tile(s) lie outside its {w} x {h} px, e.g. at ({x}, {y})"
        )
    fp = getattr(table, "slide_fingerprint", None)
    if fp is not None:
        want = np.frombuffer(bytes.fromhex(fp), np.uint8).astype(np.int16)
        got = np.frombuffer(bytes.fromhex(slide_fingerprint(slide)), np.uint8).astype(np.int16)
        if int(np.abs(want - got).max()) > FINGERPRINT_TOLERANCE:
            raise DatasetError(
                f"{where} does not look like the slide the table was made from (its content "
                "fingerprint differs): another slide"
            )


def _read_csv(p: Path) -> tuple[dict, dict[str, np.ndarray]]:
    text = p.read_text(encoding="utf-8")
    head, _, body = text.partition("\n")
    if not head.startswith(_MAGIC):
        raise ValueError("no prostate-fast label table header")
    meta = json.loads(head[len(_MAGIC) :])
    rows = list(csv.reader(io.StringIO(body)))[1:]
    k = len(meta["classes"])
    num = np.array([[float(v) for i, v in enumerate(r) if i != 5] for r in rows])
    num = num.reshape(len(rows), 6 + k)
    _check_coordinates(num[:, 0:5])
    arrays = {
        "tile_rc": num[:, 0:2].astype(np.int32),
        "l0_xy": num[:, 2:4].astype(np.int64),
        "label": num[:, 4].astype(np.int16),
        "coverage": num[:, 5 : 5 + k],
        "white_fraction": num[:, 5 + k],
    }
    return meta, arrays
