"""Work in child processes, so that a native crash on one item is one failed item.

Decoders and extractors are native code (libjpeg, libpng, OpenCV): a pathological file can
crash the process that reads it (a segmentation fault, an abort, the kernel's out-of-memory
kill). Batch work therefore never runs in the process that holds the job: it runs in worker
processes, a task (a shard, a batch of images) at a time, also for ``--jobs 1``.

Isolating each image in its own process would cost a process per image. Instead a worker
announces each item before it starts on it (one small message on its pipe). When a worker
dies, the item it announced last is the culprit: it becomes a failed item (reason
``crashed the decoder``) and the task is run again in a fresh worker with that item
skipped. A task is thus rerun once per culprit, and nothing is ever lost or counted twice.

Workers are forked from a fork server (``multiprocessing``'s ``forkserver``) that imported
the package once, so starting one costs milliseconds; they take no lock, ignore Ctrl-C and
SIGTERM (sent to the whole process group, by a terminal or by SLURM and systemd: the job
stops them, and a worker the signal killed would look like a crash), run single-threaded
libraries (one worker per core), and exit quietly when the job's process is gone.

A fault can be injected for tests: ``FEATURES_TEST_CRASH_ON="segv:KEY"`` (or ``abort:KEY``,
``kill:KEY``) makes the worker that reaches the item ``KEY`` crash in that way.
"""
from __future__ import annotations

import collections
import contextlib
import multiprocessing
import multiprocessing.connection
import multiprocessing.process
import os
import signal
import sys
import threading
import time
from pathlib import Path

from .._shared.threads import single_threaded_libraries
from ..exceptions import WorkerDied

CRASH_REASON = "crashed the decoder"
FAULT_ENV = "FEATURES_TEST_CRASH_ON"

_SIGNALS = {signal.SIGSEGV: "segmentation fault", signal.SIGABRT: "abort",
            signal.SIGKILL: "killed, likely out of memory", signal.SIGBUS: "bus error",
            signal.SIGFPE: "arithmetic fault", signal.SIGILL: "illegal instruction"}


def _how(exitcode) -> str:
    if exitcode is not None and exitcode < 0:
        return _SIGNALS.get(-exitcode, f"signal {-exitcode}")
    return f"exit status {exitcode}"


def crash_reason(exitcode) -> str:
    return f"{CRASH_REASON} ({_how(exitcode)})"


# The folder that holds this very package (a checkout, or site-packages).
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
# A worker's start changes process-wide state for a moment (the environment, __main__).
_start_lock = threading.Lock()


def _context():
    ctx = multiprocessing.get_context("forkserver")
    # The fork server imports the package once; every worker forked from it has it ready.
    ctx.set_forkserver_preload(["features.pipeline.tasks"])
    return ctx


@contextlib.contextmanager
def _fork_server_environment():
    """The environment in which the fork server starts (when a worker's start finds it not
    running), so that it imports this very package.

    The server is a new interpreter started with ``python -c``, which puts its working
    directory first on its path, and it does not take the job's ``sys.path`` (Python 3.11):
    started in a checkout's root it would import the checkout's ``features/``, whose kernels
    are not compiled, rather than the installed package the job runs. So it starts with
    this package's folder first on ``PYTHONPATH`` and with ``PYTHONSAFEPATH`` (no working
    directory on its path); the job's own environment is restored right after.
    """
    names = ("PYTHONPATH", "PYTHONSAFEPATH")
    saved = {name: os.environ.get(name) for name in names}
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (_PACKAGE_ROOT, saved["PYTHONPATH"]) if p)
    os.environ["PYTHONSAFEPATH"] = "1"
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def _main_that_cannot_run_again_hidden():
    """Hide ``__main__.__file__`` while a worker starts when it names no file.

    A worker runs the job's main script again (as ``__mp_main__``) before it starts, as
    ``multiprocessing`` does to find what the main module defines. A script read from stdin
    (``python -``) names ``<stdin>``, which is no file: the worker would die before its first
    task. Workers need nothing of such a main module (their tasks are this package's), so
    they start without it, as they do for ``python -c`` and in a notebook.
    """
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if (path is None or getattr(getattr(main, "__spec__", None), "name", None) is not None
            or os.path.isfile(os.path.join(multiprocessing.process.ORIGINAL_DIR or "", path))):
        yield
        return
    del main.__file__
    try:
        yield
    finally:
        main.__file__ = path


def inject_fault(item_key, fault):
    """The test hook: crash this process if ``fault`` names this item."""
    if not fault:
        return
    kind, _, key = fault.partition(":")
    if key != item_key:
        return
    if kind == "segv":
        import ctypes
        ctypes.string_at(0)
    elif kind == "abort":
        os.abort()
    elif kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)


def _watch_parent(pid):
    while True:
        time.sleep(0.5)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            os._exit(1)
        except PermissionError:
            pass


