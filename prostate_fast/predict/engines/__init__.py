"""Run a trained model on tiles with one of three engines.

:func:`load_model` reads the model folder once through :mod:`prostate_fast.model` (the owner of
``model.json`` and the network files), checks it whatever the engine, and returns a
:class:`Predictor` whose :meth:`~Predictor.predict_batch` maps uint8 RGB tiles ``(n, T, T, 3)``
to float32 class probabilities ``(n, n_classes)``:

* ``"gluon"`` (:mod:`.gluon`): ``mxnet.gluon.SymbolBlock`` on the requested context, hybridized
  with a static graph (and the MKLDNN backend on CPU when the wheel has it), batches padded to a
  fixed size.
* ``"native"`` (:mod:`.native`): the C++ engine ``prostate_fast._native.MxPredictor`` on MXNet's
  C predict API, with the ``libmxnet.so`` of the installed mxnet package loaded at run time (so
  the package builds without MXNet's headers and runs with CPU and CUDA wheels alike). It
  releases the GIL while it runs, so tile reading in another thread overlaps with inference.
* ``"onnx"`` (:mod:`.onnxrt`): the network exported to ONNX (:func:`export_onnx` in
  :mod:`.onnx_export`, done once and kept as ``model.onnx``) and run by ONNX Runtime: CPU, or
  CUDA with ``onnxruntime-gpu`` (the route to current GPUs, which MXNet's CUDA wheels cannot
  use). ``precision="int8"`` (:mod:`.int8`) runs it quantized statically, calibrated on the
  model's validation split once and refused when its validation AUC drops by more than 0.005.

:mod:`.base` holds what they share: :data:`ENGINES` (the engine names, defined once), the
:class:`Predictor` interface and the thread and device handling. The normalisation
(``model.json``'s ``normalisation.scale``, channel order, NHWC to NCHW) is done once in NumPy by
:meth:`Predictor.prepare`, identically for every engine, so the engines agree to float rounding
(about 1e-7 here). :mod:`.loader` holds :func:`load_model`.

Threads: MXNet's OpenMP thread count is fixed when MXNet loads. ``n_threads`` given before that is
applied (``OMP_NUM_THREADS``), otherwise every core is used, never MXNet's default of half the
cores; ONNX Runtime takes ``n_threads`` per session.
"""

from __future__ import annotations

from ...model import ModelInfo, read_model_info
from .base import ENGINES, PRECISIONS, Engine, Precision, Predictor
from .gluon import GluonPredictor
from .loader import load_model
from .native import NativePredictor
from .onnx_export import export_onnx
from .onnxrt import OnnxPredictor

__all__ = [
    "ENGINES",
    "Engine",
    "GluonPredictor",
    "ModelInfo",
    "NativePredictor",
    "OnnxPredictor",
    "PRECISIONS",
    "Precision",
    "Predictor",
    "export_onnx",
    "load_model",
    "read_model_info",
]
