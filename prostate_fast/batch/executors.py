"""Where :mod:`prostate_fast.batch` runs its slides: a spawn process pool or a Dask cluster.

Both executors take ``fn`` (a picklable module-level function of one task, which reports a
slide's own failure in its result and does not raise), call ``on_result`` with each result as it
completes, and ``on_error(task, exc)`` when the executor itself lost a task (a worker process
that died, a Dask ``KilledWorker``, a lost connection). Tasks need a ``slide`` attribute (a path)
for messages and Dask keys. Also here: the text progress bar.

The pool's workers die with the driver: each asks Linux for SIGKILL when its parent dies
(:func:`~prostate_fast._util.die_with_parent`), and leaves at once if the driver is already gone;
when the driver leaves :func:`run_pool` by an exception (SIGTERM turned into ``SystemExit`` by
:func:`sigterm_exits`, Ctrl-C), it kills its workers and waits for them before going on. Each
worker holds a shared ``flock`` on ``worker_lock`` while it lives, so the next driver can wait
until every worker of a killed one has exited (:func:`wait_for_workers`).
"""

from __future__ import annotations

import contextlib
import fcntl
import multiprocessing
import os
import signal
import sys
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, TextIO

from .._util import die_with_parent

OnResult = Callable[[Any], None]
OnError = Callable[[Any, BaseException], None]


def _init_worker(n_threads: int | None) -> None:
    """Pool initializer: fix the OpenMP thread count before MXNet or our kernels load."""
    if n_threads is not None:
        for var in ("OMP_NUM_THREADS", "MXNET_OMP_MAX_THREADS"):
            os.environ[var] = str(n_threads)


_WORKER_LOCK: list[Any] = []  # a pool worker's open worker_lock file, held until it exits


def _start_worker(n_threads: int | None, driver: int, worker_lock: str | None) -> None:
    """Pool initializer: hold ``worker_lock``, die with the ``driver`` process, set threads."""
    if worker_lock is not None:
        fh = open(worker_lock, "a+")  # noqa: SIM115 - held for the life of the process
        fcntl.flock(fh, fcntl.LOCK_SH)
        _WORKER_LOCK.append(fh)
    die_with_parent()
    if os.getppid() != driver:  # the driver died before the line above: leave now
        os._exit(1)
    _init_worker(n_threads)


def wait_for_workers(worker_lock: str | os.PathLike[str], timeout: float = 120.0) -> bool:
    """Wait until no pool worker holds ``worker_lock`` (those of a killed driver are dying).

    Call it while holding the batch lock, before writing. Returns False if some still hold it
    after ``timeout`` seconds.
    """
    end = time.monotonic() + timeout
    with open(worker_lock, "a+") as fh:
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() > end:
                    return False
                time.sleep(0.05)
                continue
            fcntl.flock(fh, fcntl.LOCK_UN)
            return True


