"""Running the pipeline's tasks on a Dask distributed cluster.

The tasks are the same functions the local workers run (``tasks.sample_batch``,
``tasks.process_shard``, the aggregation tasks): they take plain data and write their own
shard files, atomically, into the store directory. So a cluster run needs nothing of the
workers but the same version of `features` and a filesystem path to the source and the
store that they share with the driver. The driver alone writes the manifest and merges.

    with Cluster("local:2") as cluster:          # or "tcp://host:8786"
        pipeline.run(config, source, out, jobs=cluster)

Before any task runs, every worker is asked for its version of `features` and to write a
file into the store, so a mismatch or an unreachable store is one clear error, not a hang.
A worker that dies mid-task (its shard's temporary file is left behind) has its task
rescheduled on another worker by Dask; shard files are renamed into place only when
complete, so a task that ran twice writes the same file twice. A scheduler that goes away
ends the job with one :class:`ClusterError` (the finished shards are kept: a rerun
resumes); while a ``Cluster`` is open, Dask's own log lines on the driver (reconnect
attempts and their tracebacks) are held back, as that error says what happened.

A task never waits for ever for a worker: a cluster left with no worker (all died, or were
stopped) ends the job with one :class:`ClusterError` when none has joined within
``LOST_WORKERS_TIMEOUT`` seconds (the finished shards are kept: a rerun resumes). A
``local:N`` cluster is this job's own, so it is first given N new workers: on a loaded
machine, a nanny whose worker a crashing image killed can fail to start it again, and the
job would otherwise wait with tasks and no worker.
"""
from __future__ import annotations

import collections
import functools
import logging
import os
import socket
import sys
import time
import uuid
from pathlib import Path

import numpy as np

from ..exceptions import ClusterError, ParameterError, first_line


# Arrays above this size are sent to every worker once, not with each task.
# How long a job waits for a worker when its cluster has none left, and how often it looks.
LOST_WORKERS_TIMEOUT = 60.0
_POLL = 2.0
_RESTART_AFTER = 5.0

_SCATTER_BYTES = 1 << 16

# The worker processes of ``local:N`` run as joblib's do. Dask's nanny starts workers with
# MALLOC_TRIM_THRESHOLD_=65536, which also fixes glibc's mmap threshold at 128 KiB: every
# larger array (an image, its descriptors, the assignment's bound matrix) is then a fresh
# mmap, page-faulted and zeroed, about 1,100 page faults per sbow image; pass 2 ran at 0.63x
# joblib's speed with it (benchmarks/results/cluster.md). The statistical profiler samples
# the task thread every 10 ms, a few percent of a core per worker; the dashboard's task
# stream does not need it.
_LOCAL_WORKER_CONFIG = {
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
    "distributed.worker.profile.enabled": False,
}


def _with_test_fault(func, *task, parallel=True):
    """Run an image task on a Dask worker, with the test hook of a local worker
    (``FEATURES_TEST_CRASH_ON``, see ``isolate.inject_fault``) read on the worker."""
    from .isolate import FAULT_ENV
    return func(*task, parallel=parallel, fault=os.environ.get(FAULT_ENV))


def _worker_version():
    from .. import __version__
    return __version__


def _worker_malloc_trim():
    return os.environ.get("MALLOC_TRIM_THRESHOLD_")


def _worker_can_write(directory):
    """Create and remove a file in the store's directory, as a shard writer would."""
    directory = Path(directory)
    probe = directory / f".probe.tmp-{socket.gethostname()}-{os.getpid()}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"features")
        probe.unlink()
    except OSError as e:
        return f"cannot write {directory}: {e.strerror or e}"
    return None


def parse_spec(spec: str):
    """``local:N`` -> ("local", N); ``tcp://host:port`` (or tls://, ws://...) -> ("remote", spec)."""
    if spec.startswith("local:"):
        try:
            n = int(spec[len("local:"):])
        except ValueError:
            n = 0
        if n < 1:
            raise ParameterError(f"cluster local:N needs N >= 1 workers, got {spec!r}", "cluster")
        return "local", n
    if "://" in spec and spec.split("://", 1)[1]:
        return "remote", spec
    raise ParameterError(f"cluster must be local:N or a scheduler address such as "
                         f"tcp://host:8786, got {spec!r}", "cluster")


