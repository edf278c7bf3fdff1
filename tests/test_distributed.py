"""Distributed training: the DMLC environment of each role, the local launcher (failure, timeout),
and a real dist_sync run (scheduler, one server, two workers on 127.0.0.1) whose two workers end
with bit-identical parameters."""

from __future__ import annotations

import csv
import json
import socket
import time
from pathlib import Path

import numpy as np
import pytest

from prostate_fast import cli
from prostate_fast.train.distributed import (
    LOOPBACK,
    _worker_args,
    dmlc_env,
    free_port,
    launch_local,
)

TINY_NET = [
    *("--recipe", "study", "--conv-filters", "4,4", "--dense-units", "8,8,8"),
    *("--threads", "1", "--quiet"),
]


@pytest.fixture(scope="module")
def loopback() -> str:
    """127.0.0.1, once a socket could be bound there (the only address these tests use)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((LOOPBACK, 0))
            s.listen(1)
    except OSError as exc:
        pytest.skip(f"cannot bind a TCP port on {LOOPBACK} ({exc}): no parameter server here")
    return LOOPBACK


def _tiny(tmp_path_factory: pytest.TempPathFactory, name: str, slides: int, per_slide: int) -> Path:
    pytest.importorskip("mxnet")
    from _tiny_dataset import make_tiny_dataset

    root = tmp_path_factory.mktemp(name) / "ds"
    return make_tiny_dataset(
        root, size=16, train_slides=slides, per_slide=per_slide, val_per_slide=16
    )


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """80 train records of 16 px tiles: two workers get parts of 40."""
    return _tiny(tmp_path_factory, "even", 2, 40)


@pytest.fixture(scope="module")
def odd_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """81 train records: ImageRecordIter gives two workers parts of 41 and 40."""
    return _tiny(tmp_path_factory, "odd", 3, 27)


# -- environment and arguments (no process started) ---------------------------------------------
def test_dmlc_env_per_role() -> None:
    base = {"PATH": "/bin", "PORT": "8080", "DMLC_USE_KUBERNETES": "1", "DMLC_ROLE": "server"}
    common = {"root_uri": LOOPBACK, "root_port": 9091, "n_workers": 2, "node_host": LOOPBACK}
    worker = dmlc_env("worker", base=base, **common)
    assert "PORT" not in worker and "DMLC_USE_KUBERNETES" not in worker
    assert worker["PATH"] == "/bin" and base["PORT"] == "8080"  # the base is not modified
    expected = {
        "DMLC_ROLE": "worker",
        "DMLC_PS_ROOT_URI": LOOPBACK,
        "DMLC_PS_ROOT_PORT": "9091",
        "DMLC_NUM_SERVER": "1",
        "DMLC_NUM_WORKER": "2",
        "DMLC_NODE_HOST": LOOPBACK,
        "MXNET_ENGINE_TYPE": "NaiveEngine",
    }
    assert {k: worker[k] for k in expected} == expected
    for role in ("scheduler", "server"):
        env = dmlc_env(role, base=base, **common)
        assert env["DMLC_ROLE"] == role and "MXNET_ENGINE_TYPE" not in env
        assert env["OMP_NUM_THREADS"] == "1"
    assert dmlc_env("worker", base={"MXNET_ENGINE_TYPE": "X"}, **common)["MXNET_ENGINE_TYPE"] == "X"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"role": "master"}, "role"),
        ({"n_workers": 0}, "n_workers"),
        ({"n_servers": True}, "n_servers"),
        ({"root_port": 70000}, "root_port"),
    ],
)
def test_dmlc_env_refuses_bad_arguments(kwargs: dict, match: str) -> None:
    args = {
        "role": "worker",
        "root_uri": LOOPBACK,
        "root_port": 9091,
        "n_workers": 2,
        "node_host": LOOPBACK,
        **kwargs,
    }
    with pytest.raises(ValueError, match=match):
        dmlc_env(args.pop("role"), **args)


def test_worker_args() -> None:
    assert _worker_args(["ds", "-o", "m"]) == ["train", "ds", "-o", "m", "--kvstore", "dist_sync"]
    assert _worker_args(["train", "ds", "--kvstore", "dist_async"])[-1] == "dist_async"
    assert _worker_args(["train", "ds", "--kvstore=dist_sync"]) == [
        "train",
        "ds",
        "--kvstore=dist_sync",
    ]
    with pytest.raises(ValueError, match="dist_"):
        _worker_args(["train", "ds", "--kvstore", "local"])


def test_free_port_is_on_loopback(loopback: str) -> None:
    port = free_port()
    assert 0 < port < 65536
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((loopback, port))  # still free


def test_launch_refuses_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(ValueError, match="timeout"):
        launch_local(["train", "ds"], timeout=0, log_dir=tmp_path)
    with pytest.raises(ValueError, match="n_workers"):
        launch_local(["train", "ds"], n_workers=0, log_dir=tmp_path)
    assert cli.main(["launch", "--", "predict", "m"]) == 2
    assert "launch needs a train command line" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing started, no log written


# -- processes ---------------------------------------------------------------------------------
def test_failing_workers_stop_scheduler_and_server(loopback: str, tmp_path: Path) -> None:
    """Workers fail before they reach the scheduler: the waiting scheduler and server are killed."""
    t0 = time.monotonic()
    lines: list[str] = []
    codes = launch_local(
        ["train", str(tmp_path / "missing"), "-o", str(tmp_path / "m")],
        timeout=60,
        log_dir=tmp_path / "logs",
        log=lines.append,
    )
    # 2: the CLI's status for a missing dataset; the slower worker may be stopped first
    assert 2 in codes and all(c == 2 or c < 0 for c in codes), codes
    assert time.monotonic() - t0 < 45
    assert any("failed" in line for line in lines), lines
    logs = sorted(p.name for p in (tmp_path / "logs").iterdir())
    assert logs == ["scheduler.log", "server-0.log", "worker-0.log", "worker-1.log"]
    failed = codes.index(2)
    assert "missing" in (tmp_path / "logs" / f"worker-{failed}.log").read_text()
    assert not (tmp_path / "m").exists()


def test_timeout_stops_every_process(loopback: str, dataset: Path, tmp_path: Path) -> None:
    t0 = time.monotonic()
    lines: list[str] = []
    codes = launch_local(
        ["train", str(dataset), "-o", str(tmp_path / "m"), "--epochs", "1000", *TINY_NET],
        timeout=1.5,
        log_dir=tmp_path / "logs",
        log=lines.append,
    )
    assert len(codes) == 2 and all(c < 0 for c in codes), codes  # stopped by a signal
    assert any("timed out" in line for line in lines), lines
    assert time.monotonic() - t0 < 30


def _params(path: Path) -> dict[str, np.ndarray]:
    from prostate_fast._mx import import_mxnet

    mx = import_mxnet()
    return {k: v.asnumpy() for k, v in mx.nd.load(str(path)).items()}


def _log_rows(model: Path) -> list[dict[str, str]]:
    with (model / "log.csv").open() as fh:
        return list(csv.DictReader(fh))


def _train_two_workers(dataset: Path, tmp_path: Path, batch_size: int) -> Path:
    """`prostate-fast launch`: scheduler + 1 server + 2 workers, 2 epochs; return rank 0's model."""
    model = tmp_path / "model"
    t0 = time.monotonic()
    status = cli.main(
        [
            "launch",
            "--workers",
            "2",
            "--servers",
            "1",
            "--timeout",
            "80",
            "--log-dir",
            str(tmp_path / "logs"),
            "--",
            "train",
            str(dataset),
            "-o",
            str(model),
            "--epochs",
            "2",
            "--batch-size",
            str(batch_size),
            "--lr",
            "0.05",
            "--seed",
            "3",
            *TINY_NET,
        ]
    )
    logs = "\n".join(f"== {p.name}\n{p.read_text()[-1500:]}" for p in (tmp_path / "logs").iterdir())
    assert status == 0, logs
    assert time.monotonic() - t0 < 90
    return model


