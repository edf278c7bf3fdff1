"""Apply a trained model to slides: engines, per-tile probabilities, the ScoreGrid artefact.

* :mod:`.core`: :func:`predict_slide` (tissue, tile grid at the model's scale, batched inference
  with reading overlapped);
* :mod:`.scoregrid`: :class:`ScoreGrid`, the per-tile probabilities it returns, and its files
  (:func:`load_score_grid`);
* :mod:`.engines`: :func:`load_model` and the three engines (gluon, native, onnx) behind one
  :class:`Predictor` interface, :data:`ENGINES` (their names) and :func:`export_onnx`.

The model folder itself (:class:`ModelInfo`, :func:`read_model_info`) belongs to
:mod:`prostate_fast.model`; the names are re-exported here for the public import path.
"""

from __future__ import annotations

from ..model import ModelInfo, read_model_info
from .core import predict_slide
from .engines import ENGINES, Predictor, export_onnx, load_model
from .scoregrid import ScoreGrid, load_score_grid

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
