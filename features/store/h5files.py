"""HDF5 files written so that a failed write (a full disk) is one clean ``OSError``.

When HDF5 fails to write a file on disk, it can neither flush nor close it, and closing it
(also when the handle is garbage-collected, or at exit) may crash the process. Two ways
around it:

- :func:`write_h5`: files of bounded size (a shard's encoding, models) are built in memory
  (HDF5's core driver) and written with plain file writes, whose failure is an ordinary
  ``OSError``; nothing of HDF5 ever touches the disk.
- :func:`h5_writing`: big files (``store.h5``) are written by HDF5 in a worker process
  (``features.pipeline.isolate``); on a failed write the handle is abandoned, not closed,
  the temporary removed, and the worker leaves right after reporting the error.
"""
from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import threading
from pathlib import Path

import h5py

from .atomic import atomic_file

# HDF5 files whose writes failed: closing one could crash the process, so they are kept
# open until the (worker) process leaves.
_abandoned: list = []
_names = itertools.count()
_names_lock = threading.Lock()


@contextlib.contextmanager
def h5_writing(tmp, copy_from=None, reserve=0):
    """An HDF5 file being written at the temporary path ``tmp`` (a new one, or a copy of
    ``copy_from`` opened to add to it), removed if anything fails; on a failed write the
    handle is abandoned (see the module doc). The caller renames ``tmp`` into place.

    ``reserve``: bytes to allocate on the disk beyond the copy before HDF5 writes anything
    (HDF5 writes new objects at its own end of the file, inside them, and cuts the rest
    off when it closes the file): a disk without them is an ``OSError`` here, before HDF5
    could fail half-way through a write."""
    try:
        if copy_from is not None:
            shutil.copyfile(copy_from, tmp)
        if reserve:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                os.posix_fallocate(fd, os.fstat(fd).st_size, int(reserve))
            finally:
                os.close(fd)
        f = h5py.File(tmp, "r+" if copy_from is not None else "w")
    except BaseException:
        with contextlib.suppress(OSError):
            Path(tmp).unlink()
        raise
    try:
        yield f
        f.close()
    except BaseException as e:
        with contextlib.suppress(OSError):
            Path(tmp).unlink()
        if isinstance(e, (OSError, RuntimeError)):
            _abandoned.append(f)     # a failed write: closing could crash, see above
        else:
            f.close()
        raise


def h5_image(fill) -> bytes:
    """The bytes of an HDF5 file that ``fill(f)`` writes, built in memory."""
    with _names_lock:
        name = f"memory-{os.getpid()}-{next(_names)}"
    with h5py.File(name, "w", driver="core", backing_store=False) as f:
        fill(f)
        f.flush()
        return f.id.get_file_image()


def write_h5(path, fill) -> None:
    """Write the HDF5 file ``fill(f)`` makes to ``path`` atomically: built in memory, then
    written with plain writes (a full disk is an ``OSError``, the temporary removed)."""
    image = h5_image(fill)
    with atomic_file(path) as tmp, open(tmp, "wb") as out:
        out.write(image)
