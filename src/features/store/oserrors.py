"""Storage errors (disk full, read-only, a path under a file, permissions) as one line.

Writers wrap their work in :func:`storage_errors`; an ``OSError`` about the store (also
the ones HDF5 reports, whose errno is only in the message) becomes a
:class:`~features.exceptions.StoreError` naming the path and the cause, which the command
prints as one line before exiting 2. Temporary files are removed by the code that made
them (``features.store.atomic.atomic_file``), so a rerun resumes once the cause is gone.
"""
from __future__ import annotations

import contextlib
import errno
import os
import re

from ..exceptions import StoreError

# errno -> what to tell the user
_CAUSES = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EEXIST: "exists and is not a folder",
    errno.EIO: "input/output error",
    errno.EFBIG: "file too large for the file system",
    errno.ENAMETOOLONG: "file name too long",
}

_HDF5_ERRNO = re.compile(r"errno = (\d+)")


def os_error_number(exc: BaseException) -> int | None:
    """The errno of an OSError, also when HDF5 put it only in the message (HDF5 reports
    some failed writes as RuntimeError)."""
    if getattr(exc, "errno", None):
        return exc.errno
    m = _HDF5_ERRNO.search(str(exc))
    return int(m.group(1)) if m else None


def describe(exc: BaseException, where) -> str:
    number = os_error_number(exc)
    cause = _CAUSES.get(number) or (os.strerror(number) if number else str(exc))
    path = getattr(exc, "filename", None) or where
    return f"{path}: cannot write the store: {cause}"


def is_storage_error(exc: BaseException) -> bool:
    return (isinstance(exc, (OSError, RuntimeError)) and not isinstance(exc, FileNotFoundError)
            and os_error_number(exc) in _CAUSES)


@contextlib.contextmanager
def storage_errors(where):
    """Turn storage ``OSError``s raised inside into a one-line :class:`StoreError`."""
    try:
        yield
    except StoreError:
        raise
    except (OSError, RuntimeError) as e:
        if not is_storage_error(e):
            raise
        raise StoreError(describe(e, where)) from None
