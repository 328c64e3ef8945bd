"""One writer per store: an exclusive lock on the store directory.

Every step that writes a store (``run``, ``extract``, ``codebook``, ``encode``, ``index``,
``aggregate``, ...) holds the lock for as long as it writes::

    from features.store.lock import store_lock

    with store_lock(out, "aggregate"):
        ...  # write shards, replace store.h5 (see features.store.atomic), save the manifest

A second writer gets :class:`StoreLocked` (a :class:`~features.exceptions.StoreError`, so the
command prints one line and exits 2) naming the holder: pid, host, command, since when.
Readers (``search``, ``info``, ``serve``) take no lock: every file they open is replaced
atomically (temporary file, then rename), so they see the old version or the new one.

The lock is the file ``STORE/lock``, created with ``O_CREAT | O_EXCL`` (atomic on local
filesystems and on NFSv3+), holding JSON ``{"pid", "host", "since", "command"}``, and kept
``flock``-ed by its holder. A lock left by a process that died (``kill -9``, a power cut)
is taken over when it was taken on this host and its ``flock`` is free (the kernel drops
it when the holder dies, even if the pid was reused since); without ``flock`` support, when
no process has that pid. A lock taken on another host is never taken over, since its
process table is not ours: the message says which host holds it and how to remove it by
hand once that job is known to be gone. The takeover is safe against several processes
doing it at once: each must ``flock`` the stale file and check it is still the one at
``STORE/lock`` before removing it, so exactly one of them wins.

The lock is reentrant within one process (``run`` takes it, then calls the steps, which take
it again); worker processes never take it.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path

from ..exceptions import StoreLocked
from .oserrors import storage_errors

LOCK_FILE = "lock"

# Locks this process holds, by store directory: the lock is reentrant within a process, and
# the kernel's flock is per open file, so the count has to live here.
_held: dict[str, list] = {}


def _key(directory) -> str:
    return os.path.realpath(directory)


def _holder(fd) -> dict:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return json.loads(os.read(fd, 65536).decode("utf-8") or "{}")
    except (OSError, ValueError):
        return {}


def _try_flock(fd) -> bool | None:
    """True if we got the flock, False if someone holds it, None if flock is unsupported."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError as e:
        if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            return None
        raise


def _flock_wait(fd) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError as e:
        if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            raise


def _pid_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError, OverflowError):
        return True
    return True


def _describe(info, path) -> str:
    if not info:
        return f"{path.parent} is locked by another writer ({path} is being created)"
    return (f"{path.parent} is being written by pid {info.get('pid')} on {info.get('host')} "
            f"(`features {info.get('command', '?')}`, since {info.get('since', '?')}); wait "
            f"for it to finish, or if that process is gone, delete {path} and rerun")


def _acquire(directory: Path, command: str, attempts=50):
    path = directory / LOCK_FILE
    host = socket.gethostname()
    for _ in range(attempts):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
        except FileExistsError:
            pass
        else:
            try:
                # Wait for the flock rather than try it: a process looking at this new,
                # still empty file holds it for a moment, and a lock whose holder lacks
                # its flock would look stale to the next one and be taken over.
                _flock_wait(fd)
                info = {"pid": os.getpid(), "host": host, "command": command,
                        "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
                os.write(fd, json.dumps(info).encode("utf-8"))
                os.fsync(fd)
            except BaseException:
                os.close(fd)
                path.unlink(missing_ok=True)
                raise
            return fd

        # Someone created the lock: find out whether its holder is still there.
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            continue                      # released meanwhile: try again
        try:
            got = _try_flock(fd)
            info = _holder(fd)
            same_file = _same_file(fd, path)
            if not same_file:
                continue                  # replaced meanwhile: look at the new one
            if not info:
                # Created but not yet written: a writer is starting, unless it died right
                # between create and write (then its flock is free and the file is old).
                if got and time.time() - os.fstat(fd).st_mtime > 10:
                    path.unlink()
                    continue
                time.sleep(0.05)
                continue
            if info.get("host") != host:
                raise StoreLocked(_describe(info, path))
            stale = got if got is not None else not _pid_alive(info.get("pid"))
            if not stale:
                raise StoreLocked(_describe(info, path))
            # We hold the flock of a stale lock that is still the one in place: remove it,
            # and race for a fresh one with O_EXCL like anyone else.
            path.unlink()
        finally:
            os.close(fd)
    raise StoreLocked(f"{directory}: could not take the store lock {path} "
                      f"(it keeps changing hands)")


def _same_file(fd, path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


@contextlib.contextmanager
def store_lock(directory, command="run"):
    """Hold the exclusive writer lock of the store ``directory`` (created if missing).

    Raises :class:`StoreLocked` at once (no waiting) when another process holds it.
    """
    directory = Path(directory)
    key = _key(directory)
    if key in _held:
        _held[key][1] += 1
        try:
            yield
        finally:
            _held[key][1] -= 1
        return
    with storage_errors(directory):
        directory.mkdir(parents=True, exist_ok=True)
        fd = _acquire(directory, command)
    _held[key] = [fd, 1]
    try:
        yield
    finally:
        del _held[key]
        # Remove the file while still holding its flock, so nobody can take over a lock
        # that is being released.
        with contextlib.suppress(OSError):
            if _same_file(fd, directory / LOCK_FILE):
                (directory / LOCK_FILE).unlink()
        os.close(fd)


def lock_holder(directory) -> dict | None:
    """The holder recorded in the store's lock file, or None when it is not locked."""
    path = Path(directory) / LOCK_FILE
    try:
        return json.loads(path.read_text() or "{}")
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
