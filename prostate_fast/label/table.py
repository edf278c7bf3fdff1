"""The label stage's two small types: :class:`ClassMap` (what the classes are) and
:class:`LabelTable` (what each tile got). Public through :mod:`prostate_fast.label`.

Table files are self-describing, for the dataset stage that reads many of them:

* ``.csv``: a first line ``# prostate-fast label table v1 {JSON}`` (slide name and path, classes,
  tile size, stride, downsample, level, source, rule, threshold), then the columns ``tile_row,
  tile_col, l0_x, l0_y, label, class, coverage_<class>..., white_fraction``.
* ``.npz``: the arrays under the same names plus ``meta`` (the JSON text).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._util import atomic_path, write_npz
from ..errors import AnnotationError, DatasetError

__all__ = ["DEFAULT_ALIASES", "ClassMap", "LabelTable", "load_label_table"]

RGB = tuple[int, int, int]
_NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")
_MAGIC = "# prostate-fast label table v1 "

#: Polygon names understood without configuration (compared lower-case), mapped to ``cancer``
#: when the class map has it, and to the negative class (index 0).
DEFAULT_ALIASES: dict[str, str] = {
    **dict.fromkeys(
        "cancer tumor tumour carcinoma adenocarcinoma malignant metastasis metastases _0 _1".split(),
        "cancer",
    ),
    **dict.fromkeys(
        "benign normal non-cancer noncancer non-tumor non-tumour healthy".split(), "<negative>"
    ),
}


def _rgb(name: str, value: object) -> RGB:
    try:
        r, g, b = (int(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ValueError(f"colour of {name!r} must be three integers, got {value!r}") from None
    if not all(0 <= v <= 255 for v in (r, g, b)):
        raise ValueError(f"colour of {name!r} must be in [0, 255], got {value!r}")
    return r, g, b


@dataclass(frozen=True, eq=False)
class ClassMap:
    """The classes of a labelling: names, marker colours, severity, polygon names, mask codes.

    Build with :meth:`create` (or :meth:`parse` for the CLI's ``--classes`` string).

    Attributes
    ----------
    names : tuple of str
        Class names; index 0 is the negative class (tiles no other class reaches).
    colours : tuple of (R, G, B) or None
        Marker colour of each class in a painted copy (None: not painted).
    order : tuple of int
        Positive class indices, most severe first: when several classes reach the rule, the first
        of them in this order wins.
    aliases : dict
        Lower-case polygon name -> class index, or None to ignore polygons of that name.
        ``"unclassified"`` is the key of polygons without a class.
    codes : dict
        Label-mask code -> class index, or None for codes that mark nothing (glass).
    """

    names: tuple[str, ...]
    colours: tuple[RGB | None, ...]
    order: tuple[int, ...]
    aliases: dict[str, int | None]
    codes: dict[int, int | None]

    @classmethod
    def create(
        cls,
        classes: Mapping[str, Sequence[int] | None] | Sequence[str] | None = None,
        *,
        negative: str = "benign",
        order: Sequence[str] | None = None,
        aliases: Mapping[str, str | None] | None = None,
        codes: Mapping[int, str | None] | None = None,
    ) -> ClassMap:
        """Build a class map.

        Parameters
        ----------
        classes : mapping name -> (R, G, B) or None, or sequence of names
            The positive classes, most severe first unless ``order`` says otherwise (default
            ``{"cancer": (0, 255, 0)}``, the study's green).
        negative : str
            Name of class 0 (default "benign").
        order : sequence of str, optional
            Every positive class, most severe first.
        aliases : mapping, optional
            Polygon name (case-insensitive) -> class name, or None/"ignore" to skip such polygons.
            Added to :data:`DEFAULT_ALIASES` (``Tumor``, ``Carcinoma``, Camelyon ``_0``/``_1`` ->
            cancer; ``Normal``, ``Benign`` -> the negative class). Polygons without a class
            ("unclassified") go to the only positive class when there is one; with several,
            map them here or they are an error.
        codes : mapping, optional
            Mask code -> class name, or None for "nothing" (default: 0 nothing, 1 the negative
            class, 2, 3, ... the positive classes in the order given).

        Raises
        ------
        ValueError
            A bad or duplicate name, colour, alias target, order or code.
        """
        if classes is None:
            classes = {"cancer": (0, 255, 0)}
        pos = dict(classes) if isinstance(classes, Mapping) else dict.fromkeys(classes)
        names = (negative, *pos)
        for n in names:
            if not isinstance(n, str) or not _NAME.match(n):
                raise ValueError(f"class names must be letters, digits or _.+- only, got {n!r}")
        if len({n.lower() for n in names}) != len(names):
            raise ValueError(f"class names must be distinct (case-insensitive), got {names}")
        if len(names) < 2:
            raise ValueError("give at least one positive class")
        colours = (None, *(None if v is None else _rgb(k, v) for k, v in pos.items()))
        index = {n.lower(): i for i, n in enumerate(names)}
        if order is None:
            rank = tuple(range(1, len(names)))
        else:
            rank = tuple(index.get(str(o).lower(), -1) for o in order)
            if sorted(rank) != list(range(1, len(names))):
                raise ValueError(f"order must list every positive class once: {names[1:]}")
        al: dict[str, int | None] = {}
        for key, target in DEFAULT_ALIASES.items():
            if target == "<negative>":
                al[key] = 0
            elif target in index:
                al[key] = index[target]
        if len(names) == 2:
            al["unclassified"] = 1
        al.update({n.lower(): i for i, n in enumerate(names)})
        for key, target in (aliases or {}).items():
            if target is None or str(target).lower() in ("ignore", "none"):
                al[str(key).lower()] = None
            elif str(target).lower() in index:
                al[str(key).lower()] = index[str(target).lower()]
            else:
                raise ValueError(f"alias {key!r} -> {target!r}: no such class in {names}")
        if codes is None:
            cd: dict[int, int | None] = {0: None, **{i + 1: i for i in range(len(names))}}
        else:
            cd = {}
            for code, target in codes.items():
                if not isinstance(code, int | np.integer) or code < 0:
                    raise ValueError(f"mask codes must be integers >= 0, got {code!r}")
                t = None if target is None else str(target).lower()
                if t is not None and t not in ("ignore", "none") and t not in index:
                    raise ValueError(f"mask code {code} -> {target!r}: no such class in {names}")
                cd[int(code)] = None if t in (None, "ignore", "none") else index[t]
        return cls(names, colours, rank, al, cd)

    @classmethod
    def parse(
        cls,
        spec: str,
        *,
        negative: str = "benign",
        order: str | None = None,
        aliases: str | None = None,
        codes: str | None = None,
    ) -> ClassMap:
        """Build from CLI strings: ``"cancer=0,255,0;gleason4=0,0,255"`` (a name without
        ``=`` has no colour), ``order="gleason4,cancer"``, ``aliases="Tumor=cancer;Stroma=ignore"``,
        ``codes="0=ignore,1=benign,2=cancer"``.
        """
        classes: dict[str, RGB | None] = {}
        for part in filter(None, (s.strip() for s in spec.split(";"))):
            name, _, colour = part.partition("=")
            classes[name.strip()] = _rgb(name, colour.split(",")) if colour.strip() else None
        al: dict[str, str | None] = {}
        for part in filter(None, (s.strip() for s in (aliases or "").split(";"))):
            key, eq, target = part.partition("=")
            if not eq:
                raise ValueError(f"alias {part!r} must be NAME=CLASS or NAME=ignore")
            al[key.strip()] = target.strip()
        ordr = [s.strip() for s in order.split(",")] if order else None
        cd: dict[int, str | None] | None = None
        if codes:
            cd = {}
            for part in filter(None, (s.strip() for s in codes.split(","))):
                code, eq, target = part.partition("=")
                if not eq or not code.strip().isdigit():
                    raise ValueError(f"mask code {part!r} must be CODE=CLASS or CODE=ignore")
                cd[int(code)] = target.strip()
        return cls.create(classes, negative=negative, order=ordr, aliases=al, codes=cd)

    def resolve(self, name: str | None, path: object) -> int | None:
        """Class index of a polygon name (None: ignored); AnnotationError for an unknown one."""
        key = "unclassified" if name is None else name.strip().lower()
        if key in self.aliases:
            return self.aliases[key]
        what = "unclassified polygons" if name is None else f"class name {name!r}"
        raise AnnotationError(
            f"{path}: {what} not in the class map {list(self.names)}; map it with "
            f"--class-alias '{name or 'unclassified'}=CLASS' (or =ignore)"
        )


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
        keys = ("slide_name", "slide_path", "tile_size", "stride", "downsample", "level",
                "source", "source_path", "min_coverage", "rule")  # fmt: skip
        return {"classes": list(self.classes), **{k: getattr(self, k) for k in keys}}

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
                write_npz(
                    tmp, meta=np.array(meta), tile_rc=self.tile_rc, l0_xy=self.l0_xy,
                    label=self.label, coverage=self.coverage, white_fraction=self.white_fraction,
                )  # fmt: skip
            else:
                tmp.write_text(_MAGIC + meta + "\n" + self._csv_body(), encoding="utf-8")
        return p

    def _csv_body(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["tile_row", "tile_col", "l0_x", "l0_y", "label", "class",
                    *(f"coverage_{c}" for c in self.classes), "white_fraction"])  # fmt: skip
        for i in range(len(self)):
            w.writerow([int(self.tile_rc[i, 0]), int(self.tile_rc[i, 1]), int(self.l0_xy[i, 0]),
                        int(self.l0_xy[i, 1]), int(self.label[i]), self.classes[self.label[i]],
                        *(f"{v:.6g}" for v in self.coverage[i]),
                        f"{self.white_fraction[i]:.6g}"])  # fmt: skip
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
        if p.suffix.lower() == ".npz":
            with np.load(p, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                arrays = {k: z[k] for k in ("tile_rc", "l0_xy", "label", "coverage",
                                             "white_fraction")}  # fmt: skip
        else:
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
                "tile_rc": num[:, 0:2].astype(np.int32), "l0_xy": num[:, 2:4].astype(np.int64),
                "label": num[:, 4].astype(np.int16), "coverage": num[:, 5 : 5 + k],
                "white_fraction": num[:, 5 + k],
            }  # fmt: skip
        return LabelTable(
            classes=tuple(meta.pop("classes")), **meta,
            tile_rc=arrays["tile_rc"].astype(np.int32), l0_xy=arrays["l0_xy"].astype(np.int64),
            label=arrays["label"].astype(np.int16),
            coverage=arrays["coverage"].astype(np.float32),
            white_fraction=arrays["white_fraction"].astype(np.float32),
        )  # fmt: skip
    except FileNotFoundError:
        raise DatasetError(f"{p}: no such label table") from None
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise DatasetError(f"{p}: not a readable label table ({exc})") from None
