"""Train a network on a packed dataset and export it as a model folder.

* :mod:`~prostate_fast.train.loop`: :func:`train` (epochs, checkpoints, resume, epoch selection
  on the validation split, the export through :func:`prostate_fast.model.write_model`);
* :mod:`~prostate_fast.train.io`: the reading side, :func:`predict_split` (a network over one
  split in record order, used by training and evaluation) and :func:`load_exported`;
* :mod:`~prostate_fast.train.distributed`: ``--kvstore dist_sync`` roles and launcher;
* :mod:`~prostate_fast.train.check`: ``prostate-fast check``, the study's MNIST sanity check.
"""

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
