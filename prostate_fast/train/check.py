"""``prostate-fast check``: the 2018 study's framework sanity check, and what this MXNet can do.

Before training its CNN, the study checked the framework with a multilayer perceptron on MNIST:
784-128-64-10, ReLU, SGD with learning rate 0.05 decayed every 10 epochs, batch 64, 20 epochs; it
reached 98.1 % test accuracy. :func:`run_check` trains that MLP here:

* on MNIST when given a folder holding the four IDX files (``train-images-idx3-ubyte``,
  ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, raw or
  ``.gz``; ``-`` or ``.`` before ``idx`` both accepted), pixels / 255;
* otherwise on scikit-learn's bundled 8x8 digits (1,797 images shipped in the wheel, no download):
  the same MLP with 64 inputs, pixels / 16, a seeded 75/25 split.

It prints the test accuracy and training speed, and reports MXNet's version, its build features
(CUDA, cuDNN, MKLDNN, OpenMP, ...) and the GPUs it can see, so a broken install or a CPU-only
wheel on a GPU machine shows up before a long training. The learning-rate decay factor is not in
the study; we use 0.1 every 10 epochs (configurable). On the digits the check adds momentum 0.9
(see :func:`run_check`): they give 21 updates an epoch where MNIST gives 938.
"""

from __future__ import annotations

import gzip
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._mx import import_mxnet, parse_context
from ..errors import DatasetError

__all__ = ["CheckResult", "load_digits", "load_mnist", "mxnet_build_info", "read_idx", "run_check"]

