"""`prostate-fast check`: IDX reading, the study's MLP on the digits and on a tiny MNIST folder."""

from __future__ import annotations

import gzip
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from prostate_fast.cli.main import main
from prostate_fast.errors import DatasetError
from prostate_fast.train.check import load_mnist, mxnet_build_info, read_idx, run_check


def _idx_bytes(arr: np.ndarray) -> bytes:
    code = {np.uint8: 0x08, np.int32: 0x0C}[arr.dtype.type]
    dims = b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    data = arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    return bytes([0, 0, code, arr.ndim]) + dims + data


def _digit_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n 28x28 images of digits drawn with OpenCV's Hershey font, shifted and noisy."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = np.zeros((n, 28, 28), np.uint8)
    for img, d in zip(images, labels, strict=True):
        x, y = (int(v) for v in rng.integers(3, 9, 2))
        cv2.putText(img, str(d), (x, 18 + y), cv2.FONT_HERSHEY_SIMPLEX, 0.8, 255, 2)
    noise = rng.integers(0, 40, images.shape)
    return np.clip(images.astype(int) + noise, 0, 255).astype(np.uint8), labels


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory) -> Path:
    """A tiny MNIST folder: 600 train / 200 test images, images gzipped, labels raw."""
    root = tmp_path_factory.mktemp("mnist")
    for prefix, n, seed in (("train", 600, 0), ("t10k", 200, 1)):
        images, labels = _digit_images(n, seed)
        (root / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(images)))
        (root / f"{prefix}-labels.idx1-ubyte").write_bytes(_idx_bytes(labels))
    return root


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trip(tmp_path: Path, gz: bool) -> None:
    arr = np.arange(2 * 3 * 4, dtype=np.int32).reshape(2, 3, 4) - 7
    data = _idx_bytes(arr)
    path = tmp_path / ("a.idx.gz" if gz else "a.idx")
    path.write_bytes(gzip.compress(data) if gz else data)
    got = read_idx(path)
    assert got.shape == (2, 3, 4) and np.array_equal(got, arr)


def test_read_idx_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.idx"
    bad.write_bytes(b"\x08\x03\x00\x00")
    with pytest.raises(DatasetError, match="bad.idx: not an IDX"):
        read_idx(bad)
    short = tmp_path / "short.idx"
    short.write_bytes(_idx_bytes(np.zeros((4, 5), np.uint8))[:-3])
    with pytest.raises(DatasetError, match="short.idx: IDX size mismatch"):
        read_idx(short)
    with pytest.raises(DatasetError, match="no such file"):
        read_idx(tmp_path / "missing.idx")


def test_load_mnist_and_errors(mnist_dir: Path, tmp_path: Path) -> None:
    xtr, ytr, xte, yte = load_mnist(mnist_dir)
    assert xtr.shape == (600, 784) and xte.shape == (200, 784) and xtr.dtype == np.float32
    assert 0 <= xtr.min() and xtr.max() <= 1 and ytr.max() <= 9
    with pytest.raises(DatasetError, match="train-images"):
        load_mnist(tmp_path)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(_idx_bytes(np.zeros((3, 28, 28), np.uint8)))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(_idx_bytes(np.zeros(2, np.uint8)))
    with pytest.raises(DatasetError, match="do not match"):
        load_mnist(tmp_path)


def test_check_on_mnist_folder(mnist_dir: Path) -> None:
    result = run_check(mnist_dir, epochs=3, n_threads=2)
    assert result.n_inputs == 784 and result.n_train == 600 and result.momentum == 0.0
    assert 0.0 <= result.accuracy <= 1.0 and result.samples_per_s > 0
    assert "MNIST" in result.data


def test_check_on_digits_reaches_95_percent() -> None:
    t0 = time.time()
    result = run_check(n_threads=2)
    assert time.time() - t0 < 120
    assert result.accuracy >= 0.95, result.report()
    assert result.n_inputs == 64 and result.epochs == 20 and result.n_test == 449


def test_build_info() -> None:
    info = mxnet_build_info()
    assert info["version"] == "1.9.1" and {"CUDA", "MKLDNN", "OPENMP"} <= set(info["features"])
    assert info["gpus"] >= 0


def test_cli_check(mnist_dir: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["check", str(mnist_dir), "--epochs", "1", "--threads", "2"]) == 0
    out = capsys.readouterr().out
    assert "MXNet 1.9.1" in out and "GPUs visible" in out and "test accuracy" in out
    assert main(["check", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "none" in err[0]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="epochs"):
        run_check(epochs=0)
