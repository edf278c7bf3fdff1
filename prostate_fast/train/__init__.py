"""TODO docstring."""

from __future__ import annotations

from .loop import (
    SELECT_DEFAULT,
    TrainResult,
    load_exported,
    predict_split,
    train,
)

__all__ = [
    "SELECT_DEFAULT",
    "TrainResult",
    "load_exported",
    "predict_split",
    "train",
]
