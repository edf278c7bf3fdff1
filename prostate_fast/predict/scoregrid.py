"""The score grid: per-tile class probabilities of one slide, and its files (one owner).

:class:`ScoreGrid` is the artefact :func:`~prostate_fast.predict.predict_slide` returns and the
overlay, the GeoJSON export, the worklist and the batch manifests read. It checks its arrays'
dtypes and shapes when built, applies the decision rule (:attr:`ScoreGrid.predicted`: class 0 is
the negative class; a tile gets the non-negative class with the highest probability among those
that reach their threshold, 0 when none does; when every non-negative class has the same threshold,
as model.json's combined key ``"a+b+c"`` gives, the screening test on their summed probability
decides, as training and evaluation chose it, and a positive tile takes the most probable of them)
and saves itself atomically as a versioned,
self-describing ``.npz`` or ``.csv`` that :func:`load_score_grid` reads back. Tests build their
ScoreGrids with this class too.

Tissue (version 2): a grid may carry each tile's tissue share (``tissue_fraction``) and the
low-resolution tissue mask it was scored against (``tissue_mask``, ``tissue_downsample``).
:meth:`ScoreGrid.tissue_window` turns the mask into tissue pixels at the tiling level by one rule,
shared by prediction (a tile partly off tissue is scored on its tissue) and the overlay (only its
tissue pixels are tinted): tiling-level pixel (x, y) is tissue when the mask pixel holding its
centre, level-0 ``((x + 0.5) * downsample, (y + 0.5) * downsample)``, is (nearest neighbour).
The ``.npz`` keeps both; the ``.csv`` keeps the share (column ``tissue``) but not the mask.
Version 1 files (no tissue) still load, with both None: the overlay then tints whole tiles.
"""

from __future__ import annotations

import csv
import io
import json
import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .._util import atomic_path, write_npz
from ..errors import ProstateFastError

__all__ = [
    "SCORE_FORMAT",
    "SCORE_VERSION",
    "ScoreGrid",
    "tissue_pixels",
    "check_threshold",
    "load_score_grid",
    "merge_thresholds",
]

SCORE_FORMAT = "prostate-fast score grid"
SCORE_VERSION = 2
#: Versions :func:`load_score_grid` reads (1: before the tissue share and mask were recorded).
READABLE_VERSIONS = (1, 2)


