"""Train stage: fit a network on a packed dataset, select an epoch on val, export the model.

* :mod:`.loop`: :func:`train` (the training loop, resume, epoch selection, the export through
  :func:`prostate_fast.model.write_model`) and :class:`TrainResult`;
* :mod:`.recipes`: the named settings ``train`` starts from (``"default"``, which learns on real
  tissue, and ``"study"``, the 2018 study exactly);
* :mod:`.logs`: the per-epoch ``log.csv`` and ``accuracy.png``;
* :mod:`.config`: what a training is asked and where it writes (settings, class weights, the
  working folder and the resume rules);
* :mod:`.io`: the reading side (dataset checks, record batches, :func:`predict_split`,
  :func:`load_exported`), also used by evaluation;
* :mod:`.reader`: :class:`~.reader.BatchReader`, the training batches decoded and augmented by
  ``n_threads`` threads ahead of the step; :mod:`.epoch`: the training step over one epoch;
* :mod:`.throughput`: :func:`~.throughput.measure_throughput`, training samples/s against the
  compute limit (the same step on batches held in memory), in one run;
* :mod:`.distributed`: MXNet's parameter-server roles and the local ``dist_sync`` launcher;
* :mod:`.check`: ``prostate-fast check``, the study's MLP sanity check and MXNet's build.

Epoch selection and the stored threshold come from :mod:`prostate_fast.metrics`, shared with
evaluation; this package never imports a later stage. MXNet is imported inside the functions.
"""

from __future__ import annotations

from .loop import (
    TrainResult,
    load_exported,
    predict_split,
    train,
)
from .recipes import RECIPE_DEFAULT, RECIPES, resolve_recipe

__all__ = [
    "RECIPES",
    "RECIPE_DEFAULT",
    "TrainResult",
    "load_exported",
    "predict_split",
    "resolve_recipe",
    "train",
]
