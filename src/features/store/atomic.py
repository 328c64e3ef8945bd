"""Atomic files: a writer fills a temporary beside the target, then renames it into place.

Readers therefore see the old file or the new one, never half of one. A temporary is named
``.NAME.tmp-HOST-PID`` after its writer, so that writers on different hosts of a cluster
never share one, and so that :func:`remove_stale_temporaries` can tell a dead writer's
leftovers (this host, a process that is gone) from a live one's. A work folder a step fills
and removes (the index's parts) is named the same way, and removed the same way when its
writer died.
"""
from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import socket
from pathlib import Path

HOST = socket.gethostname().replace("-", "_")


def atomic_path(path) -> Path:
    """The temporary a writer fills before renaming it to ``path``: named by host and pid,
    so writers on different hosts of a cluster never share one."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{HOST}-{os.getpid()}")


@contextlib.contextmanager
def atomic_file(path):
    """Yield a temporary path beside ``path``; on success rename it onto ``path`` (atomic on
    POSIX: readers see the old file or the new one, never half of one), on any error remove it.

    Whatever writes the temporary file (h5py, numpy, open) must have closed it before the
    block ends. ``store.h5`` is always replaced this way; to add to it, copy it to the
    temporary path, open that with h5py in "r+" mode, write, close, and let this rename it.
    """
    path = Path(path)
    tmp = atomic_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def remove_stale_temporaries(*directories, finished=False):
    """Remove the temporaries of dead writers from ``directories``.

    A temporary is stale when its writer (named by host and pid) is a dead process of this
    host; other hosts' are left, as their writers may still run. Once every task of a step
    has finished (``finished``), all are stale."""
    for tmp in itertools.chain.from_iterable(Path(d).glob(".*.tmp-*") for d in directories):
        if finished:
            _remove(tmp)
            continue
        host, _, pid = tmp.name.rpartition("-")
        if host.rpartition("-")[2] != HOST:
            continue
        try:
            os.kill(int(pid), 0)
        except (ValueError, ProcessLookupError):
            _remove(tmp)
        except PermissionError:
            pass


def _remove(path):
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
