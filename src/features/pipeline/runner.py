"""Running a step's tasks: in this process, in local worker processes, or on a Dask cluster.

A task function declares how it runs with :func:`task`: ``@task(items=N)`` says that its
N-th argument is a list of source items that it decodes, so it runs with the crash isolation
of single items (:mod:`.isolate`), also for ``--jobs 1``; a plain function runs in this
process for ``jobs`` = 1, else in joblib's workers as ``func(*task, parallel=True)``, a
worker that dies ending the job with one line.
"""
from __future__ import annotations

import itertools
import os

from ..exceptions import WorkerDied
from .isolate import run_isolated


def task(*, items: int):
    """Declare that argument ``items`` of the decorated task function is a list of source
    items it decodes (native code): its tasks run isolated, item by item."""
    def declare(func):
        func.items_argument = items
        return func
    return declare


def decodes_images(func) -> bool:
    """Whether the tasks of ``func`` decode images (and so get crash isolation)."""
    return getattr(func, "items_argument", None) is not None


def limited(source, limit):
    """The first ``limit`` items of a source (all of them when ``limit`` is None)."""
    return itertools.islice(source, limit) if limit else iter(source)


def batched(iterable, n):
    it = iter(iterable)
    while batch := list(itertools.islice(it, n)):
        yield batch


def n_workers(jobs) -> int:
    """How many tasks run at once: ``jobs`` is a process count or a ``cluster.Cluster``."""
    return jobs.n_workers if hasattr(jobs, "map") else max(1, int(jobs))


def local_threads(jobs) -> int:
    """Threads for the work a step does in the job's own process (k-means, an index's
    training): the cores ``jobs`` gives; a cluster's driver, the cores of its machine."""
    return (os.cpu_count() or 1) if hasattr(jobs, "map") else n_workers(jobs)


def run_tasks(func, tasks, jobs):
    """Yield func(*task) for each task in order, in ``jobs`` worker processes (at least one:
    see :mod:`.isolate`). At most 2 * jobs tasks are in flight, so memory stays bounded by a
    few shards. A ``cluster.Cluster`` runs the tasks on its Dask workers instead.

    How ``func`` runs is what it declares (module doc, :func:`task`)."""
    if hasattr(jobs, "map"):
        yield from jobs.map(func, tasks)
        return
    if decodes_images(func):
        at = func.items_argument
        yield from run_isolated(func, tasks, jobs, n_items=lambda task: len(task[at]),
                                what="writing its results")
    elif jobs <= 1:
        for task in tasks:
            yield func(*task)
    else:
        yield from _run_joblib(func, tasks, jobs)


def _run_joblib(func, tasks, jobs):
    from joblib import Parallel, delayed
    from joblib.externals.loky.process_executor import TerminatedWorkerError
    parallel = Parallel(n_jobs=jobs, return_as="generator", pre_dispatch="2*n_jobs")
    try:
        yield from parallel(delayed(func)(*task, parallel=True) for task in tasks)
    except TerminatedWorkerError:
        raise WorkerDied(f"a worker process died while running {func.__name__}; rerun the "
                         f"same command to resume") from None
