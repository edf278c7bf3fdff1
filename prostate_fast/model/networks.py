"""The networks that ``prostate_fast.train`` can train, built by name.

``"study"`` (the default) is the 2018 study's CNN::

    input (N, 3, T, T) float32 RGB, already scaled by 1/255 OUTSIDE the network
    Conv2D(32, 5x5, relu) -> MaxPool(2x2) -> Conv2D(64, 5x5, relu) -> MaxPool(2x2) -> Flatten
    Dense(256, sigmoid) -> Dense(128, sigmoid) -> Dense(64, sigmoid) -> Dense(N classes)
    softmax over the N classes (exported network and prediction; training uses the logits)

The study describes "input / 255, convolution, max-pooling, convolution, max-pooling, flatten, three
dense layers with sigmoid, softmax over classes" without every count; the filter and unit counts
above are our documented choice, all configurable through :class:`StudyConfig`. Its "input / 255"
is the normalisation step that the dataset loader (training) and prediction apply from the
dataset's / model's ``"normalisation"`` record, so the exported symbol takes scaled float input and a
model can never be applied at the wrong scale. At T = 128 the flatten layer has
29 x 29 x 64 = 53,824 values and the network about 13.9 M parameters (almost all in the first dense
layer).

Other names: ``"resnet18"`` (Gluon model zoo ResNet-18 v1, no pretrained weights) and
``"resnet10"`` (the same with one basic block per stage), both with N outputs.

Every network is a Gluon ``HybridBlock`` that returns logits; :func:`with_softmax` wraps it for
export so that every engine (Gluon, Module, C predict API, ONNX) returns probabilities. MXNet is
imported lazily, inside the functions, through :func:`prostate_fast._mx.import_mxnet`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from functools import cache
from typing import Any

import numpy as np

from .._mx import import_mxnet

__all__ = [
    "INITIALISERS",
    "NETWORKS",
    "StudyConfig",
    "build_network",
    "initializer",
    "network_spec",
    "with_softmax",
]

NETWORKS = ("study", "resnet10", "resnet18")
"""Names accepted by :func:`build_network`."""

INITIALISERS = ("xavier", "scaled")
"""Weight initialisations (:func:`initializer`): ``"xavier"`` is MXNet's ``Xavier()`` for every
weight (Glorot uniform, what the study's MXNet code used); ``"scaled"`` gives each layer the
variance its activation needs: He (Kaiming) normal for ReLU convolutions, Glorot uniform times 4
for sigmoid dense layers (sigmoid's slope at 0 is 1/4, so Glorot's tanh-derived range is 4x too
small: the layers start almost linear and their gradients vanish through three of them), Glorot
for the output layer. Batch-norm parameters keep their own (ones and zeros) in both."""


@dataclass(frozen=True)
class StudyConfig:
    """Layer sizes of the study's CNN (defaults are our documented reading of the study).

    Attributes
    ----------
    conv_filters : tuple of int
        Filters of the two convolutions (32, 64).
    conv_kernel : int
        Square kernel size of both convolutions (5), stride 1, no padding, ReLU.
    pool : int
        Max-pooling window and stride after each convolution (2).
    dense_units : tuple of int
        Units of the three sigmoid dense layers (256, 128, 64).
    """

    conv_filters: tuple[int, ...] = (32, 64)
    conv_kernel: int = 5
    pool: int = 2
    dense_units: tuple[int, ...] = field(default=(256, 128, 64))

    def __post_init__(self) -> None:
        for name in ("conv_filters", "dense_units"):
            value = tuple(getattr(self, name))
            if not value or any(not isinstance(v, int) or v <= 0 for v in value):
                raise ValueError(f"{name} must be positive integers, got {value!r}")
            object.__setattr__(self, name, value)
        for name in ("conv_kernel", "pool"):
            v = getattr(self, name)
            if not isinstance(v, int) or v <= 0:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")

    def feature_size(self, tile_size: int) -> int:
        """Side of the last pooled feature map for a ``tile_size`` input (0: input too small)."""
        side = tile_size
        for _ in self.conv_filters:
            side = (side - self.conv_kernel + 1) // self.pool
        return max(side, 0)


@cache
def _classes() -> dict[str, type]:
    """Define the HybridBlock classes once MXNet is imported (keeps this module import light)."""
    mx = import_mxnet()
    nn = mx.gluon.nn

    class StudyCNN(mx.gluon.HybridBlock):
        """The 2018 study's CNN (see the module docstring); returns logits."""

        def __init__(self, n_classes: int, config: StudyConfig, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            with self.name_scope():
                self.features = nn.HybridSequential(prefix="features_")
                with self.features.name_scope():
                    for filters in config.conv_filters:
                        self.features.add(
                            nn.Conv2D(filters, config.conv_kernel, activation="relu"),
                            nn.MaxPool2D(pool_size=config.pool, strides=config.pool),
                        )
                    self.features.add(nn.Flatten())
                    for units in config.dense_units:
                        self.features.add(nn.Dense(units, activation="sigmoid"))
                self.output = nn.Dense(n_classes, prefix="output_")

        def hybrid_forward(self, F: Any, x: Any) -> Any:  # noqa: N803 - MXNet's name
            return self.output(self.features(x))

    class Softmax(mx.gluon.HybridBlock):
        """Wrap a logit network so that its output is softmax probabilities."""

        def __init__(self, body: Any, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            with self.name_scope():
                self.body = body

        def hybrid_forward(self, F: Any, x: Any) -> Any:  # noqa: N803 - MXNet's name
            return F.softmax(self.body(x), axis=-1)

    class Standardised(mx.gluon.HybridBlock):
        """``body((x - mean) / std)`` per channel, with ``mean`` and ``1 / std`` fixed
        parameters (measured on the training split; exported with the weights, never trained)."""

        def __init__(self, body: Any, mean: Any, std: Any, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.body = body
            with self.name_scope():
                # fixed, untrained parameters (not Gluon's Constant, whose symbol attribute holds
                # a memory address, so that the exported symbol is the same in every run)
                for name, value in (("mean", mean), ("inv_std", [1.0 / v for v in std])):
                    arr = np.asarray(value, np.float32).reshape(1, 3, 1, 1)
                    param = self.params.get(
                        name,
                        shape=arr.shape,
                        init=mx.init.Constant(arr),
                        grad_req="null",
                        differentiable=False,
                    )
                    setattr(self, name, param)

        def hybrid_forward(self, F: Any, x: Any, mean: Any, inv_std: Any) -> Any:  # noqa: N803
            return self.body(F.broadcast_mul(F.broadcast_sub(x, mean), inv_std))

    class PerLayer(mx.init.Initializer):
        """``"scaled"`` initialisation: each weight by its layer's activation (INITIALISERS)."""

        def __init__(self) -> None:
            super().__init__()
            self._sigmoid = mx.init.Xavier(rnd_type="uniform", factor_type="avg", magnitude=48)
            self._linear = mx.init.Xavier()
            self._relu = mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2)

        def _init_weight(self, name: Any, arr: Any) -> None:
            name = str(name)
            if "features_dense" in name:  # the study CNN's sigmoid layers
                init = self._sigmoid
            elif "dense" in name or "output" in name:  # a network's output layer
                init = self._linear
            else:  # convolutions, all followed by ReLU
                init = self._relu
            init._init_weight(name, arr)

    return {
        "StudyCNN": StudyCNN,
        "Softmax": Softmax,
        "Standardised": Standardised,
        "PerLayer": PerLayer,
    }


def _check_standardise(standardise: Any) -> dict[str, list[float]] | None:
    if standardise is None:
        return None
    try:
        mean, std = ([float(v) for v in standardise[k]] for k in ("mean", "std"))
    except (KeyError, TypeError, ValueError):
        raise ValueError(
            f"standardise must be {{'mean': 3 numbers, 'std': 3 numbers}}, got {standardise!r}"
        ) from None
    if (
        len(mean) != 3
        or len(std) != 3
        or not all(math.isfinite(v) for v in mean)
        or not all(math.isfinite(v) and v > 0 for v in std)
    ):
        raise ValueError(
            f"standardise needs 3 finite means and 3 positive stds, got {standardise!r}"
        )
    return {"mean": mean, "std": std}


def network_spec(
    name: str,
    n_classes: int,
    tile_size: int,
    config: StudyConfig | None = None,
    *,
    init: str = "xavier",
    standardise: Any = None,
) -> dict[str, Any]:
    """The JSON-able description of a network (stored in ``model.json`` as ``"architecture"``).

    ``init`` names the weight initialisation (:data:`INITIALISERS`); ``standardise`` is
    ``{"mean": [r, g, b], "std": [r, g, b]}`` (in the units of the scaled input) when the network
    standardises its input per channel, else None.

    Raises
    ------
    ValueError
        Unknown ``name`` or ``init``, fewer than 2 classes, a tile too small for the network, or a
        malformed ``standardise``.
    """
    if init not in INITIALISERS:
        raise ValueError(f"init must be one of {', '.join(INITIALISERS)}, got {init!r}")
    standardise = _check_standardise(standardise)
    if name not in NETWORKS:
        raise ValueError(f"network must be one of {', '.join(NETWORKS)}, got {name!r}")
    if not isinstance(n_classes, int) or n_classes < 2:
        raise ValueError(f"n_classes must be an integer >= 2, got {n_classes!r}")
    spec: dict[str, Any] = {
        "name": name,
        "n_classes": n_classes,
        "input": [3, tile_size, tile_size],
    }
    if name == "study":
        config = config or StudyConfig()
        if config.feature_size(tile_size) < 1:
            raise ValueError(f"tile_size {tile_size} is too small for the study network {config}")
        spec.update(asdict(config))
        spec["conv_activation"] = "relu"
        spec["dense_activation"] = "sigmoid"
    elif tile_size < 32:
        raise ValueError(f"tile_size must be >= 32 for {name}, got {tile_size}")
    spec["output"] = "logits (training); softmax probabilities (exported)"
    spec["initialisation"] = init
    if standardise is not None:
        spec["standardise"] = {
            **standardise,
            "where": "first layer of the network: (x - mean) / std",
        }
    return spec


def initializer(init: str = "xavier") -> Any:
    """The MXNet initializer of ``init`` (:data:`INITIALISERS`).

    Raises
    ------
    ValueError
        Unknown name.
    """
    if init not in INITIALISERS:
        raise ValueError(f"init must be one of {', '.join(INITIALISERS)}, got {init!r}")
    mx = import_mxnet()
    if init == "xavier":
        return mx.init.Xavier()
    return _classes()["PerLayer"]()


def build_network(
    name: str = "study",
    n_classes: int = 2,
    *,
    tile_size: int = 128,
    config: StudyConfig | None = None,
    prefix: str = "net_",
    standardise: Any = None,
) -> Any:
    """Build an uninitialised Gluon ``HybridBlock`` that maps (N, 3, T, T) input to N-class logits.

    Parameters
    ----------
    name : {"study", "resnet10", "resnet18"}
        The architecture. ``"study"`` is the 2018 study's CNN (module docstring); the ResNets come
        from Gluon's model zoo, without pretrained weights.
    n_classes : int
        Number of output classes (>= 2), taken from the dataset.
    tile_size : int
        Input side T in pixels (checked against the network: the study's CNN needs T >= 16 with
        its defaults).
    config : StudyConfig, optional
        Layer sizes of the study's CNN (ignored by the ResNets).
    prefix : str
        Parameter-name prefix; a fixed prefix keeps exported names independent of how many blocks
        the process built before.
    standardise : dict, optional
        ``{"mean": [r, g, b], "std": [r, g, b]}``: the network's first step is then
        ``(x - mean) / std`` per channel, with both stored as constants (``input_mean``,
        ``input_inv_std``) in the exported parameters, so every engine applies it.

    Returns
    -------
    mxnet.gluon.HybridBlock
        Call ``initialize(initializer(...), ctx=...)`` before use.

    Raises
    ------
    ValueError
        See :func:`network_spec`.
    """
    standardise = network_spec(name, n_classes, tile_size, config, standardise=standardise).get(
        "standardise"
    )
    net = _body(name, n_classes, tile_size, config, prefix)
    if standardise is None:
        return net
    return _classes()["Standardised"](net, standardise["mean"], standardise["std"], prefix="input_")


def _body(
    name: str, n_classes: int, tile_size: int, config: StudyConfig | None, prefix: str
) -> Any:
    mx = import_mxnet()
    if name == "study":
        return _classes()["StudyCNN"](n_classes, config or StudyConfig(), prefix=prefix)
    vision = mx.gluon.model_zoo.vision
    layers = [2, 2, 2, 2] if name == "resnet18" else [1, 1, 1, 1]
    return vision.ResNetV1(
        vision.BasicBlockV1,
        layers,
        [64, 64, 128, 256, 512],
        classes=n_classes,
        thumbnail=tile_size < 64,
        prefix=prefix,
    )


def with_softmax(net: Any, prefix: str = "model_") -> Any:
    """Wrap a logit network (sharing its parameters) so that it outputs softmax probabilities."""
    return _classes()["Softmax"](net, prefix=prefix)
