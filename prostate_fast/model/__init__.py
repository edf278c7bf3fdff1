"""The model folder and the networks: the one owner of what training writes and prediction reads.

A model folder holds::

    model-symbol.json    the network, softmax output, input "data" (float32 NCHW, normalised)
    model-NNNN.params    its weights at epoch NNNN
    model.json           classes, colours, tile size, scale, normalisation, thresholds, ...
    model.onnx           optional: the ONNX export, cached by the onnx engine

Modules:

* :mod:`~prostate_fast.model.info`: ``MODEL_FORMAT`` / ``MODEL_VERSION``, :class:`ModelInfo`
  and :func:`read_model_info`, the one reader (no MXNet needed);
* :mod:`~prostate_fast.model.domain`: :class:`StainDomain`, the stain statistics of the
  training tissue that ``model.json`` records, and the test that a slide lies inside them;
* :mod:`~prostate_fast.model.write`: :func:`write_model` (export a trained network and write
  ``model.json``; training and the test fixtures use it) and :func:`write_model_json`;
* :mod:`~prostate_fast.model.load`: :func:`load_network`, the one Gluon loader
  (``SymbolBlock`` on a context; the gluon engine and evaluation use it), and
  :func:`check_network`, which checks the network files against ``model.json``;
* :mod:`~prostate_fast.model.networks`: the study CNN and the ResNets that training builds.

Engines that run a model on tiles live in :mod:`prostate_fast.predict.engines`. MXNet is imported
lazily, inside the functions that need it.
"""

from __future__ import annotations

from .domain import StainDomain, domain_problem, measure_domain
from .info import DEFAULT_THRESHOLD, MODEL_FORMAT, MODEL_VERSION, ModelInfo, read_model_info
from .load import check_network, load_network
from .networks import NETWORKS, StudyConfig, build_network, network_spec, with_softmax
from .write import write_model, write_model_json

__all__ = [
    "DEFAULT_THRESHOLD",
    "MODEL_FORMAT",
    "MODEL_VERSION",
    "NETWORKS",
    "ModelInfo",
    "StainDomain",
    "StudyConfig",
    "build_network",
    "check_network",
    "domain_problem",
    "load_network",
    "measure_domain",
    "network_spec",
    "read_model_info",
    "with_softmax",
    "write_model",
    "write_model_json",
]