@contextlib.contextmanager
def sigterm_exits(code: int = 128 + signal.SIGTERM) -> Iterator[None]:
    """Within the block, SIGTERM raises ``SystemExit(code)`` so cleanup runs (main thread only).

    ``timeout`` and Slurm stop a job with SIGTERM; by default Python then dies at once, leaving
    ``finally`` blocks (killing the pool, releasing the lock) unrun. A handler someone else
    installed is left alone.
    """
    main = threading.current_thread() is threading.main_thread()
    if not main or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def _exit(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM kills at once
        raise SystemExit(code)

    signal.signal(signal.SIGTERM, _exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _kill_workers(pool: ProcessPoolExecutor) -> None:
    """SIGKILL the pool's worker processes and wait until they have exited."""
    procs = list((getattr(pool, "_processes", None) or {}).values())
    for p in procs:
        with contextlib.suppress(Exception):
            p.kill()
    for p in procs:
        with contextlib.suppress(Exception):
            p.join(30)
    pool.shutdown(wait=True, cancel_futures=True)


def run_pool(
    tasks: Sequence[Any],
    fn: Callable[[Any], Any],
    on_result: OnResult,
    on_error: OnError,
    *,
    workers: int,
    n_threads: int | None = None,
    worker_lock: str | os.PathLike[str] | None = None,
) -> None:
    """Run ``fn`` over ``tasks`` in a ``spawn`` process pool of ``workers``, surviving crashes.

    A worker that dies breaks the whole pool: the tasks then in flight are retried one at a time
    in a fresh pool, so the one that kills its worker while running alone is the culprit
    (``on_error``) and the others complete. ``n_threads`` sets ``OMP_NUM_THREADS`` in workers;
    each worker holds a shared lock on ``worker_lock`` while it lives (see
    :func:`wait_for_workers`). Workers die with this process; if this function is left by an
    exception (``SystemExit`` from :func:`sigterm_exits`, ``KeyboardInterrupt``), the workers
    are killed and waited for first.
    """
    ctx = multiprocessing.get_context("spawn")  # never fork after OpenMP ran (MXNET-NOTES.md)
    pending: deque[Any] = deque(tasks)
    suspects: deque[Any] = deque()
    lock = None if worker_lock is None else str(worker_lock)
    while pending or suspects:
        init = {"initializer": _start_worker, "initargs": (n_threads, os.getpid(), lock)}
        with ProcessPoolExecutor(workers, mp_context=ctx, **init) as pool:
            try:
                _drain(pool, pending, suspects, fn, on_result, on_error, workers)
            except BaseException:
                _kill_workers(pool)
                raise


def _drain(
    pool: ProcessPoolExecutor,
    pending: deque[Any],
    suspects: deque[Any],
    fn: Callable[[Any], Any],
    on_result: OnResult,
    on_error: OnError,
    workers: int,
) -> None:
    """Run tasks in ``pool`` until all are done or the pool breaks (then suspects are queued)."""
    running: dict[Future[Any], Any] = {}
    alone = False
    while pending or suspects or running:
        if suspects and not running:
            t = suspects.popleft()
            running[pool.submit(fn, t)] = t
            alone = True
        while not suspects and not alone and pending and len(running) < workers:
            t = pending.popleft()
            running[pool.submit(fn, t)] = t
        done, _ = wait(running, return_when=FIRST_COMPLETED)
        crashed = []
        for f in done:
            t = running.pop(f)
            try:
                on_result(f.result())
            except BrokenProcessPool:
                crashed.append(t)
            except Exception as exc:  # noqa: BLE001 - e.g. a result that cannot be sent
                on_error(t, exc)
        if crashed:
            crashed += running.values()
            if len(crashed) == 1:
                on_error(crashed[0], _died_alone(crashed[0]))
            else:
                suspects.extend(crashed)
            return  # the pool is broken: start a fresh one
        alone = alone and bool(running)


def _died_alone(task: Any) -> RuntimeError:
    return RuntimeError(
        f"{task.slide}: the worker process died while it ran alone "
        "(a crash in a native library, or out of memory)"
    )


def check_scheduler(scheduler: Any) -> tuple[str, str]:
    """``(kind, number)`` of a ``scheduler`` spec (see :func:`dask_client`), or ValueError."""
    text = str(scheduler)
    kind, _, num = text.partition(":")
    if kind in ("local", "slurm") and num and (not num.isdigit() or int(num) < 1):
        raise ValueError(
            f"scheduler must be tcp://HOST:PORT, local[:N] or slurm[:JOBS], got {text!r}"
        )
    return kind, num


def dask_client(scheduler: Any, workers: int, stack: contextlib.ExitStack) -> Any:
    """A distributed Client for ``scheduler``; what it starts is closed by ``stack``.

    ``scheduler``: a Client, ``"local"`` / ``"local:N"`` (a LocalCluster on 127.0.0.1 with N, else
    ``workers``, single-threaded worker processes), ``"slurm:JOBS"`` (dask-jobqueue's
    SLURMCluster configured by the dask config's ``jobqueue.slurm`` section) or an address.
    """
    from distributed import Client

    if isinstance(scheduler, Client):
        return scheduler
    kind, num = check_scheduler(scheduler)
    text = str(scheduler)
    if kind == "local":
        from distributed import LocalCluster

        n = int(num or workers or 1)
        cluster = stack.enter_context(
            LocalCluster(
                host="127.0.0.1",
                n_workers=n,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
            )
        )
        return stack.enter_context(Client(cluster))
    if kind == "slurm":
        try:
            from dask_jobqueue import SLURMCluster
        except ImportError as exc:
            raise ValueError(
                "scheduler slurm:JOBS needs dask-jobqueue (pip install 'prostate-fast[dask]')"
            ) from exc
        cluster = stack.enter_context(SLURMCluster())
        cluster.scale(jobs=int(num or 1))
        return stack.enter_context(Client(cluster))
    return stack.enter_context(Client(text, timeout="60s"))


def run_dask(
    tasks: Sequence[Any],
    fn: Callable[[Any], Any],
    on_result: OnResult,
    on_error: OnError,
    *,
    scheduler: Any,
    workers: int = 1,
) -> None:
    """Run ``fn`` over ``tasks`` on a Dask cluster (see :func:`dask_client`), as they complete."""
    from distributed import as_completed

    with contextlib.ExitStack() as stack:
        client = dask_client(scheduler, workers, stack)
        futures = {client.submit(fn, t, pure=False, retries=0, key=_dask_key(t)): t for t in tasks}
        try:
            for f in as_completed(futures):
                try:
                    on_result(f.result())
                except Exception as exc:  # noqa: BLE001 - KilledWorker, a lost connection
                    on_error(futures[f], exc)
        finally:
            client.cancel(list(futures))


def _dask_key(task: Any) -> str:
    return f"prostate-fast-{Path(task.slide).stem}-{uuid.uuid4().hex[:8]}"


class Progress:
    """A text progress bar on a terminal; one line per slide otherwise (errors always shown).

    Call it with each result (an object with ``slide``, ``status``, ``reason``, ``seconds``).
    """

    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        self.total, self.stream, self.n = max(1, total), stream or sys.stderr, 0
        self.counts: Counter[str] = Counter()
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.t0 = time.perf_counter()

    def __call__(self, r: Any) -> None:
        self.n += 1
        self.counts[r.status] += 1
        c, n, total = self.counts, self.n, self.total
        tail = f"{n}/{total}  done {c['done']}  skipped {c['skipped']}  failed {c['error']}"
        if self.tty:
            elapsed = time.perf_counter() - self.t0
            eta = elapsed / n * (total - n)
            bar = "#" * (30 * n // total) + "." * (30 - 30 * n // total)
            if r.status == "error":
                self.stream.write(f"\r\x1b[K{r.slide}: error: {r.reason}\n")
            self.stream.write(f"\r\x1b[K[{bar}] {tail}  {elapsed:.0f} s, ~{eta:.0f} s left")
            self.stream.write("\n" if n >= total else "")
        else:
            why = f": {r.reason}" if r.reason else ""
            self.stream.write(f"[{n}/{total}] {r.slide}: {r.status}{why} ({r.seconds:.1f} s)\n")
        self.stream.flush()