# -- the artefact ---------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class ScoreGrid:
    """Per-tile class probabilities of one slide (tissue tiles only).

    Attributes
    ----------
    slide_path : str
        Path of the slide file ("" for an in-memory slide).
    slide_name : str
        File name of the slide.
    classes : tuple of str
        Class names; index 0 is the negative class.
    colours : dict
        Class name to (R, G, B) overlay colour (the model's).
    tile_size : int
        Tile side in pixels at the model's scale.
    stride : int
        Pixels (at that scale) between tile origins.
    level : int
        Pyramid level the tiles were read from.
    downsample : float
        Level-0 pixels per tile pixel.
    scale : float
        Level pixels per tile pixel (1.0: the level as it is).
    mpp : float or None
        Microns per tile pixel, when known.
    grid_shape : (int, int)
        (rows, cols) of the full tile grid over the slide.
    tile_rc : numpy.ndarray
        (n, 2) int32 (row, column) of each predicted tile (``tile.py``'s frame).
    l0_xy : numpy.ndarray
        (n, 2) int64 level-0 (x, y) of each tile's top-left corner.
    prob : numpy.ndarray
        (n, n_classes) float32 class probabilities (rows sum to 1).
    thresholds : dict
        Probability threshold of each non-negative class (model.json's, or the user's).
    model : str
        Model folder.
    engine : str
        Engine that computed ``prob``.
    timings : dict
        Seconds spent per step (``tissue``, ``grid``, ``inference``, ``total``) and the
        ``tiles_per_s`` of the tiling + inference loop; informative only.
    tissue_fraction : numpy.ndarray or None
        (n,) float32 share of each tile covered by the tissue mask (None: not recorded).
    tissue_mask : numpy.ndarray or None
        (rows, cols) bool tissue mask of the slide (``mask_rc`` frame), None when not recorded.
    tissue_downsample : float or None
        Level-0 pixels per ``tissue_mask`` pixel (given with the mask, None without).
    """

    slide_path: str
    slide_name: str
    classes: tuple[str, ...]
    colours: dict[str, tuple[int, int, int]]
    tile_size: int
    stride: int
    level: int
    downsample: float
    scale: float
    mpp: float | None
    grid_shape: tuple[int, int]
    tile_rc: np.ndarray
    l0_xy: np.ndarray
    prob: np.ndarray
    thresholds: dict[str, float]
    model: str
    engine: str
    timings: dict[str, float] = field(default_factory=dict)
    tissue_fraction: np.ndarray | None = None
    tissue_mask: np.ndarray | None = None
    tissue_downsample: float | None = None

    def __post_init__(self) -> None:
        n = len(self.tile_rc)
        k = len(self.classes)
        if k < 2:
            raise ValueError(f"classes must name at least 2 classes, got {self.classes!r}")
        for name, arr, shape, dtype in (
            ("tile_rc", self.tile_rc, (n, 2), np.int32),
            ("l0_xy", self.l0_xy, (n, 2), np.int64),
            ("prob", self.prob, (n, k), np.float32),
        ):
            if not isinstance(arr, np.ndarray) or arr.shape != shape or arr.dtype != dtype:
                got = (getattr(arr, "shape", None), getattr(arr, "dtype", None))
                raise ValueError(f"{name} must be {np.dtype(dtype)} of shape {shape}, got {got}")
        missing = [c for c in self.classes[1:] if c not in self.thresholds]
        if missing:
            raise ValueError(f"thresholds lacks the classes {missing}")
        frac = self.tissue_fraction
        if frac is not None and (
            not isinstance(frac, np.ndarray) or frac.shape != (n,) or frac.dtype != np.float32
        ):
            raise ValueError(f"tissue_fraction must be float32 of shape ({n},) or None")
        mask, ds = self.tissue_mask, self.tissue_downsample
        if (mask is None) != (ds is None):
            raise ValueError("tissue_mask and tissue_downsample go together (both or neither)")
        if mask is not None and (
            not isinstance(mask, np.ndarray) or mask.ndim != 2 or mask.dtype != np.bool_
        ):
            raise ValueError("tissue_mask must be a 2-d bool array or None")
        if ds is not None and not float(ds) > 0:
            raise ValueError(f"tissue_downsample must be positive, got {ds!r}")

    # -- derived ----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.tile_rc)

    @property
    def n_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    @property
    def predicted(self) -> np.ndarray:
        """(n,) int16 predicted class of each tile (see the module docstring for the rule)."""
        thr = np.array([self.thresholds[c] for c in self.classes[1:]], np.float32)
        return decide(self.prob, thr)

    def class_counts(self) -> dict[str, int]:
        """Number of tiles predicted as each class."""
        counts = np.bincount(self.predicted, minlength=self.n_classes)
        return {c: int(counts[i]) for i, c in enumerate(self.classes)}

    def positive_share(self, cls: str | None = None) -> float:
        """Share of the tiles predicted as ``cls`` (default: any non-negative class)."""
        if len(self) == 0:
            return 0.0
        pred = self.predicted
        if cls is None:
            return float(np.count_nonzero(pred > 0) / len(pred))
        if cls not in self.classes:
            raise ValueError(f"cls must be one of {self.classes}, got {cls!r}")
        return float(np.count_nonzero(pred == self.classes.index(cls)) / len(pred))

    def cancer_share(self) -> float:
        """Share of the tissue tiles predicted as any non-negative class (cancer)."""
        return self.positive_share()

    def prob_map(self, cls: str | int = -1) -> np.ndarray:
        """(rows, cols) float32 probability of class ``cls`` per grid cell; NaN off the tissue."""
        i = self.classes.index(cls) if isinstance(cls, str) else int(cls) % self.n_classes
        out = np.full(self.grid_shape, np.nan, np.float32)
        out[self.tile_rc[:, 0], self.tile_rc[:, 1]] = self.prob[:, i]
        return out

    def tissue_window(self, x0: int, y0: int, width: int, height: int) -> np.ndarray | None:
        """(height, width) bool tissue pixels of a window at the tiling level, or None when the
        grid records no tissue mask (see the module notes for the rule)."""
        if self.tissue_mask is None or self.tissue_downsample is None:
            return None
        return tissue_pixels(
            self.tissue_mask,
            float(self.tissue_downsample),
            float(self.downsample),
            (int(x0), int(y0), int(width), int(height)),
        )

    def with_thresholds(self, thresholds: Mapping[str, float]) -> ScoreGrid:
        """A copy with some thresholds replaced (``{"cancer": 0.3}``)."""
        return replace(self, thresholds=merge_thresholds(self.thresholds, self.classes, thresholds))

    # -- files ------------------------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        """Everything but the arrays, as JSON-friendly values."""
        return {
            "format": SCORE_FORMAT,
            "version": SCORE_VERSION,
            "slide_path": self.slide_path,
            "slide_name": self.slide_name,
            "classes": list(self.classes),
            "colours": {k: list(v) for k, v in self.colours.items()},
            "tile_size": self.tile_size,
            "stride": self.stride,
            "level": self.level,
            "downsample": self.downsample,
            "scale": self.scale,
            "mpp": self.mpp,
            "grid_shape": list(self.grid_shape),
            "thresholds": dict(self.thresholds),
            "model": self.model,
            "engine": self.engine,
            "timings": dict(self.timings),
            "tissue_downsample": (
                None if self.tissue_downsample is None else float(self.tissue_downsample)
            ),
        }

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write to ``.npz`` (arrays + JSON meta) or ``.csv`` (one row per tile), atomically.

        The CSV starts with one comment line ``# prostate-fast score grid {json meta}``, then
        the header ``row,col,x,y,p_<class>...,tissue,predicted`` (``tissue``: the tile's tissue
        share, ``nan`` when not recorded; version 1 files lack the column); probabilities are
        written with 9 significant digits, so a load returns the same float32 values. The CSV
        does not keep the tissue mask (the ``.npz`` does).

        Raises
        ------
        ValueError
            A suffix other than .npz or .csv.
        FileExistsError
            ``path`` exists and ``overwrite`` is false.
        """
        path = Path(path)
        kind = path.suffix.lower()
        if kind not in (".npz", ".csv"):
            raise ValueError(f"path must end in .npz or .csv, got {path}")
        meta = json.dumps(self.meta())
        with atomic_path(path, overwrite=overwrite) as tmp:
            if kind == ".npz":
                tissue = {
                    k: v
                    for k, v in (
                        ("tissue_fraction", self.tissue_fraction),
                        ("tissue_mask", self.tissue_mask),
                    )
                    if v is not None
                }
                arrays = {"tile_rc": self.tile_rc, "l0_xy": self.l0_xy, "prob": self.prob}
                write_npz(tmp, meta=np.array(meta), **arrays, **tissue)
            else:
                with open(tmp, "w", newline="", encoding="utf-8") as fh:
                    fh.write(f"# {SCORE_FORMAT} {meta}\n")
                    w = csv.writer(fh, lineterminator="\n")
                    head = ["row", "col", "x", "y", *(f"p_{c}" for c in self.classes)]
                    w.writerow([*head, "tissue", "predicted"])
                    pred = self.predicted
                    frac = self.tissue_fraction
                    for i in range(len(self)):
                        row, col = self.tile_rc[i].tolist()
                        x, y = self.l0_xy[i].tolist()
                        probs = (f"{v:.9g}" for v in self.prob[i].tolist())
                        share = "nan" if frac is None else f"{float(frac[i]):.9g}"
                        w.writerow([row, col, x, y, *probs, share, int(pred[i])])
            os.chmod(tmp, 0o644)
        return path


def _check_meta(meta: Any, path: Path) -> None:
    if not isinstance(meta, dict) or meta.get("format") != SCORE_FORMAT:
        raise ProstateFastError(f"{path}: not a prostate-fast score grid")
    if meta.get("version") not in READABLE_VERSIONS:
        raise ProstateFastError(f"{path}: unsupported score grid version {meta.get('version')!r}")


def _grid_from_meta(
    meta: dict[str, Any],
    tile_rc: np.ndarray,
    l0_xy: np.ndarray,
    prob: np.ndarray,
    path: Path,
    tissue: Mapping[str, Any] | None = None,
) -> ScoreGrid:
    _check_meta(meta, path)
    tissue = dict(tissue or {})
    frac, mask = tissue.get("tissue_fraction"), tissue.get("tissue_mask")
    tds = meta.get("tissue_downsample") if mask is not None else None
    try:
        return ScoreGrid(
            slide_path=str(meta["slide_path"]),
            slide_name=str(meta["slide_name"]),
            classes=tuple(meta["classes"]),
            colours={k: tuple(int(x) for x in v) for k, v in meta["colours"].items()},  # type: ignore[misc]
            tile_size=int(meta["tile_size"]),
            stride=int(meta["stride"]),
            level=int(meta["level"]),
            downsample=float(meta["downsample"]),
            scale=float(meta["scale"]),
            mpp=None if meta["mpp"] is None else float(meta["mpp"]),
            grid_shape=(int(meta["grid_shape"][0]), int(meta["grid_shape"][1])),
            tile_rc=np.ascontiguousarray(tile_rc, np.int32).reshape(-1, 2),
            l0_xy=np.ascontiguousarray(l0_xy, np.int64).reshape(-1, 2),
            prob=np.ascontiguousarray(prob, np.float32).reshape(len(tile_rc), len(meta["classes"])),
            thresholds={k: float(v) for k, v in meta["thresholds"].items()},
            model=str(meta["model"]),
            engine=str(meta["engine"]),
            timings={k: float(v) for k, v in meta.get("timings", {}).items()},
            tissue_fraction=None if frac is None else np.asarray(frac, np.float32).reshape(-1),
            tissue_mask=None if mask is None else np.asarray(mask, np.bool_),
            tissue_downsample=None if tds is None else float(tds),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ProstateFastError(f"{path}: damaged score grid ({exc})") from exc


def load_score_grid(path: str | os.PathLike[str]) -> ScoreGrid:
    """Read a :class:`ScoreGrid` written by :meth:`ScoreGrid.save` (``.npz`` or ``.csv``).

    Raises
    ------
    ValueError
        A suffix other than .npz or .csv.
    ProstateFastError
        Missing, unreadable or damaged file (the message names it).
    """
    path = Path(path)
    kind = path.suffix.lower()
    if kind not in (".npz", ".csv"):
        raise ValueError(f"path must end in .npz or .csv, got {path}")
    if not path.is_file():
        raise ProstateFastError(f"{path}: no such file")
    try:
        if kind == ".npz":
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                tissue = {k: z[k] for k in ("tissue_fraction", "tissue_mask") if k in z.files}
                return _grid_from_meta(meta, z["tile_rc"], z["l0_xy"], z["prob"], path, tissue)
        text = path.read_text(encoding="utf-8")
        first, _, body = text.partition("\n")
        prefix = f"# {SCORE_FORMAT} "
        if not first.startswith(prefix):
            raise ProstateFastError(f"{path}: not a prostate-fast score grid CSV")
        meta = json.loads(first[len(prefix) :])
        _check_meta(meta, path)
        k = len(meta["classes"])
        width = 5 + k + (meta["version"] >= 2)  # version 2 added the tissue column
        if body.strip().count("\n") == 0:  # the header only: no tiles
            data = np.zeros((0, width))
        else:
            data = np.loadtxt(
                io.StringIO(body), delimiter=",", skiprows=1, ndmin=2, dtype=np.float64
            )
        if data.shape[1] != width:
            raise ProstateFastError(f"{path}: expected {width} columns, got {data.shape[1]}")
        rows = data[:, :4].astype(np.int64)
        share = data[:, 4 + k] if width > 5 + k else None
        tissue = {} if share is None or np.isnan(share).any() else {"tissue_fraction": share}
        return _grid_from_meta(meta, rows[:, :2], rows[:, 2:4], data[:, 4 : 4 + k], path, tissue)
    except ProstateFastError:
        raise
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as exc:
        raise ProstateFastError(f"{path}: damaged score grid ({exc})") from exc


def tissue_pixels(
    mask: np.ndarray, mask_downsample: float, downsample: float, window: tuple[int, int, int, int]
) -> np.ndarray:
    """(h, w) bool: which pixels of ``window`` = (x0, y0, w, h) at the tiling level (``downsample``
    level-0 pixels per pixel) the tissue ``mask`` (``mask_downsample`` level-0 pixels per mask
    pixel) covers, by the pixel centre's mask pixel (nearest neighbour; clipped at the edges)."""
    x0, y0, w, h = window
    rows, cols = mask.shape
    if rows == 0 or cols == 0:
        return np.zeros((h, w), np.bool_)
    scale = float(downsample) / float(mask_downsample)
    mc = np.floor((np.arange(x0, x0 + w) + 0.5) * scale).astype(np.int64).clip(0, cols - 1)
    mr = np.floor((np.arange(y0, y0 + h) + 0.5) * scale).astype(np.int64).clip(0, rows - 1)
    return mask[mr[:, None], mc[None, :]]