_IDX_TYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_FEATURES = ("CUDA", "CUDNN", "NCCL", "MKLDNN", "OPENMP", "BLAS_OPEN", "BLAS_MKL", "DIST_KVSTORE")


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (MNIST's format; gzip-compressed when the name ends in ``.gz``).

    Raises
    ------
    DatasetError
        Missing, truncated or not an IDX file (the message names the file).
    """
    path = Path(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file") from None
    except (OSError, EOFError) as exc:
        raise DatasetError(f"{path}: unreadable IDX file ({exc})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise DatasetError(f"{path}: not an IDX file (bad magic number)")
    dtype, ndim = _IDX_TYPES[data[2]], data[3]
    head = 4 + 4 * ndim
    if ndim == 0 or len(data) < head:
        raise DatasetError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    count = int(np.prod(shape))
    if len(data) != head + count * dtype.itemsize:
        raise DatasetError(
            f"{path}: IDX size mismatch: header says {shape}, file has {len(data) - head} bytes "
            f"of data"
        )
    return np.frombuffer(data, dtype, count, head).reshape(shape).astype(dtype.newbyteorder("="))


def _find(folder: Path, prefix: str, kind: str) -> Path:
    for sep in ("-", "."):
        for ext in ("", ".gz"):
            p = folder / f"{prefix}-{kind}{sep}idx{3 if kind == 'images' else 1}-ubyte{ext}"
            if p.is_file():
                return p
    raise DatasetError(f"{folder}: no {prefix}-{kind}-idx*-ubyte[.gz] file (MNIST IDX files)")


def load_mnist(folder: str | os.PathLike[str]) -> tuple[np.ndarray, ...]:
    """Load MNIST from ``folder``: (x_train, y_train, x_test, y_test), x float32 (n, 784) / 255.

    Raises
    ------
    DatasetError
        A missing or corrupt file, or images and labels that do not pair up.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: no such folder")
    out = []
    for prefix in ("train", "t10k"):
        img_path, lab_path = _find(folder, prefix, "images"), _find(folder, prefix, "labels")
        images, labels = read_idx(img_path), read_idx(lab_path)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DatasetError(
                f"{img_path}: {images.shape} images do not match {labels.shape} labels in "
                f"{lab_path.name}"
            )
        if labels.size and (labels.min() < 0 or labels.max() > 9):
            raise DatasetError(f"{lab_path}: labels outside 0-9")
        x = images.reshape(len(images), -1).astype(np.float32) / 255.0
        out += [x, labels.astype(np.int64)]
    return tuple(out)


def load_digits(seed: int = 0, test_fraction: float = 0.25) -> tuple[np.ndarray, ...]:
    """scikit-learn's 8x8 digits, pixels / 16, seeded split: (x_train, y_train, x_test, y_test).

    Raises
    ------
    DatasetError
        scikit-learn is not installed (give an MNIST folder instead).
    """
    try:
        from sklearn.datasets import load_digits as sk_digits
    except ImportError:
        raise DatasetError(
            "scikit-learn is not installed: pip install scikit-learn (it ships the 8x8 digits), "
            "or give a folder of MNIST IDX files"
        ) from None
    d = sk_digits()
    x, y = d.data.astype(np.float32) / 16.0, d.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = int(round(len(y) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]


def mxnet_build_info() -> dict[str, Any]:
    """MXNet's version, selected build features and visible GPU count."""
    mx = import_mxnet()
    feats = mx.runtime.Features()
    try:
        gpus = int(mx.context.num_gpus())
    except Exception:  # noqa: BLE001 - a CPU build or no driver raises MXNetError
        gpus = 0
    return {
        "version": mx.__version__,
        "features": {f: bool(feats.is_enabled(f)) for f in _FEATURES if f in feats},
        "gpus": gpus,
    }


@dataclass(frozen=True)
class CheckResult:
    """Outcome of :func:`run_check`."""

    data: str
    n_train: int
    n_test: int
    n_inputs: int
    epochs: int
    momentum: float
    accuracy: float
    train_accuracy: float
    samples_per_s: float
    seconds: float
    build: dict[str, Any] = field(default_factory=dict)

    def report(self) -> str:
        """Human-readable summary (what ``prostate-fast check`` prints)."""
        feats = self.build.get("features", {})
        on = ", ".join(f for f, v in feats.items() if v) or "none"
        off = ", ".join(f for f, v in feats.items() if not v) or "none"
        return "\n".join(
            [
                f"MXNet {self.build.get('version')}: built with {on}; without {off}",
                f"GPUs visible: {self.build.get('gpus', 0)}",
                f"data: {self.data} ({self.n_train} train, {self.n_test} test, "
                f"{self.n_inputs} inputs)",
                f"MLP {self.n_inputs}-128-64-10, {self.epochs} epochs, momentum "
                f"{self.momentum:g}: test accuracy "
                f"{self.accuracy:.4f} (train {self.train_accuracy:.4f}), "
                f"{self.samples_per_s:.0f} samples/s, {self.seconds:.1f} s",
            ]
        )


def run_check(
    mnist_dir: str | os.PathLike[str] | None = None,
    *,
    epochs: int = 20,
    batch_size: int = 64,
    lr: float = 0.05,
    lr_decay: float = 0.1,
    decay_every: int = 10,
    momentum: float | None = None,
    seed: int = 0,
    ctx: str = "cpu",
    n_threads: int | None = None,
    log: Callable[[str], None] | None = None,
) -> CheckResult:
    """Train the study's MLP on MNIST (``mnist_dir``) or the 8x8 digits and report its accuracy.

    Parameters
    ----------
    mnist_dir : path, optional
        Folder of MNIST IDX files; None uses scikit-learn's bundled digits.
    epochs, batch_size, lr : optional
        The study's 20 epochs, batch 64, SGD learning rate 0.05.
    lr_decay, decay_every : optional
        Multiply the learning rate by ``lr_decay`` every ``decay_every`` epochs.
    momentum : float, optional
        SGD momentum. None: 0 on MNIST (the study's plain SGD), 0.9 on the digits, which have
        21 batches an epoch instead of MNIST's 938: plain SGD stops near 92 % there after 20
        epochs, momentum reaches 96-98 % (seeds 0-4) in the same 20 epochs.
    seed : int
        Seeds the initialisation, the shuffles and the digits split.
    ctx : str
        ``"cpu"`` or ``"gpu(0)"``.
    n_threads : int, optional
        MXNet threads (None: all cores).
    log : callable, optional
        Receives one line per epoch.

    Returns
    -------
    CheckResult

    Raises
    ------
    DatasetError
        Bad MNIST files, or no MNIST folder and no scikit-learn.
    ValueError
        A bad argument (named).

    Notes
    -----
    Cost: about 2 s for the digits on 2 CPU cores; MNIST about 20-60 s.
    """
    for name, v in (("epochs", epochs), ("batch_size", batch_size), ("decay_every", decay_every)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if not lr > 0 or not 0 < lr_decay <= 1:
        raise ValueError(f"lr must be > 0 and lr_decay in (0, 1], got {lr!r}, {lr_decay!r}")
    if mnist_dir is not None:
        xtr, ytr, xte, yte = load_mnist(mnist_dir)
        data = f"MNIST {mnist_dir}"
    else:
        xtr, ytr, xte, yte = load_digits(seed)
        data = "scikit-learn digits (8x8)"
    if momentum is None:
        momentum = 0.0 if mnist_dir is not None else 0.9
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    if len(ytr) == 0 or len(yte) == 0:
        raise DatasetError(f"{data}: empty training or test set")
    mx = import_mxnet(n_threads)
    device = parse_context(ctx)[0]
    mx.random.seed(seed)
    net = _study_mlp(mx, device)
    trainer = mx.gluon.Trainer(
        net.collect_params(), "sgd", {"learning_rate": lr, "momentum": momentum}
    )
    loss_fn = mx.gluon.loss.SoftmaxCrossEntropyLoss()
    rng = np.random.default_rng(seed)
    n = len(ytr) - len(ytr) % batch_size or len(ytr)  # full batches (static shapes)
    t0, busy = time.time(), 0.0
    for epoch in range(epochs):
        trainer.set_learning_rate(lr * lr_decay ** (epoch // decay_every))
        order = rng.permutation(len(ytr))[:n]
        tic = time.time()
        for i in range(0, n, batch_size):
            sel = order[i : i + batch_size]
            x = mx.nd.array(xtr[sel], ctx=device)
            y = mx.nd.array(ytr[sel], ctx=device)
            with mx.autograd.record():
                loss = loss_fn(net(x), y)
            loss.backward()
            trainer.step(len(sel))
        mx.nd.waitall()
        busy += time.time() - tic
        if log is not None:
            log(f"Epoch[{epoch}] Validation-accuracy={_accuracy(mx, net, xte, yte, device):f}")
    seconds = time.time() - t0
    return CheckResult(
        data=data,
        n_train=len(ytr),
        n_test=len(yte),
        n_inputs=xtr.shape[1],
        epochs=epochs,
        momentum=momentum,
        accuracy=_accuracy(mx, net, xte, yte, device),
        train_accuracy=_accuracy(mx, net, xtr, ytr, device),
        samples_per_s=epochs * n / max(busy, 1e-9),
        seconds=seconds,
        build=mxnet_build_info(),
    )


def _study_mlp(mx: Any, device: Any) -> Any:
    """The study's MLP (inputs-128-64-10, ReLU), Xavier-initialised on ``device``, hybridized."""
    net = mx.gluon.nn.HybridSequential(prefix="mlp_")
    with net.name_scope():
        net.add(mx.gluon.nn.Dense(128, activation="relu"), mx.gluon.nn.Dense(64, activation="relu"))
        net.add(mx.gluon.nn.Dense(10))
    net.initialize(mx.init.Xavier(), ctx=device)
    net.hybridize(static_alloc=True, static_shape=True)
    return net


def _accuracy(mx: Any, net: Any, x: np.ndarray, y: np.ndarray, device: Any) -> float:
    correct = 0
    for i in range(0, len(y), 1024):
        out = net(mx.nd.array(x[i : i + 1024], ctx=device))
        correct += int((out.argmax(axis=1).asnumpy().astype(np.int64) == y[i : i + 1024]).sum())
    return correct / len(y)
