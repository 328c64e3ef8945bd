"""The connections of ``features serve``: a bound on how many are open, deadlines for
request heads, JSON for the errors aiohttp's own HTTP parser answers, Host names a loopback
server accepts, and the run loop.

Every open connection holds a file descriptor and a little memory, whatever it sends; without
a bound, clients that open connections and keep them (within the head deadline, or busy with
slow requests) would take the process to its open-file limit, where accepting fails for
everyone. :class:`ConnectionLimit` counts the open connections and answers the one over
``max_connections`` with a JSON 503 and closes it, never handing its bytes to the parser.

aiohttp waits for a request head (request line and headers) without a deadline of its own
before version 3.14, so a client that sends a header line now and then (slowloris) would
hold its connection for ever. :class:`HeadDeadlines` closes a connection that has not
delivered a complete head within ``seconds`` of opening, or of the end of its previous
request (an idle keep-alive connection is closed after the same time). The body has its own
deadline, applied where it is read (:func:`features.serve.app.read_image`).

Requests that aiohttp's parser refuses (a request line over 8190 bytes, a method it does not
know, a malformed header) never reach the application; :func:`_protocol_class` makes their
answer JSON like every other error, through the request handler's ``handle_error`` hook.
"""
from __future__ import annotations

import asyncio
import ipaddress
import signal
import sys
import traceback

from aiohttp import web


BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json; charset=utf-8"
        b"\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s")


class ConnectionLimit:
    """Counts open connections; those over `maximum` are answered 503 and closed.

    A refused connection's answer is followed by the end of the server's half and the
    connection lingers for up to `linger` seconds, its bytes read and dropped, before it is
    closed: closed at once with the client's request unread, the kernel would reset it and
    the client could lose the 503 before reading it. At most `maximum` refused connections
    linger at a time; past that they are closed at once."""

    def __init__(self, maximum: int, linger: float = 1.0):
        self.maximum, self.linger = maximum, linger
        self._open: set = set()
        self._lingering: set = set()
        message = (b'{"error": "too many open connections (limit %d); retry shortly"}'
                   % maximum)
        self._busy = BUSY % (len(message), message)

    @property
    def open(self) -> int:
        return len(self._open)

    def admit(self, transport) -> bool:
        """Count a new connection, or answer 503, close it and return False."""
        if len(self._open) < self.maximum:
            self._open.add(transport)
            return True
        transport.write(self._busy)
        if len(self._lingering) < self.maximum and transport.can_write_eof():
            transport.write_eof()
            self._lingering.add(transport)
            asyncio.get_running_loop().call_later(self.linger, transport.close)
        else:
            transport.close()
        return False

    def refused(self, transport) -> bool:
        return transport in self._lingering

    def release(self, transport):
        self._open.discard(transport)
        self._lingering.discard(transport)


class HeadDeadlines:
    """Closes connections that do not deliver a request head within `seconds`."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self._timers: dict = {}

    def arm(self, transport):
        """Start (or restart) the clock of a connection waiting for its next request."""
        self.disarm(transport)
        if transport is not None and not transport.is_closing():
            loop = asyncio.get_running_loop()
            self._timers[transport] = loop.call_later(self.seconds, self._expire, transport)

    def disarm(self, transport):
        """A request head arrived (or the connection is gone): stop the clock."""
        timer = self._timers.pop(transport, None)
        if timer is not None:
            timer.cancel()

    def _expire(self, transport):
        self._timers.pop(transport, None)
        transport.close()


def _protocol_class(deadlines: HeadDeadlines, limit: ConnectionLimit):
    class Protocol(web.RequestHandler):
        __slots__ = ()

        def connection_made(self, transport):
            super().connection_made(transport)
            if limit.admit(transport):
                deadlines.arm(transport)

        def connection_lost(self, exc):
            deadlines.disarm(self.transport)
            limit.release(self.transport)
            super().connection_lost(exc)

        def data_received(self, data):
            if not limit.refused(self.transport):  # a refused one's request is not read
                super().data_received(data)

        def handle_error(self, request, status=500, exc=None, message=None):
            if request.writer.output_size > 0:  # an answer is on its way: nothing to add
                raise ConnectionError("response already started")
            if status == 500:
                print("features serve: error outside the handlers:", file=sys.stderr)
                if exc is not None:
                    traceback.print_exception(exc, file=sys.stderr)
                text = "internal server error"
            elif status == 504:
                text = "the request took too long"
            else:
                # the parser's first words ("Invalid method encountered", "Got more than
                # 8190 bytes when reading"), without the raw bytes it quotes
                reason = (message or "bad request").strip().splitlines()[0]
                text = f"malformed request ({reason.split(':')[0][:120]})"
            response = web.json_response({"error": text}, status=status)
            response.force_close()
            return response

    return Protocol


def loopback_hosts(address: str, port: int) -> frozenset | None:
    """The ``Host`` values a server bound to `address`:`port` answers, lower case; None (any)
    unless `address` is a loopback address.

    A server on loopback is only reachable from this machine, but a web page in a browser
    here can reach it under a name of the page's own whose DNS answer turns into 127.0.0.1
    (DNS rebinding); the browser then sends that name as ``Host``. Accepting only loopback
    names shuts that door. Behind a reverse proxy, bind another address or have the proxy
    send ``Host: localhost:PORT``.
    """
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return None
    if not ip.is_loopback:
        return None
    names = {"localhost", "127.0.0.1", "[::1]",
             str(ip) if ip.version == 4 else f"[{ip.compressed}]"}
    hosts = {f"{name}:{port}" for name in names}
    if port == 80:  # a browser leaves the default port out
        hosts |= names
    return frozenset(hosts)


def run(app: web.Application, sock, deadlines: HeadDeadlines, limit: ConnectionLimit, *,
        shutdown_timeout=5.0):
    """Serve `app` on the listening socket `sock` until SIGINT or SIGTERM."""
    asyncio.run(_serve(app, sock, deadlines, limit, shutdown_timeout))


async def _serve(app, sock, deadlines, limit, shutdown_timeout):
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # keepalive_timeout: aiohttp's own idle deadline, the same as ours (newer versions
    # apply it from the opening of a connection too)
    runner = web.AppRunner(app, handle_signals=False, access_log=None,
                           keepalive_timeout=deadlines.seconds,
                           shutdown_timeout=shutdown_timeout)
    await runner.setup()
    server, protocol = runner.server, _protocol_class(deadlines, limit)

    def connection():
        handler = server()
        handler.__class__ = protocol  # the same object with the two hooks above
        return handler

    listener = await loop.create_server(connection, sock=sock)
    try:
        await stop.wait()
    finally:
        listener.close()
        await runner.cleanup()