def _assert_identical_workers(model: Path) -> None:
    other = model.with_name(model.name + ".rank1")  # rank 0 writes MODEL, rank 1 MODEL.rank1
    infos = [json.loads((m / "model.json").read_text()) for m in (model, other)]
    assert infos[0]["epoch"] == infos[1]["epoch"]
    assert infos[0]["training"]["kvstore"] == "dist_sync"
    for name in (f"model-{infos[0]['epoch']:04d}.params", "checkpoints/epoch-0002.params"):
        a, b = _params(model / name), _params(other / name)
        assert sorted(a) == sorted(b) and len(a) == 12
        for key in a:
            assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape
            assert np.array_equal(a[key], b[key]), f"{name} {key} differs between the workers"
    # each worker trained on its own part of the split, so their training losses differ
    rows = [_log_rows(m) for m in (model, other)]
    assert len(rows[0]) == len(rows[1]) == 2
    assert rows[0][0]["train_loss"] != rows[1][0]["train_loss"]


@pytest.mark.slow
def test_two_dist_sync_workers_end_with_identical_parameters(
    loopback: str, dataset: Path, tmp_path: Path
) -> None:
    """Parts of 40 records in batches of 16: every epoch ends with a partial batch of 8."""
    _assert_identical_workers(_train_two_workers(dataset, tmp_path, 16))


@pytest.mark.slow
def test_dist_sync_parts_of_unequal_size(loopback: str, odd_dataset: Path, tmp_path: Path) -> None:
    """Parts of 41 and 40 records in batches of 8: both workers must read 40 (5 steps each).

    Reading ceil(81 / 2) = 41 made rank 1 run out of records ('ended after 40 of 41 records')
    while rank 0 waited for it, and with batch 16 count a filler sample with a garbage label.
    """
    _assert_identical_workers(_train_two_workers(odd_dataset, tmp_path, 8))
