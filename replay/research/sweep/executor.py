"""Where a sweep's trials run: a local process pool (the default) or a Dask cluster.

Both take the same tasks (a config and a folder path each) and hand every finished trial,
succeeded or failed, to ``on_done`` as soon as it finishes, so the driver can store it
before the next one: an interrupted sweep keeps everything finished.

Why ``concurrent.futures.ProcessPoolExecutor`` locally and not a Dask ``LocalCluster``:
on one machine it needs no scheduler, nannies or TCP between them (a LocalCluster took
4.8 s to start in bench/sweep.py; the pool ran 1.19x the LocalCluster's trials/s end to
end, 1.15x steady: docs/benchmarks.md), needs nothing beyond the standard library, and
reports a dead worker at once (``BrokenProcessPool``) instead of after the scheduler's
heartbeats and retries. Dask is for more than one machine: ``--scheduler ADDRESS``.

Workers are forked from a ``forkserver`` that has imported the trial's modules once
(numba, polars, the engine): a fresh pool then starts in milliseconds instead of the
~2 s per worker of ``spawn`` (measured: 3.5 s -> 0.02 s for 2 workers after the first),
which is also what a restart after a dead worker costs. Plain ``fork`` of the driver is
avoided: the driver may hold threads (tqdm's monitor, polars' and numba's pools, a Dask
client) and a forked child of a threaded process can deadlock; the forkserver only
imports and never runs polars or numba work, so it has no pool threads to inherit.
Where there is no forkserver (Windows), ``spawn``.

The machinery is generic over the task: ``run_tasks_on_pool`` and ``run_tasks_on_dask``
run any picklable module-level function on any tasks (``tradeloop train`` runs its
walk-forward folds on them, ``replay.research.training.walk_forward``); ``run_on_pool`` and ``run_on_dask`` are
the sweep's trials on them.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from engine.errors import AdapterError
from replay.research.sweep.trial import SweepTask, TaskOutcome, evaluate, evaluate_with_deadline
from replay.research.sweep.trial import failed_outcome as _failed

__all__ = [
    "OnDone",
    "dask_client",
    "run_on_dask",
    "run_on_pool",
    "run_tasks_on_dask",
    "run_tasks_on_pool",
]

OnDone = Callable[[SweepTask, TaskOutcome], None]

T = TypeVar("T")
R = TypeVar("R")

# how long the futures of a broken pool may take to be failed by its manager thread;
# it does that at once, so this only guards against a hang of the executor itself
_BROKEN_DRAIN_S = 30.0

WORKER_DIED = (
    "worker process died running this trial alone, twice (killed, out of memory, a crash "
    "in native code, or over --trial-timeout)"
)


def run_on_pool(
    tasks: Sequence[SweepTask],
    workers: int,
    on_done: OnDone,
    *,
    trial_timeout_s: int | None = None,
) -> None:
    """Run the sweep's ``tasks`` on a local pool of ``workers`` processes
    (``run_tasks_on_pool``: a trial that kills its worker alone twice is failed with
    ``WORKER_DIED``)."""
    run_tasks_on_pool(
        tasks,
        workers,
        on_done,
        function=evaluate_with_deadline,
        args=(trial_timeout_s,),
        key=lambda task: task.trial_id,
        failed=_failed,
        died=WORKER_DIED,
        preload=("replay.research.sweep.trial",),
    )


def run_tasks_on_pool(
    tasks: Sequence[T],
    workers: int,
    on_done: Callable[[T, R], None],
    *,
    function: Callable[..., R],
    args: tuple[Any, ...] = (),
    key: Callable[[T], str],
    failed: Callable[[T, str], R],
    died: str,
    preload: Sequence[str] = (),
) -> None:
    """Run ``function(task, *args)`` for every task on a local pool of ``workers``
    processes, handing each task and its result to ``on_done`` as it finishes.

    At most ``workers`` tasks are in flight, so the tasks lost when a worker dies are
    exactly those running. A dead worker breaks the whole pool: every task in flight
    fails with ``BrokenProcessPool``, the dead one's and its neighbours', and nothing
    says which it was. So those tasks are run again one at a time in a fresh pool, not
    charged; a death while a task runs alone is its own. A task that dies alone is
    retried once (a crash can be transient: memory taken by others), and handed to
    ``on_done`` as ``failed(task, died)`` on its second death alone. A neighbour is never
    charged; a task runs at most 3 times. Deaths are counted by ``key(task)``. An
    exception raised by ``function`` (or a result that does not pickle) is handed on as
    ``failed(task, "Type: message")``. ``preload``: modules the forkserver imports once.
    An exception raised by ``on_done`` stops the run (the tasks in flight are cancelled).
    """
    pending: deque[T] = deque(tasks)
    suspects: deque[T] = deque()
    deaths: Counter[str] = Counter()
    context = _context(preload)
    pool: ProcessPoolExecutor | None = None
    inflight: dict[Future[R], T] = {}
    try:
        while pending or suspects or inflight:
            if pool is None:
                pool = ProcessPoolExecutor(max_workers=workers, mp_context=context)
            queue = suspects if suspects else pending
            # a suspect runs alone; otherwise fill every worker
            room = (0 if inflight else 1) if suspects else workers - len(inflight)
            try:
                while queue and room > 0:
                    # submitted before it leaves its queue: a pool that broke since the
                    # last wait refuses it here, and it must not be lost
                    future = pool.submit(function, queue[0], *args)
                    inflight[future] = queue.popleft()
                    room -= 1
                done, _ = wait(list(inflight), return_when=FIRST_COMPLETED)
                broken = any(isinstance(f.exception(), BrokenProcessPool) for f in done)
            except BrokenProcessPool:
                broken = True
            if broken:
                done, _ = wait(list(inflight), timeout=_BROKEN_DRAIN_S)
                alone = len(inflight) == 1
                dead = [t for f, t in inflight.items() if f not in done]
                for future in done:
                    task = inflight[future]
                    if isinstance(future.exception(), BrokenProcessPool):
                        dead.append(task)
                    else:
                        _finish(future, task, on_done, failed)
                inflight.clear()
                pool.shutdown(wait=False, cancel_futures=True)
                pool = None
                for task in dead:
                    deaths[key(task)] += alone
                    if deaths[key(task)] >= 2:
                        on_done(task, failed(task, died))
                    else:
                        suspects.append(task)
                continue
            for future in done:
                _finish(future, inflight.pop(future), on_done, failed)
    finally:
        if pool is not None:
            # an interrupt: the trials in flight are lost (not stored), the rest were stored
            pool.shutdown(wait=False, cancel_futures=True)


def _context(preload: Sequence[str]) -> multiprocessing.context.BaseContext:
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    # only applies if this process has not started its forkserver yet; a module not
    # preloaded is imported by each worker that needs it
    context.set_forkserver_preload(list(preload))
    return context


def _finish(
    future: Future[R], task: T, on_done: Callable[[T, R], None], failed: Callable[[T, str], R]
) -> None:
    exc = future.exception()
    if exc is None:
        on_done(task, future.result())
    else:  # evaluate catches everything; this is a result that did not pickle, or ours
        on_done(task, failed(task, f"{type(exc).__name__}: {exc}"))


def run_on_dask(client: Any, tasks: Sequence[SweepTask], on_done: OnDone) -> None:
    """Run the sweep's ``tasks`` on a Dask cluster. A task whose worker died more often
    than the scheduler allows (``KilledWorker``) or that was lost is recorded failed."""
    run_tasks_on_dask(client, tasks, on_done, function=evaluate, failed=_failed)


def run_tasks_on_dask(
    client: Any,
    tasks: Sequence[T],
    on_done: Callable[[T, R], None],
    *,
    function: Callable[..., R],
    args: tuple[Any, ...] = (),
    failed: Callable[[T, str], R],
) -> None:
    """Run ``function(task, *args)`` for every task on a Dask cluster, handing each task
    and its result to ``on_done`` as it finishes; an exception (``KilledWorker``, a lost
    connection, one raised by ``function``) is handed on as ``failed(task, "Type:
    message")``. ``args`` are the same for every task and may be Dask futures (from
    ``client.scatter``), which reach the function as their values. An exception raised
    by ``on_done`` stops the run (the remaining tasks are cancelled)."""
    from distributed import as_completed

    n = len(tasks)
    futures = client.map(function, list(tasks), *([a] * n for a in args), pure=False)
    by_key = {f.key: t for f, t in zip(futures, tasks)}
    try:
        for future in as_completed(futures):
            task = by_key[future.key]
            try:
                outcome: R = future.result()
            except Exception as exc:  # KilledWorker, CancelledError, a lost connection
                outcome = failed(task, f"{type(exc).__name__}: {exc}")
            on_done(task, outcome)
    finally:
        client.cancel(futures)


@contextlib.contextmanager
def dask_client(scheduler: str | None = None, workers: int | None = None) -> Iterator[Any]:
    """A client of the scheduler at ``scheduler``, or of a ``LocalCluster`` of ``workers``
    single-threaded worker processes (default: one per CPU; a replay holds the GIL).

    The LocalCluster's scheduler gives a task one retry after its worker dies (Dask's
    default is 3), the process pool's rule: a task that kills its worker twice is failed.
    It hands a worker only as many tasks as it has threads (worker saturation 1.0, Dask's
    default 1.1 rounds up to 2 on one thread): Dask charges a death to every task
    assigned to the dead worker, so a task queued behind a killer would be charged too.
    A cluster of ``--scheduler`` follows its own settings.

    Raises:
        AdapterError: the scheduler cannot be reached.
    """
    import dask
    from distributed import Client, LocalCluster

    if scheduler is not None:
        try:
            client = Client(scheduler, timeout="15s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise AdapterError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from exc
        with client:
            yield client
        return
    n = workers or os.cpu_count() or 1
    with (
        dask.config.set(
            {
                "distributed.scheduler.allowed-failures": 1,
                "distributed.scheduler.worker-saturation": 1.0,
            }
        ),
        # ":0": a free port for the dashboard (None still binds 8787, and a second
        # cluster on the machine then fails to start where warnings are errors)
        LocalCluster(
            n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client
