"""What each tile got: :class:`LabelTable`, the label stage's artefact, and its only reader and writer.

Every label table on disk is written by :meth:`LabelTable.save` and read by
:func:`load_label_table` (the CLI, the dataset stage and the tests all go through them). Table files are self-describing, for the dataset stage that reads many of them:

* ``.csv``: a first line ``# prostate-fast label table v1 {JSON}`` (slide name and path, classes,
  tile size, stride, downsample, level, source, rule, threshold), then the columns ``tile_row,
  tile_col, l0_x, l0_y, label, class, coverage_<class>..., white_fraction``.
* ``.npz``: the arrays under the same names plus ``meta`` (the JSON text). A table whose zip
  directory says its members inflate past :data:`MAX_TABLE_BYTES` (512 MiB) is refused before
  anything is decompressed (a few MB of zip can inflate to gigabytes).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .._util import atomic_path, write_npz
from ..errors import DatasetError

__all__ = ["LabelTable", "TileCoverage", "load_label_table"]

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

    def __post_init__(self) -> None:
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
                [int(r), int(c), int(x), int(y), int(lab), self.classes[lab]]
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
        return json.loads(str(z["meta"])), {k: z[k] for k in _ARRAYS}


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
    arrays = {
        "tile_rc": num[:, 0:2].astype(np.int32),
        "l0_xy": num[:, 2:4].astype(np.int64),
        "label": num[:, 4].astype(np.int16),
        "coverage": num[:, 5 : 5 + k],
        "white_fraction": num[:, 5 + k],
    }
    return meta, arrays