def decide(prob: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """(n,) int16 decided class of (n, C) probabilities at the (C - 1,) thresholds of the
    non-negative classes (the rule of the module docstring)."""
    pos = prob[:, 1:]
    passing = pos >= thresholds
    if pos.shape[1] > 1 and len(thresholds) and (thresholds == thresholds[0]).all():
        # one threshold for every positive class: the screening score (metrics.screening_score)
        total = np.clip(pos.sum(axis=1, dtype=np.float64), 0, 1) >= thresholds[0]
        passing = np.repeat(total[:, None], pos.shape[1], axis=1)
    best = np.argmax(np.where(passing, pos, -np.inf), axis=1) + 1
    return np.where(passing.any(axis=1), best, 0).astype(np.int16)


def check_threshold(key: str, value: Any) -> float:
    """``value`` as the float threshold of class ``key``, or ValueError unless it is in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"thresholds: {key!r} must be a number in [0, 1], got {value!r}")
    return float(value)


def merge_thresholds(
    base: Mapping[str, float], classes: tuple[str, ...], override: Mapping[str, float] | None
) -> dict[str, float]:
    """``base``'s threshold of every non-negative class of ``classes``, with ``override`` applied.

    Raises
    ------
    ValueError
        ``override`` names a class that is not a non-negative class, or a value outside [0, 1].
    """
    out = {c: float(base[c]) for c in classes[1:]}
    for key, value in (override or {}).items():
        if key not in classes[1:]:
            raise ValueError(
                f"thresholds: {key!r} is not a non-negative class of the model {classes[1:]}"
            )
        out[key] = check_threshold(key, value)
    return out
