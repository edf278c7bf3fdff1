"""Predict: apply a trained model to a whole slide, tile by tile.

* :mod:`.core`: :func:`predict_slide` (tissue, tile grid at the model's scale, batched inference
  with reading overlapped);
* :mod:`.scoregrid`: :class:`ScoreGrid`, the per-tile probabilities it returns, and its files
  (:func:`load_score_grid`);
* :mod:`.engines`: :func:`load_model` and the engines (:data:`ENGINES`) behind :class:`Predictor`.
"""

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
