"""TODO docstring."""

from __future__ import annotations

from .core import (
    ENGINES,
    ModelInfo,
    Predictor,
    ScoreGrid,
    export_onnx,
    load_model,
    load_score_grid,
    predict_slide,
    read_model_info,
)

__all__ = [
    "ENGINES",
    "ModelInfo",
    "Predictor",
    "ScoreGrid",
    "export_onnx",
    "load_model",
    "load_score_grid",
    "predict_slide",
    "read_model_info",
]