def _serve(conn, parent_pid, fault):
    """A worker's loop: run tasks until told to stop or the job's process is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # h5py reports handles it cannot close (after a failed write) as "Exception ignored";
    # the failure itself is sent to the job, which prints it as one line.
    sys.unraisablehook = lambda _: None
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    single_threaded_libraries()
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            os._exit(0)
        if message is None:
            os._exit(0)
        task_id, func, args, kwargs = message

        def announce(i, _id=task_id):
            _send(conn, ("item", _id, i))

        try:
            result = func(*args, **kwargs, on_item=announce, fault=fault)
        except BaseException as e:          # noqa: BLE001 - everything goes to the job
            try:
                _send(conn, ("error", task_id, e))
            except Exception:                # an exception that does not pickle
                _send(conn, ("error", task_id, RuntimeError(f"{type(e).__name__}: {e}")))
            if isinstance(e, (OSError, RuntimeError)):
                # HDF5 may hold handles it cannot close (a full disk): leave without
                # closing anything rather than crash while tidying up.
                os._exit(0)
            continue
        _send(conn, ("done", task_id, result))


def _send(conn, message):
    """Send to the job; when the job is gone (its end of the pipe closed), leave quietly:
    nobody is left to read a result or a traceback."""
    try:
        conn.send(message)
    except (BrokenPipeError, ConnectionResetError):
        os._exit(0)


class _Worker:
    def __init__(self, ctx, fault):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child, os.getpid(), fault), daemon=True)
        with _start_lock, _fork_server_environment(), _main_that_cannot_run_again_hidden():
            self.proc.start()
        child.close()
        self.task = None        # task id in progress
        self.current = -1       # item announced last

    def send(self, task_id, func, args, kwargs):
        self.task, self.current = task_id, -1
        self.conn.send((task_id, func, args, kwargs))

    def stop(self):
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.conn.close()

    def kill(self):
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(5)
        self.conn.close()


def run_isolated(func, tasks, jobs=1, *, n_items=len, max_ahead=None, what="working"):
    """Yield ``func(*task, skip=..., on_item=..., fault=...)`` for each task, in task order,
    computed in ``jobs`` worker processes.

    ``func`` must accept ``skip`` (a dict: item index -> reason, items to leave out as
    crashed), ``on_item`` (called with each item's index before work on it starts, and
    with the number of items before the task writes its output) and ``fault`` (the test
    hook, see :func:`inject_fault`). ``n_items(task)`` is the number of items of a task.
    At most ``max_ahead`` (2 * jobs) tasks are taken from ``tasks`` ahead of the one
    yielded next, so memory stays bounded.
    """
    ctx = _context()
    fault = os.environ.get(FAULT_ENV)
    jobs = max(1, int(jobs))
    max_ahead = max_ahead or 2 * jobs
    source = iter(tasks)
    args_of, skip_of = {}, collections.defaultdict(dict)
    queue = collections.deque()          # task ids waiting for a worker
    results = {}
    next_id = next_out = 0
    exhausted = False
    workers = [_Worker(ctx, fault) for _ in range(jobs)]
    try:
        while True:
            while not exhausted and next_id - next_out < max_ahead:
                try:
                    args_of[next_id] = tuple(next(source))
                except StopIteration:
                    exhausted = True
                    break
                queue.append(next_id)
                next_id += 1
            while next_out in results:
                del args_of[next_out]
                skip_of.pop(next_out, None)
                yield results.pop(next_out)
                next_out += 1
            if exhausted and next_out == next_id:
                return
            for w in workers:
                if w.task is None and queue:
                    t = queue.popleft()
                    w.send(t, func, args_of[t], {"skip": dict(skip_of[t])})
            busy = [w for w in workers if w.task is not None]
            if not busy:
                # Every task taken so far is done and yielded: take more (waiting on no
                # connection would block forever).
                continue
            ready = multiprocessing.connection.wait(
                [w.conn for w in busy] + [w.proc.sentinel for w in busy])
            for w in busy:
                if w.conn not in ready and w.proc.sentinel not in ready:
                    continue
                messages, died = [], False
                try:
                    while w.conn.poll():
                        messages.append(w.conn.recv())
                except (EOFError, OSError):
                    died = True
                for kind, t, value in messages:
                    if kind == "item":
                        w.current = value
                    elif kind == "done":
                        results[t] = value
                        w.task = None
                    else:
                        raise value
                if w.task is not None and (died or not w.proc.is_alive()):
                    w.proc.join(5)
                    t, i = w.task, w.current
                    if i < 0 or i >= n_items(args_of[t]) or i in skip_of[t]:
                        raise WorkerDied(f"a worker process died while {what} "
                                         f"({_how(w.proc.exitcode)}); rerun the same "
                                         f"command to resume")
                    skip_of[t][i] = crash_reason(w.proc.exitcode)
                    queue.appendleft(t)
                    w.task = None
                    w.kill()
                    workers[workers.index(w)] = _Worker(ctx, fault)
    finally:
        for w in workers:
            if w.task is None:
                w.stop()
        for w in workers:
            if w.task is not None:
                w.kill()
            else:
                w.proc.join(2)
                if w.proc.is_alive():
                    w.proc.kill()


def call_isolated(func, *args, what="working"):
    """``func(*args)`` in a worker process: its native crash cannot take the job with it.

    ``func`` receives the hook keywords of :func:`run_isolated` and has no items."""
    for result in run_isolated(func, [args], 1, n_items=lambda _: 0, what=what):
        return result
