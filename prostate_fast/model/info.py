"""``model.json``: the format, its version, and :func:`read_model_info`, the one reader.

A model folder holds ``model-symbol.json`` (the network, softmax output), ``model-NNNN.params``
(its weights at the recorded epoch), ``model.json`` (what prediction needs: classes, colours,
tile size, scale, normalisation, thresholds, the stain domain of the training tissue, the stain normalisation target) and
optionally ``model.onnx`` (a cached export). :func:`read_model_info` checks ``model.json`` and the
presence of the two network files without MXNet and returns a frozen :class:`ModelInfo`;
:mod:`prostate_fast.model.write` writes the folder.

Every number ``model.json`` carries is checked: finite and in its range (:data:`LIMITS`), and
JSON's non-standard ``Infinity``/``NaN`` literals (or a number too large for a float) anywhere in
the file are refused, so a damaged or hand-edited file fails instead of scoring every tile alike.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ModelError
from ..stain import StainFit
from .domain import StainDomain

__all__ = [
    "DEFAULT_THRESHOLD",
    "LIMITS",
    "MODEL_FORMAT",
    "MODEL_VERSION",
    "ModelInfo",
    "read_model_info",
]

MODEL_FORMAT = "prostate-fast-model"
"""The ``format`` field of every ``model.json``."""
MODEL_VERSION = 1
"""The ``version`` field this code reads and writes."""
DEFAULT_THRESHOLD = 0.5
"""Decision threshold of a class that ``model.json`` gives none."""
LIMITS = {
    "tile_size": (1, 4096),
    "magnification": (0.1, 400.0),
    "mpp": (0.01, 1000.0),
    "downsample": (1e-3, 1e6),
    "scale": (1e-6, 1.0),
    "epoch": (0, 10**6),
}
"""Inclusive range of each number of ``model.json`` (``scale``: ``normalisation.scale``)."""


@dataclass(frozen=True)
class ModelInfo:
    """What ``model.json`` says about a model, checked, with the paths of its files.

    Attributes
    ----------
    model_dir : pathlib.Path
    symbol_file, params_file : pathlib.Path
        ``model-symbol.json`` and the ``model-NNNN.params`` of the recorded epoch.
    classes : tuple of str
        Class names; index 0 is the negative class (benign).
    colours : dict
        Class name to (R, G, B) overlay colour.
    tile_size : int
        Side of the square input tiles, in pixels at the model's scale.
    magnification, mpp : float or None
        The scale the model was trained at (objective power; microns per tile pixel).
    scale : float
        Factor applied to the uint8 pixels before the network (``normalisation.scale``).
    channel_order : str
        ``"RGB"`` or ``"BGR"``: channel order the network expects.
    input_name : str
        Name of the network's input variable.
    thresholds : dict
        Decision threshold per non-negative class (probability), from ``model.json``.
    epoch : int or None
    meta : dict
        The whole ``model.json``.
    domain : StainDomain or None
        What the training tissue looked like (``"domain"``); None for a model written before
        the domain was recorded (prediction then skips the domain check).
    stain : StainFit or None
        The stain normalisation target (``"stain"``, :mod:`prostate_fast.stain`): prediction
        fits each slide's stains and maps them to it before the network; None: tiles are
        used as read.
    """

    model_dir: Path
    symbol_file: Path
    params_file: Path
    classes: tuple[str, ...]
    colours: dict[str, tuple[int, int, int]]
    tile_size: int
    magnification: float | None
    mpp: float | None
    scale: float
    channel_order: str
    input_name: str
    thresholds: dict[str, float]
    epoch: int | None
    meta: dict[str, Any] = field(repr=False)
    domain: StainDomain | None = None
    stain: StainFit | None = None

    @property
    def n_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    @property
    def onnx_file(self) -> Path:
        """Where the ONNX export lives (``model.onnx``)."""
        return self.model_dir / "model.onnx"


def read_model_info(model_dir: str | os.PathLike[str]) -> ModelInfo:
    """Read and check ``model.json`` of a model folder (no MXNet needed).

    Parameters
    ----------
    model_dir : path
        Folder written by training (``model-symbol.json``, ``model-NNNN.params``, ``model.json``).

    Returns
    -------
    ModelInfo

    Raises
    ------
    ModelError
        Missing folder or file, unreadable or malformed ``model.json`` (the message names the
        file and the field).
    """
    d = Path(model_dir)
    path = d / "model.json"
    meta = _read_meta(d, path)
    classes = _classes(meta, path)
    tile = _number(meta, "tile_size", path, integer=True)
    magnification = _number(meta, "magnification", path, optional=True)
    mpp = _number(meta, "mpp", path, optional=True)
    _number(meta, "downsample", path, optional=True)
    order, scale, name = _input_format(meta, path)
    epoch = _number(meta, "epoch", path, optional=True, integer=True)
    colours = _colours(meta.get("colours") or {}, path)
    domain = _record(meta, "domain", path, StainDomain.from_json)
    stain = _record(meta, "stain", path, StainFit.from_json)
    symbol_file = d / "model-symbol.json"
    if not symbol_file.is_file():
        raise ModelError(f"{symbol_file}: missing")
    params_file = _params_file(d, epoch)
    if not params_file.is_file():
        raise ModelError(f"{params_file}: missing (model.json names epoch {epoch})")
    return ModelInfo(
        model_dir=d,
        symbol_file=symbol_file,
        params_file=params_file,
        classes=classes,
        colours=colours,
        tile_size=int(tile),  # type: ignore[arg-type]
        magnification=magnification,
        mpp=mpp,
        scale=scale,
        channel_order=order,
        input_name=name,
        thresholds=_thresholds(meta.get("threshold"), classes, path),
        epoch=None if epoch is None else int(epoch),
        meta=meta,
        domain=domain,
        stain=stain,
    )


def _record(meta: dict[str, Any], key: str, path: Path, read: Any) -> Any:
    """``read(meta[key], path)`` (a ``from_json``), None when absent; its ValueError a ModelError."""
    if meta.get(key) is None:
        return None
    try:
        return read(meta[key], str(path))
    except ValueError as exc:
        raise ModelError(str(exc)) from None


def _read_meta(d: Path, path: Path) -> dict[str, Any]:
    """``model.json`` parsed, its format and version checked."""
    if not d.is_dir():
        raise ModelError(f"{d}: no such model folder")
    if not path.is_file():
        raise ModelError(f"{path}: missing; is {d} a model folder written by prostate-fast train?")
    try:
        meta = json.loads(
            path.read_text(encoding="utf-8"),
            parse_constant=_refuse_constant,
            parse_float=_finite_float,
        )
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelError(f"{path}: not readable JSON ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != MODEL_FORMAT:
        raise ModelError(
            f"{path}: not a prostate-fast model description (format != {MODEL_FORMAT!r})"
        )
    if meta.get("version") != MODEL_VERSION:
        raise ModelError(f"{path}: unsupported model version {meta.get('version')!r}")
    return meta


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} does not fit a float")
    return value


def _classes(meta: dict[str, Any], path: Path) -> tuple[str, ...]:
    classes = meta.get("classes")
    if (
        not isinstance(classes, list)
        or len(classes) < 2
        or not all(isinstance(c, str) and c for c in classes)
        or len(set(classes)) != len(classes)
    ):
        raise ModelError(f"{path}: 'classes' must list at least 2 distinct names, got {classes!r}")
    return tuple(classes)


def _input_format(meta: dict[str, Any], path: Path) -> tuple[str, float, str]:
    """(channel order, normalisation scale, input name); the layout must be NCHW."""
    layout = meta.get("layout", "NCHW")
    if layout != "NCHW":
        raise ModelError(f"{path}: layout {layout!r} is not supported (NCHW only)")
    order = meta.get("channel_order", "RGB")
    if order not in ("RGB", "BGR"):
        raise ModelError(f"{path}: channel_order must be 'RGB' or 'BGR', got {order!r}")
    norm = meta.get("normalisation", {"scale": 1.0})
    if not isinstance(norm, dict):
        raise ModelError(f"{path}: 'normalisation' must be an object, got {norm!r}")
    scale = _number(norm, "scale", path)
    name = meta.get("input_name", "data")
    if not isinstance(name, str) or not name:
        raise ModelError(f"{path}: 'input_name' must be a name, got {name!r}")
    return order, float(scale), name  # type: ignore[arg-type]


def _number(
    meta: dict[str, Any], key: str, path: Path, *, optional: bool = False, integer: bool = False
) -> float | None:
    """``meta[key]`` checked: a finite number (an integer when ``integer``) in ``LIMITS[key]``."""
    value = meta.get(key)
    if value is None and optional:
        return None
    lo, hi = LIMITS[key]
    kind = "an integer" if integer else "a number"
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok or not lo <= value <= hi:  # NaN fails the range too
        raise ModelError(f"{path}: {key!r} must be {kind} in [{lo:g}, {hi:g}], got {value!r}")
    return value


def _colours(raw: dict[str, Any], path: Path) -> dict[str, tuple[int, int, int]]:
    colours: dict[str, tuple[int, int, int]] = {}
    for cname, rgb in raw.items():
        if (
            not isinstance(rgb, list | tuple)
            or len(rgb) != 3
            or not all(isinstance(v, int) and 0 <= v <= 255 for v in rgb)
        ):
            raise ModelError(f"{path}: colour of {cname!r} must be [R, G, B] in 0-255, got {rgb!r}")
        colours[str(cname)] = (int(rgb[0]), int(rgb[1]), int(rgb[2]))
    return colours


def _thresholds(raw: Any, classes: tuple[str, ...], path: Path) -> dict[str, float]:
    """Per non-negative class threshold; a combined key ``"a+b"`` applies to a and b."""
    out: dict[str, float] = {}
    combined: dict[str, float] = {}
    if raw is None:
        raw = {}
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        raw = {c: raw for c in classes[1:]}
    if not isinstance(raw, dict):
        raise ModelError(f"{path}: 'threshold' must be an object, got {raw!r}")
    for key, value in raw.items():
        parts = str(key).split("+")
        if not all(p in classes[1:] for p in parts):
            continue  # target_sensitivity, source and other notes
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise ModelError(f"{path}: threshold of {key!r} must be in [0, 1], got {value!r}")
        for p in parts:
            (out if len(parts) == 1 else combined)[p] = float(value)
    return {c: out.get(c, combined.get(c, DEFAULT_THRESHOLD)) for c in classes[1:]}


def _params_file(model_dir: Path, epoch: int | None) -> Path:
    if epoch is not None:
        return model_dir / f"model-{epoch:04d}.params"
    found = sorted(model_dir.glob("model-[0-9][0-9][0-9][0-9].params"))
    if not found:
        raise ModelError(f"{model_dir}: no model-NNNN.params file")
    return found[-1]
