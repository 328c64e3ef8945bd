"""The errors `features` raises on purpose: one hierarchy under :class:`FeaturesError`.

Every error here is about the user's input or the state of their files, and its message is
one line that says what is wrong and, where there is one, the fix. The command line prints
exactly these (and the operating system's ``OSError``) as one line and exits 2; anything
else is a bug, and the command shows its traceback.

=================  ======================  ==================================================
class              also a                  raised for
=================  ======================  ==================================================
ParameterError     ``ValueError``          an argument out of range or of the wrong kind; it
                                           names the parameter (``param``), which the command
                                           line shows as its flag
SourceError                                a source that cannot be opened or read as a whole
DecodeError                                bytes that are not a usable image
StoreError                                 a path that is not a store, a damaged store, a
                                           store that does not hold what was asked, a disk
                                           that refused a write
StoreLocked        ``StoreError``          another command holds the store's writer lock
IndexDamaged       ``StoreError``          an index file that is not the one its manifest
                                           records (size, checksum, dimension, vectors)
IndexChanged       ``StoreError``          an index file changed on disk (truncated or
                                           rewritten in place) while a process has it open
WorkerDied         ``StoreError``          a worker process died outside of any item
QueryError                                 a query that is neither a readable image nor a key
BaselineError                              an experiment that cannot be run on these stores
ClusterError                               a Dask scheduler that cannot be reached or used
ServeError                                 a server that cannot start on this store or address
ThumbnailError                             a source image the server cannot show
=================  ======================  ==================================================

``ParameterError`` is also a ``ValueError`` so that code calling the library keeps catching
bad arguments the way NumPy and scikit-learn users do.
"""
from __future__ import annotations


class FeaturesError(Exception):
    """Base of every error `features` raises on purpose (see the table above)."""


class ParameterError(FeaturesError, ValueError):
    """An argument out of range or of the wrong kind.

    ``param`` is the name of the parameter when the message starts with it
    (``"centers must be >= 2, got 1"``): the command line shows it as ``--centers``."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


class SourceError(FeaturesError):
    """A source that cannot be opened or listed."""


class DecodeError(FeaturesError):
    """Bytes that are not a usable image (the reason is the message)."""


class StoreError(FeaturesError):
    """A path that is not a store, or a store that does not hold what was asked."""


class StoreLocked(StoreError):
    """Another command is writing the store."""


class IndexDamaged(StoreError):
    """An index file that does not match the manifest's record of its build."""


class IndexChanged(StoreError):
    """An index file that was truncated or rewritten in place while it was open (mapped):
    the process can no longer read it safely."""


class WorkerDied(StoreError):
    """A worker process died outside of any item (not a decoder crash)."""


class QueryError(FeaturesError):
    """A query that is neither a readable image nor a key of the store."""


class BaselineError(FeaturesError):
    """An experiment that cannot be run on the stores given."""


class ClusterError(FeaturesError):
    """A cluster address that cannot be used, or a cluster that failed the job."""


class ServeError(FeaturesError):
    """A server that cannot start (the store, the address or the options)."""


class ThumbnailError(FeaturesError):
    """A source image that cannot be shown (missing, unreadable or not an image)."""


__all__ = ["FeaturesError", "ParameterError", "SourceError", "DecodeError", "StoreError",
           "StoreLocked", "IndexDamaged", "IndexChanged", "WorkerDied", "QueryError",
           "BaselineError", "ClusterError", "ServeError", "ThumbnailError"]


def first_line(exc, limit: int | None = 200) -> str:
    """The first line of an exception's message (or of a text; its class name when it has
    none), cut to ``limit`` characters (None: not cut): how an error of a library below is
    quoted inside one of ours."""
    text = str(exc).strip()
    text = text.splitlines()[0] if text else type(exc).__name__
    return text if limit is None else text[:limit]