class Cluster:
    """A connection to a Dask scheduler (or a LocalCluster of single-threaded workers).

    ``timeout`` bounds every wait of the connection phase: reaching the scheduler, seeing
    a first worker, the version and write checks.
    """

    def __init__(self, spec: str, *, store=None, timeout: float = 10.0, stream=None):
        try:
            import dask
            import distributed
        except ImportError:
            raise ClusterError("a cluster needs Dask distributed: pip install '.[cluster]'")
        kind, arg = parse_spec(spec)
        self.spec, self.timeout = spec, timeout
        self.stream = stream if stream is not None else sys.stderr
        self._local = None
        self._n_local = arg if kind == "local" else 0
        self._log_levels = _hold_back_dask_logs()
        try:
            if kind == "local":
                with dask.config.set(_LOCAL_WORKER_CONFIG):
                    # loopback only, the dashboard too: a local cluster is this
                    # machine's, and Dask's dashboard address ":0" means every interface
                    self._local = distributed.LocalCluster(
                        n_workers=arg, threads_per_worker=1, processes=True,
                        host="127.0.0.1", dashboard_address="127.0.0.1:0",
                        silence_logs=logging.ERROR)
                self.client = distributed.Client(self._local, timeout=timeout)
            else:
                self.client = distributed.Client(arg, timeout=timeout)
        except (OSError, TimeoutError) as e:
            self.close()
            raise ClusterError(f"cannot reach the Dask scheduler at {spec}: "
                               f"{first_line(e, None)}") from None
        try:
            self._check_workers(store)
        except BaseException:
            self.close()
            raise
        link = self.client.dashboard_link if self.client.scheduler_info().get("services") else None
        print(f"cluster: {self.n_workers} workers at {self.client.scheduler.address}"
              + (f", dashboard {link}" if link else ""), file=self.stream)
        trimmed = self.client.run(_worker_malloc_trim, on_error="return")
        trimmed = [w for w, value in trimmed.items() if isinstance(value, str)]
        if trimmed:
            print(f"cluster: {len(trimmed)} of {self.n_workers} workers run with "
                  f"MALLOC_TRIM_THRESHOLD_ set (Dask's nanny sets it), which costs pass 2 about "
                  f"1.6x the CPU per image; see README, 'On a Dask cluster'", file=self.stream)

    def _check_workers(self, store):
        from .. import __version__
        try:
            self.client.wait_for_workers(1, timeout=self.timeout)
        except (TimeoutError, OSError):
            raise ClusterError(f"no worker joined the Dask scheduler at {self.spec} within "
                               f"{self.timeout:g} s; start workers with `dask worker "
                               f"{self.client.scheduler.address}`") from None
        versions = self.client.run(_worker_version, on_error="return")
        for worker, version in sorted(versions.items()):
            if isinstance(version, BaseException):
                raise ClusterError(f"worker {worker} cannot run features "
                                   f"({first_line(version, None)}); install features "
                                   f"{__version__} on the workers")
            if version != __version__:
                raise ClusterError(f"worker {worker} has features {version}, the driver has "
                                   f"{__version__}; install the same version on every worker")
        if store is not None:
            target = str(Path(store).resolve() / "shards")
            answers = self.client.run(_worker_can_write, target, on_error="return")
            for worker, problem in sorted(answers.items()):
                if problem:
                    raise ClusterError(f"worker {worker} {first_line(problem, None)}; the store "
                                       f"must be on a filesystem the workers share and can "
                                       f"write")

    @property
    def n_workers(self) -> int:
        return max(1, len(self.client.scheduler_info()["workers"]))

    def map(self, func, tasks):
        """Yield ``func(*task, parallel=True)`` for each task, in task order.

        At most two tasks per worker are in flight, so the driver holds a few shards'
        worth of inputs and results whatever the size of the job.

        A task that decodes images (``runner.decodes_images``) and kills every worker that
        runs it (a file that crashes native code) is run once more by the driver in an
        isolated local process, which finds the image and makes it a failed item, as a
        local run does; the driver reads the same source and writes the same store.
        """
        from asyncio import CancelledError

        from distributed import KilledWorker
        from distributed.client import FutureCancelledError
        from distributed.comm import CommClosedError
        from .runner import decodes_images, run_tasks
        scattered = {}
        pending = collections.deque()
        limit = 2 * self.n_workers
        tag = uuid.uuid4().hex[:8]
        remote = functools.partial(_with_test_fault, func) if decodes_images(func) else func

        def submit(number, task):
            args = [self._scatter(a, scattered) for a in task]
            future = self.client.submit(remote, *args, parallel=True, pure=False,
                                        key=f"{func.__name__}-{tag}-{number}")
            return future, task

        def result(future, task):
            try:
                return self._result(future)
            except (FutureCancelledError, CancelledError, CommClosedError) as e:
                raise ClusterError(f"lost the Dask scheduler at {self.spec} "
                                   f"({first_line(e, None)}); the finished shards are kept: "
                                   f"restart the scheduler and rerun to resume") from None
            except KilledWorker as e:
                if not decodes_images(func):
                    raise ClusterError(f"task {future.key} killed every worker that ran it "
                                       f"({first_line(e, None)}); see the workers' logs") from None
            print(f"cluster: task {future.key} killed every worker that ran it; running it "
                  f"here in an isolated process to find the image", file=self.stream)
            return next(run_tasks(func, [task], 1))

        try:
            for number, task in enumerate(tasks):
                pending.append(submit(number, task))
                if len(pending) >= limit:
                    yield result(*pending.popleft())
            while pending:
                yield result(*pending.popleft())
        finally:
            for future, _ in pending:
                future.cancel()

    def _result(self, future):
        """``future.result()``, watching that the cluster keeps a worker to run it."""
        alone_since = None
        while True:
            try:
                return future.result(timeout=_POLL)
            except TimeoutError:
                pass
            if self.client.scheduler_info().get("workers"):
                alone_since = None
                continue
            now = time.monotonic()
            alone_since = alone_since or now
            if self._local is not None and now - alone_since > _RESTART_AFTER:
                print(f"cluster: no worker left in {self.spec}; starting {self._n_local} new "
                      f"ones", file=self.stream)
                self._local.scale(0)
                self._local.scale(self._n_local)
                alone_since = None
                continue
            if now - alone_since > LOST_WORKERS_TIMEOUT:
                raise ClusterError(f"the Dask cluster at {self.spec} has had no worker for "
                                   f"{LOST_WORKERS_TIMEOUT:g} s (all stopped or died); the "
                                   f"finished shards are kept: start workers and rerun to "
                                   f"resume")

    def _scatter(self, arg, scattered):
        if isinstance(arg, np.ndarray) and arg.nbytes >= _SCATTER_BYTES:
            key = id(arg)
            if key not in scattered:
                scattered[key] = (arg, self.client.scatter(arg, broadcast=True, hash=False))
            return scattered[key][1]
        return arg

    def close(self):
        client = getattr(self, "client", None)
        try:
            if client is not None:
                client.close()
            if self._local is not None:
                self._local.close()
        finally:
            for name, level in self._log_levels.items():
                logging.getLogger(name).setLevel(level)
            self._log_levels = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _hold_back_dask_logs():
    """Raise every ``distributed`` logger above CRITICAL; their previous levels, for
    ``close`` to put back (the logging configuration is the process's, not ours)."""
    names = ["distributed"] + [n for n in list(logging.root.manager.loggerDict)
                               if n.startswith("distributed.")]
    levels = {}
    for name in names:
        logger = logging.getLogger(name)
        levels[name] = logger.level
        logger.setLevel(logging.CRITICAL + 1)
    return levels
