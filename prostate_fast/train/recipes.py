"""Training recipes: named sets of settings that :func:`prostate_fast.train.train` starts from.

Any setting given explicitly (a keyword of ``train``, a flag of ``prostate-fast train``) overrides
the recipe's value; ``model.json`` records the recipe and every resolved setting.

``"default"`` is the recipe that learns on real tissue, measured on real H&E
(``tools/real_tissue_cv.py``, README "Training on real tissue"):

- ``resnet10``: ResNet-10 v1 with batch norm. Batch norm keeps every layer's input centred and
  scaled whatever the stain, so SGD at lr 0.05 is stable; it learns texture (nuclei, gland shape)
  from a few hundred tiles. Pick ``--network study`` to reproduce the study's architecture.
- per-channel input standardisation with the training split's mean and standard deviation, as
  the network's first layer (so every engine applies it; stored in the exported weights and in
  ``model.json``);
- initialisation suited to each activation (``"scaled"``: He for ReLU, 4x Glorot for sigmoid);
- SGD lr 0.05, momentum 0.9, weight decay 1e-4, batch 32, the learning rate rising linearly from
  0 over the first epoch (warm-up: on a small split a full step at once can kill a fresh batch-norm
  network, its output constant from then on), divided by 10 at 60 % and 85 % of the epochs,
  30 epochs;
- class weights from the training split's class counts (every tile kept; no class discarded);
- random flips and 90-degree turns (an H&E field has no orientation) and colour jitter: each
  stain's concentration in HED space, brightness and contrast, per tile (``augment="colour"``,
  :func:`prostate_fast.stain.augment_colour`), so the network does not learn one lab's stain;
- the stored threshold reaches 95 % tile sensitivity on the calibration (val) split. A tile is
  cancer from 5 % marked, so the tiles missed at that point are mostly the edges of a focus whose
  other tiles are flagged: slide sensitivity stays near 100 % while far fewer benign tiles are
  flagged than at 99 % (on real tissue, 99 % tile sensitivity flagged most benign tiles);
- the exported epoch chosen by validation AUC among epochs for which some threshold gives a
  sensitivity and specificity both at least 0.5 (:func:`prostate_fast.metrics.both_rates`: a
  constant model has 0 and is never chosen; training fails with a clear error when no epoch
  qualifies).

``"study"`` reproduces the 2018 study's settings exactly: its CNN (conv, pool, conv, pool, three
sigmoid dense layers), input / 255 only, MXNet's Xavier initialisation, SGD lr 0.001, momentum 0.8,
no weight decay, batch 32, 100 epochs, no class weights, no augmentation, the epoch with the best
validation accuracy (and, as before this recipe existed, a threshold for 99 % sensitivity). On real tissue it may not learn at all in a short run (the loss stays at
ln 2): use it for comparison with the paper, not for screening.
"""

from __future__ import annotations

from typing import Any

__all__ = ["RECIPES", "RECIPE_DEFAULT", "resolve_recipe"]

RECIPE_DEFAULT = "default"

RECIPES: dict[str, dict[str, Any]] = {
    "default": {
        "network": "resnet10",
        "epochs": 30,
        "batch_size": 32,
        "lr": 0.05,
        "momentum": 0.9,
        "wd": 1e-4,
        "lr_steps": "60%,85%",
        "lr_factor": 0.1,
        "class_weights": "dataset",
        "select": "auc",
        "select_floor": 0.5,
        "augment": "colour",
        "standardise": True,
        "init": "scaled",
        "warmup": 1.0,
        "optimizer": "sgd",
        "target_sensitivity": 0.95,
    },
    "study": {
        "network": "study",
        "epochs": 100,
        "batch_size": 32,
        "lr": 0.001,
        "momentum": 0.8,
        "wd": 0.0,
        "lr_steps": None,
        "lr_factor": 0.1,
        "class_weights": None,
        "select": "accuracy",
        "select_floor": 0.0,
        "augment": False,
        "standardise": False,
        "init": "xavier",
        "warmup": 0.0,
        "optimizer": "sgd",
        "target_sensitivity": 0.99,
    },
}
"""Settings of each recipe (``lr_steps`` may be given as percentages of the epochs)."""


def _steps(spec: Any, epochs: int) -> list[int]:
    """Epoch numbers (1-based) of ``spec``: ints, or ``"P%,Q%"`` shares of ``epochs``."""
    if spec is None:
        return []
    if isinstance(spec, str):
        out = []
        for part in (p.strip() for p in spec.split(",") if p.strip()):
            if not part.endswith("%"):
                raise ValueError(f"lr_steps must be epoch numbers or percentages, got {spec!r}")
            out.append(max(2, round(epochs * float(part[:-1]) / 100) + 1))
        return sorted({s for s in out if s <= epochs})
    return sorted(int(s) for s in spec)


def resolve_recipe(recipe: str, **given: Any) -> dict[str, Any]:
    """The settings of ``recipe`` with every ``given`` value that is not None put over them.

    ``lr_steps`` is resolved to epoch numbers against the final ``epochs``.

    Raises
    ------
    ValueError
        Unknown recipe or setting.
    """
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {', '.join(RECIPES)}, got {recipe!r}")
    unknown = set(given) - set(RECIPES[recipe])
    if unknown:
        raise ValueError(f"unknown recipe settings: {', '.join(sorted(unknown))}")
    out = {**RECIPES[recipe], **{k: v for k, v in given.items() if v is not None}}
    epochs = out["epochs"]
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs <= 0:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    out["lr_steps"] = _steps(out["lr_steps"], epochs)
    out["recipe"] = recipe
    return out
