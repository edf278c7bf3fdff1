"""Distributed training with MXNet's parameter server (``--kvstore dist_sync``): roles and a launcher.

MXNet's ``dist_*`` kvstores run three kinds of process, told apart by environment variables
(``DMLC_*``, read by ps-lite when MXNet loads):

* one **scheduler** (``DMLC_ROLE=scheduler``) that the others find at ``DMLC_PS_ROOT_URI`` :
  ``DMLC_PS_ROOT_PORT`` and that introduces them to each other;
* ``DMLC_NUM_SERVER`` **servers** (``DMLC_ROLE=server``) that hold the parameters and sum the
  workers' gradients;
* ``DMLC_NUM_WORKER`` **workers** (``DMLC_ROLE=worker``): ``python -m prostate_fast.distributed
  train ... --kvstore dist_sync`` (:func:`worker_main`: ``prostate-fast train`` that leaves at once
  when it fails instead of hanging in MXNet's finaliser). Each reads its own part of the train
  split; rank 0 writes ``MODEL_DIR``, rank k ``MODEL_DIR.rankk`` (:func:`prostate_fast.train.train`).

Scheduler and server run MXNet's server loop on ``import mxnet`` (``python -c "import mxnet"``), so
they need the same interpreter and numpy pin as the workers. Every process also needs
``DMLC_NODE_HOST`` (the address it advertises, otherwise the network card's), no ``PORT`` variable
(ps-lite would take it as its own port), and workers need ``MXNET_ENGINE_TYPE=NaiveEngine`` (the
threaded engine has a start-up race with the parameter server: about half the runs aborted).
:func:`dmlc_env` builds these variables for any role; the README shows the commands per machine.

:func:`launch_local` runs the whole set on one machine (``127.0.0.1``), for tests and for several
workers sharing one host: MXNet's own ``tools/launch.py`` does not run on Python 3.11.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from .._util import die_with_parent

__all__ = ["LOOPBACK", "dmlc_env", "free_port", "launch_local"]

#: The only address the local launcher uses.
LOOPBACK = "127.0.0.1"
_ROLES = ("scheduler", "server", "worker")
#: Variables removed from every role's environment: ps-lite reads them with other meanings.
_DROPPED = ("PORT", "DMLC_USE_KUBERNETES", "DMLC_INTERFACE", "DMLC_LOCAL")
_GRACE_S = 5.0  # between SIGTERM and SIGKILL
_POLL_S = 0.2
_PS_EXIT_S = 30.0  # scheduler/servers and workers leave within this of each other


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that was free on ``host`` a moment ago (bind to port 0, read it, close).

    Raises
    ------
    OSError
        Nothing can be bound on ``host``.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def dmlc_env(
    role: str,
    *,
    root_uri: str,
    root_port: int,
    n_workers: int,
    n_servers: int = 1,
    node_host: str,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of one parameter-server process (scheduler, server or worker).

    Parameters
    ----------
    role : {"scheduler", "server", "worker"}
    root_uri, root_port : str, int
        Address and port of the scheduler (the same for every process of the job).
    n_workers, n_servers : int
        Number of workers and servers of the job.
    node_host : str
        The address this process advertises to the others (its own machine's address; the
        scheduler's is ``root_uri``).
    base : mapping, optional
        Environment to start from (default: this process's). ``PORT`` and ps-lite variables with
        other meanings (``DMLC_USE_KUBERNETES``, ``DMLC_INTERFACE``, ``DMLC_LOCAL``) are removed.

    Returns
    -------
    dict
        ``base`` plus ``DMLC_ROLE``, ``DMLC_PS_ROOT_URI``, ``DMLC_PS_ROOT_PORT``,
        ``DMLC_NUM_SERVER``, ``DMLC_NUM_WORKER`` and ``DMLC_NODE_HOST``; workers also get
        ``MXNET_ENGINE_TYPE=NaiveEngine`` unless ``base`` sets an engine, scheduler and servers
        ``OMP_NUM_THREADS=1`` unless ``base`` sets it.

    Raises
    ------
    ValueError
        Unknown role, counts below 1, a port outside 1-65535.
    """
    if role not in _ROLES:
        raise ValueError(f"role must be one of {', '.join(_ROLES)}, got {role!r}")
    for name, v in (("n_workers", n_workers), ("n_servers", n_servers)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if isinstance(root_port, bool) or not isinstance(root_port, int) or not 0 < root_port < 65536:
        raise ValueError(f"root_port must be in 1-65535, got {root_port!r}")
    env = dict(os.environ if base is None else base)
    for key in _DROPPED:
        env.pop(key, None)
    env.update(
        DMLC_ROLE=role,
        DMLC_PS_ROOT_URI=str(root_uri),
        DMLC_PS_ROOT_PORT=str(root_port),
        DMLC_NUM_SERVER=str(n_servers),
        DMLC_NUM_WORKER=str(n_workers),
        DMLC_NODE_HOST=str(node_host),
    )
    if role == "worker":
        env.setdefault("MXNET_ENGINE_TYPE", "NaiveEngine")
    else:
        env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _worker_args(train_args: Sequence[str]) -> list[str]:
    args = [str(a) for a in train_args]
    if args[:1] != ["train"]:
        args = ["train", *args]
    kv = [b for a, b in zip(args, args[1:], strict=False) if a == "--kvstore"]
    kv += [a.split("=", 1)[1] for a in args if a.startswith("--kvstore=")]
    if not kv:
        args += ["--kvstore", "dist_sync"]
    elif any(not k.startswith("dist") for k in kv):
        raise ValueError(f"train_args ask for --kvstore {kv[-1]}; the launcher needs a dist_* one")
    return args


def _stop(procs: Sequence[subprocess.Popen]) -> None:
    """SIGTERM every live process group, SIGKILL those still alive after a grace period."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        live = [p for p in procs if p.poll() is None]
        for p in live:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, sig)  # each process leads its own session and group
        end = time.monotonic() + (_GRACE_S if sig == signal.SIGTERM else 30.0)
        while any(p.poll() is None for p in live) and time.monotonic() < end:
            time.sleep(0.05)


def _spawn(cmd: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """Start one role in its own session and process group, stdout and stderr to ``log_path``."""
    preexec = die_with_parent if sys.platform.startswith("linux") else None  # a killed launcher
    with log_path.open("wb") as fh:
        return subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            cmd,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=preexec,
        )


def _watch(
    procs: Sequence[subprocess.Popen],
    names: Sequence[str],
    n_servers: int,
    deadline: float,
    timeout: float,
    logs: Path,
    log: Callable[[str], None],
) -> None:
    """Wait until every worker succeeded, one failed, the servers left early, or the deadline."""
    workers, ps = procs[1 + n_servers :], procs[: 1 + n_servers]
    ps_gone = math.inf  # when a scheduler or server left while workers ran
    while True:
        codes = [w.poll() for w in workers]
        failed = [names[1 + n_servers + i] for i, c in enumerate(codes) if c not in (None, 0)]
        if failed:
            log(
                f"launch: {', '.join(failed)} failed; stopping the others "
                f"(see {logs / (failed[0] + '.log')})"
            )
            return
        if all(c == 0 for c in codes):
            # scheduler and servers leave once the workers have finalised the kvstore
            end = min(deadline, time.monotonic() + _PS_EXIT_S)
            while any(p.poll() is None for p in ps) and time.monotonic() < end:
                time.sleep(_POLL_S)
            return
        if any(p.poll() is not None for p in ps):
            # they leave when the workers finalise; workers that do not exit soon after
            # would wait forever for them
            ps_gone = min(ps_gone, time.monotonic())
            if time.monotonic() - ps_gone > _PS_EXIT_S:
                gone = [
                    n for n, p in zip(names[: len(ps)], ps, strict=True) if p.poll() is not None
                ]
                log(
                    f"launch: {', '.join(gone)} ended before the workers; stopping them "
                    f"(see {logs / (gone[0] + '.log')})"
                )
                return
        if time.monotonic() > deadline:
            log(f"launch: timed out after {timeout:g} s; stopping every process")
            return
        time.sleep(_POLL_S)


def launch_local(
    train_args: Sequence[str],
    *,
    n_workers: int = 2,
    n_servers: int = 1,
    port: int | None = None,
    timeout: float = 600,
    env: Mapping[str, str] | None = None,
    log_dir: str | os.PathLike[str] | None = None,
    log: Callable[[str], None] = print,
) -> list[int]:
    """Run a ``dist_sync`` training on this machine: a scheduler, servers and workers on 127.0.0.1.

    Parameters
    ----------
    train_args : sequence of str
        The ``prostate-fast train`` arguments of every worker (``["train", DATASET, "-o", MODEL,
        ...]``; the leading ``"train"`` may be left out). ``--kvstore dist_sync`` is added unless
        a ``dist_*`` kvstore is given. Rank 0 writes ``MODEL``, rank k ``MODEL.rankk``.
    n_workers, n_servers : int
        Worker and server processes (2 and 1).
    port : int, optional
        The scheduler's port on 127.0.0.1 (default: a free one). Servers and workers take free
        ports of their own.
    timeout : float
        Seconds for the whole job; then every process is stopped.
    env : mapping, optional
        Environment of every process (default: this process's), before the ``DMLC_*`` settings
        of :func:`dmlc_env`.
    log_dir : path, optional
        Where ``scheduler.log``, ``server-<i>.log`` and ``worker-<i>.log`` (stdout and stderr of
        each process, ``i`` in start order) go; default: a new temporary folder.
    log : callable
        Receives a few progress lines (where the logs are, who failed).

    Returns
    -------
    list of int
        Exit statuses of the workers, in start order (not rank order). 0: success. A worker
        stopped by the launcher (timeout, or another worker failed) has a negative status, minus
        the signal number, as in :mod:`subprocess`.

    Raises
    ------
    ValueError
        Bad counts, timeout, port, or a non-distributed ``--kvstore`` in ``train_args``.
    OSError
        No port can be bound on 127.0.0.1, or a process cannot be started.

    Notes
    -----
    Every process runs in its own session, gets the environment of :func:`dmlc_env` with
    ``DMLC_NODE_HOST=127.0.0.1`` (nothing listens beyond the loopback interface) and is killed
    with its process group when the job times out, when any worker fails (so the others do not
    wait for it forever), or when the launcher is interrupted; on Linux also when the launcher
    itself dies. Scheduler and servers exit by themselves once every worker has finished.
    """
    if not timeout > 0:
        raise ValueError(f"timeout must be positive, got {timeout!r}")
    args = _worker_args(train_args)
    port = free_port() if port is None else port
    common = {
        "root_uri": LOOPBACK,
        "root_port": port,
        "n_workers": n_workers,
        "n_servers": n_servers,
        "node_host": LOOPBACK,
        "base": env,
    }
    envs = {r: dmlc_env(r, **common) for r in _ROLES}  # validates the counts and the port
    logs = Path(log_dir) if log_dir is not None else Path(tempfile.mkdtemp(prefix="pf-launch-"))
    logs.mkdir(parents=True, exist_ok=True)
    log(
        f"launch: scheduler on {LOOPBACK}:{port}, {n_servers} server(s), {n_workers} worker(s); "
        f"logs in {logs}"
    )
    ps_cmd = [sys.executable, "-c", "import mxnet"]
    plan = [("scheduler", "scheduler", ps_cmd)]
    plan += [("server", f"server-{i}", ps_cmd) for i in range(n_servers)]
    worker_cmd = [sys.executable, "-m", "prostate_fast.cli.worker", *args]
    plan += [("worker", f"worker-{i}", worker_cmd) for i in range(n_workers)]
    procs: list[subprocess.Popen] = []
    names = [name for _, name, _ in plan]
    deadline = time.monotonic() + float(timeout)
    try:
        for role, name, cmd in plan:
            procs.append(_spawn(cmd, envs[role], logs / f"{name}.log"))
        _watch(procs, names, n_servers, deadline, timeout, logs, log)
    finally:
        _stop(procs)
    log(
        "launch: exit statuses: "
        + ", ".join(f"{n} {p.returncode}" for n, p in zip(names, procs, strict=True))
    )
    return [int(p.returncode) for p in procs[1 + n_servers :]]
