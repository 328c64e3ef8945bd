"""Admission control of ``features serve``: how many requests, and how many body bytes, at once.

A request that needs the worker pool is admitted when its headers arrive, before a byte of
its body is read, or turned away at once (503): a server at its limit never buffers another
upload. An admitted request holds its place from its headers until the pool work it started
has finished, even when the client was answered earlier (a request past its deadline gets its
503, but the thread it started cannot be interrupted, so its place stays taken until the
thread is done): abandoned work cannot pile up.

Bodies are held in memory while they are read and decoded, so they have their own budget:
``upload_memory`` bytes for all admitted requests together. A body announced with a
``Content-Length`` reserves its size before reading; a chunked one reserves as it reads. A
body that does not fit in what is left is turned away (503), so that held uploads cannot take
the server's memory past ``upload_memory`` whatever ``max_concurrent`` is. Once a large
body's request is over, the allocator is asked to give its free pages back to the system
(:func:`features._shared.memory.return_free_memory`, once for requests ending together),
so that the server's size does not keep the high-water mark of its busiest moment.

The current request's :class:`Ticket` travels in a context variable, so that the pool call
(:meth:`features.serve.app.Service.run`) can tie its work to the request that started it.
"""
from __future__ import annotations

import asyncio
import contextvars
from concurrent.futures import Future

from .._shared.memory import return_free_memory

_CURRENT: contextvars.ContextVar[Ticket | None] = contextvars.ContextVar(
    "features_serve_ticket", default=None)

# a body at least this large is worth giving back to the system when its request ends
_LARGE_BODY = 1 << 20
# after its ticket, a request's buffers are freed as its handler and connection finish
_TRIM_DELAY = 0.2


class Admission:
    """The counters shared by all requests of one server (event-loop thread only)."""

    def __init__(self, max_concurrent: int, upload_memory: int):
        self.max_concurrent = max_concurrent
        self.upload_memory = upload_memory
        self.admitted = 0     # requests holding a place
        self.reserved = 0     # body bytes reserved by them
        self._trim = None     # the pending return of free memory

    def enter(self) -> Ticket | None:
        """A place for one request; None when ``max_concurrent`` are admitted already
        (:meth:`busy` says so)."""
        if self.admitted >= self.max_concurrent:
            return None
        self.admitted += 1
        return Ticket(self)

    def busy(self) -> str:
        return (f"server busy: {self.admitted} requests in progress "
                f"(limit {self.max_concurrent}); retry shortly")

    def body_freed(self):
        """A large body's request is over: return free memory to the system shortly."""
        if self._trim is None:
            self._trim = asyncio.get_running_loop().call_later(_TRIM_DELAY, self._trimmed)

    def _trimmed(self):
        self._trim = None
        return_free_memory()

    def full(self) -> str:
        return (f"server busy: {self.reserved:,} bytes of uploads in memory "
                f"(limit {self.upload_memory:,}); retry shortly")


class Ticket:
    """One admitted request: its place, its reserved body bytes, its unfinished pool work."""

    def __init__(self, admission: Admission):
        self.admission = admission
        self._released = False
        self._bytes = 0
        self._work = 0
        self._left = False
        self._token = None

    # the request's lifetime (the middleware) -------------------------------------------

    def __enter__(self):
        self._token = _CURRENT.set(self)
        return self

    def __exit__(self, *exc):
        _CURRENT.reset(self._token)
        self._left = True
        self._release_if_done()

    # what the request does -------------------------------------------------------------

    def reserve(self, nbytes: int) -> bool:
        """Reserve `nbytes` more of the body budget; False when they do not fit
        (:meth:`Admission.full` says so)."""
        admission = self.admission
        if admission.reserved + nbytes > admission.upload_memory:
            return False
        admission.reserved += nbytes
        self._bytes += nbytes
        return True

    def hold(self, future: Future):
        """Keep the place until `future` (pool work of this request) is done."""
        loop = asyncio.get_running_loop()
        self._work += 1

        def done(_):
            self._work -= 1
            self._release_if_done()

        def signal(f):
            try:
                loop.call_soon_threadsafe(done, f)
            except RuntimeError:  # the loop closed at shutdown: nobody counts any more
                pass

        future.add_done_callback(signal)

    def _release_if_done(self):
        if self._left and self._work == 0 and not self._released:
            self._released = True
            self.admission.admitted -= 1
            self.admission.reserved -= self._bytes
            if self._bytes >= _LARGE_BODY:
                self.admission.body_freed()


def current_ticket() -> Ticket | None:
    """The ticket of the request being handled in this task, if it was admitted."""
    return _CURRENT.get()
