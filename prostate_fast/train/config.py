"""What a training is asked and where it writes: settings, class weights, the working folder.

Internal to :mod:`prostate_fast.train`: :func:`prostate_fast.train.train` checks its arguments into
one :class:`_Config`, resolves the loss weights (:func:`_class_weights`), records the settings saved
in ``state.json`` and ``model.json`` (:func:`_settings`), and builds ``MODEL_DIR`` in
``MODEL_DIR.partial`` (:func:`_prepare_dir`, which also applies the resume rules: the settings of
``_RESUME_KEYS`` must match the saved ones) before renaming it (:func:`_finish_dir`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._outputs import check_replaceable, remove_output, temp_path
from ..dataset.records import check_augment
from ..errors import ModelError
from ..metrics import check_select

_KVSTORES = ("local", "device", "dist_sync", "dist_device_sync", "dist_async")
# settings that must not change when resuming (epochs, ctx, kvstore, threads may)
_RESUME_KEYS = (
    "architecture",
    "batch_size",
    "lr",
    "momentum",
    "wd",
    "lr_steps",
    "lr_factor",
    "class_weights",
    "seed",
    "select",
    "select_floor",
    "augment",
    "init",
    "warmup",
    "optimizer",
    "recipe",
    "classes",
)


@dataclass(frozen=True)
class _Config:
    """:func:`train`'s settings, checked on creation (``ValueError`` naming the argument)."""

    recipe: str
    epochs: int
    batch_size: int
    lr: float
    momentum: float
    wd: float
    lr_factor: float
    seed: int
    kvstore: str
    select: str
    select_floor: float
    target_sensitivity: float
    augment: bool | str
    init: str
    warmup: float
    optimizer: str
    n_threads: int | None
    progress: bool
    log_interval: int

    def __post_init__(self) -> None:
        for name, v in (("epochs", self.epochs), ("batch_size", self.batch_size)):
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr!r}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if not self.wd >= 0:
            raise ValueError(f"wd must be >= 0, got {self.wd!r}")
        check_select(self.select)
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be sgd or adam, got {self.optimizer!r}")
        if not 0.0 <= self.warmup <= self.epochs:
            raise ValueError(f"warmup must be in [0, epochs], got {self.warmup!r}")
        if not 0.0 <= self.select_floor <= 1.0:
            raise ValueError(f"select_floor must be in [0, 1], got {self.select_floor!r}")
        if not 0.0 < self.lr_factor <= math.inf:
            raise ValueError(f"lr_factor out of range, got {self.lr_factor!r}")
        if not 0.0 < self.target_sensitivity <= 1.0:
            raise ValueError(f"target_sensitivity out of range, got {self.target_sensitivity!r}")
        v = self.log_interval
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"log_interval must be a positive integer, got {v!r}")
        object.__setattr__(self, "augment", check_augment(self.augment))
        if self.kvstore not in _KVSTORES:
            raise ValueError(f"kvstore must be one of {', '.join(_KVSTORES)}, got {self.kvstore!r}")


def _class_weights(spec: Any, info: Any) -> list[float]:
    n_classes = len(info.classes)
    if spec is None or spec == "none":
        return [1.0] * n_classes
    if isinstance(spec, str):
        if spec != "dataset":
            raise ValueError(f"class_weights must be 'none', 'dataset' or numbers, got {spec!r}")
        if info.class_weights:
            return [float(w) for w in info.class_weights]
        counts = np.maximum(np.asarray(info.split("train").per_class, float), 1)
        return [float(w) for w in counts.sum() / (n_classes * counts)]
    weights = [float(w) for w in spec]
    if len(weights) != n_classes or any(not w > 0 for w in weights):
        raise ValueError(f"class_weights must be {n_classes} positive numbers, got {spec!r}")
    return weights


def _settings(
    cfg: _Config,
    info: Any,
    arch: dict[str, Any],
    weights: list[float],
    steps: list[int],
    ctxs: list[Any],
    mx_version: str,
) -> dict[str, Any]:
    """The settings saved in state.json and model.json (resume compares ``_RESUME_KEYS``)."""
    return {
        "dataset": str(info.path.resolve()),
        "recipe": cfg.recipe,
        "architecture": arch,
        "classes": list(info.classes),
        "batch_size": cfg.batch_size,
        "lr": cfg.lr,
        "momentum": cfg.momentum,
        "wd": cfg.wd,
        "lr_steps": steps,
        "lr_factor": cfg.lr_factor,
        "class_weights": weights,
        "seed": cfg.seed,
        "select": cfg.select,
        "select_floor": cfg.select_floor,
        "augment": True if cfg.augment == "flips" else cfg.augment,  # True: as recorded before
        "optimizer": cfg.optimizer,
        "init": cfg.init,
        "warmup": cfg.warmup,
        "epochs": cfg.epochs,
        "ctx": [str(c) for c in ctxs],
        "kvstore": cfg.kvstore,
        "mxnet": mx_version,
        "target_sensitivity": cfg.target_sensitivity,
    }


def _prepare_dir(
    final: Path, resume: bool, overwrite: bool, settings: dict[str, Any], epochs: int
) -> tuple[Path, dict[str, Any] | None, bool]:
    """Return the working folder ``final.partial``, the saved state (resume) and whether the
    folder was made by this call (so that a failure before the first epoch can remove it)."""
    part = final.with_name(final.name + ".partial")
    if resume:
        source = next((d for d in (part, final) if (d / "state.json").is_file()), None)
        if source is None:
            if part.is_dir():
                return part, None, False  # interrupted before the first checkpoint
            raise ModelError(f"{final}: nothing to resume (no {part.name} and no finished model)")
        try:
            state = json.loads((source / "state.json").read_text())
            saved, done = state["settings"], len(state["history"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelError(
                f"{source / 'state.json'}: unreadable training state ({exc})"
            ) from None
        now = json.loads(json.dumps(settings, default=str))  # tuples -> lists, as saved
        changed = [k for k in _RESUME_KEYS if saved.get(k) != now[k]]
        if changed:
            raise ModelError(
                f"{source / 'state.json'}: cannot resume with different {', '.join(changed)} "
                f"(saved {[saved.get(k) for k in changed]})"
            )
        if done >= epochs:
            raise ModelError(f"{source}: already trained for {done} epochs; ask for more")
        if source == final:
            shutil.copytree(final, part)  # continue a finished run for more epochs
        return part, state, source == final
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final}: already exists; use --overwrite or --resume")
    check_replaceable(final, overwrite=overwrite, folder=True)  # ours, never the dataset
    if part.exists():
        if not overwrite:
            raise FileExistsError(
                f"{part}: an interrupted training is there; use --resume or --overwrite"
            )
        check_replaceable(part, overwrite=overwrite, folder=True)
        remove_output(part)
    part.mkdir(parents=True)
    return part, None, True


def _finish_dir(part: Path, final: Path) -> None:
    """Rename the finished ``part`` to ``final``, replacing an existing ``final`` (checked ours
    by :func:`_prepare_dir`); the old one is moved aside under a unique temporary name."""
    old = temp_path(final, "old")
    if final.exists():
        os.replace(final, old)
    os.replace(part, final)
    if old.exists():
        remove_output(old)
