"""A bounded load generator for ``features serve`` (used by the test and the benchmark).

``clients`` concurrent clients (one aiohttp session, one connection each) share a fixed list
of requests and stop when it is used up, or at ``deadline`` seconds, whichever comes first:
the loop is bounded in count and in time and never retries. :class:`HeldUploads` opens
connections that send all but the last byte of their upload and wait, to check that held
uploads cannot take the server's memory past its upload budget. Meant for loopback only.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from ..exceptions import ParameterError


@dataclass
class LoadResult:
    requests: int
    errors: int
    seconds: float
    latencies_ms: list = field(repr=False)  # in plan order; None for a request not sent
    statuses: dict = field(default_factory=dict)
    error_examples: list = field(default_factory=list)

    def percentile(self, p: float, which=None) -> float:
        """Nearest-rank percentile of the latencies in ms (of the requests at the plan
        positions `which`, or of all), nan when there are none."""
        values = self.latencies_ms if which is None else [self.latencies_ms[i] for i in which]
        ordered = sorted(v for v in values if v is not None)
        if not ordered:
            return float("nan")
        rank = max(1, -(-len(ordered) * p // 100))  # ceil(n p / 100), at least 1
        return ordered[int(rank) - 1]

    def summary(self) -> dict:
        return {"requests": self.requests, "errors": self.errors,
                "seconds": round(self.seconds, 3),
                "requests_per_s": round(self.requests / self.seconds, 2) if self.seconds else 0,
                "p50_ms": round(self.percentile(50), 2), "p99_ms": round(self.percentile(99), 2),
                "statuses": {str(k): v for k, v in sorted(self.statuses.items())}}


async def _run(base_url, plan, clients, deadline, check):
    import aiohttp
    latencies, statuses, examples = [None] * len(plan), {}, []
    errors = 0
    queue = list(reversed(list(enumerate(plan))))
    stop_at = time.perf_counter() + deadline
    timeout = aiohttp.ClientTimeout(total=max(1.0, deadline))

    async def client(session):
        nonlocal errors
        while queue and time.perf_counter() < stop_at:
            i, (method, path, body, expect) = queue.pop()
            t0 = time.perf_counter()
            try:
                async with session.request(method, base_url.rstrip("/") + path,
                                           data=body) as r:
                    payload = await r.read()
                    status = r.status
                ok = status == 200 and (check is None or check(expect, payload))
            except (aiohttp.ClientError, asyncio.TimeoutError) as e:
                status, ok, payload = type(e).__name__, False, b""
            latencies[i] = 1000 * (time.perf_counter() - t0)
            statuses[status] = statuses.get(status, 0) + 1
            if not ok:
                errors += 1
                if len(examples) < 5:
                    examples.append(f"{method} {path}: {status} {payload[:200]!r}")

    t0 = time.perf_counter()
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    seconds = time.perf_counter() - t0
    unsent = len(queue)
    return LoadResult(len(plan) - unsent, errors + unsent, seconds, latencies, statuses,
                      examples + ([f"{unsent} requests not sent before the deadline"]
                                  if unsent else []))


def run_load(base_url: str, plan: list, *, clients: int = 8, deadline: float = 120.0,
             check=None) -> LoadResult:
    """Send every request of `plan` (``(method, path, body bytes or None, expected)``) with
    `clients` concurrent clients. A request is an error unless it answers 200 and, when
    `check` is given, ``check(expected, body)`` is true; requests left unsent at the deadline
    count as errors."""
    if clients < 1:
        raise ParameterError(f"clients must be >= 1, got {clients}", "clients")
    if not plan:
        raise ParameterError("the plan holds no requests")
    return asyncio.run(_run(base_url, plan, clients, deadline, check))


class HeldUploads:
    """`count` uploads of `size` bytes that send all but their last byte and then wait: what
    slow or hostile clients do to a server's memory (``with HeldUploads(...) as held:``).

    On entering, every connection announces its size (``Content-Length``) and sends its
    body until it is answered, closed, or has one byte left, within `deadline` seconds;
    ``answers`` then holds each connection's answer (``b""`` for one still held) and
    ``held`` how many are held. Leaving closes every connection. Loopback only.
    """

    def __init__(self, base_url: str, count: int, size: int, *, path: str = "/api/search",
                 deadline: float = 30.0):
        if count < 1 or size < 2:
            raise ParameterError("count must be >= 1 and size >= 2", "count")
        parts = urlsplit(base_url)
        self._address = (parts.hostname, parts.port or 80)
        self._head = (f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                      f"Content-Type: image/jpeg\r\nContent-Length: {size}\r\n\r\n").encode()
        self._body = memoryview(b"\xff\xd8\xff\xe0" + b"\0" * (size - 5))  # one byte short
        self.count, self.deadline = count, deadline
        self._socks, self.answers = [], []

    @property
    def held(self) -> int:
        return sum(1 for a in self.answers if not a)

    def statuses(self) -> dict:
        """{status: count} of the connections answered (0: closed without an answer)."""
        out = {}
        for a in self.answers:
            if a:
                status = int(a[9:12]) if a.startswith(b"HTTP/1.") else 0
                out[status] = out.get(status, 0) + 1
        return out

    def __enter__(self):
        import socket
        for _ in range(self.count):
            s = socket.create_connection(self._address, timeout=self.deadline)
            self._socks.append(s)
            s.sendall(self._head)
            s.setblocking(False)
        rest = [self._body] * self.count
        self.answers = [b""] * self.count
        stop_at = time.monotonic() + self.deadline
        while time.monotonic() < stop_at:
            busy = False
            for i, s in enumerate(self._socks):
                if rest[i] is not None and len(rest[i]):
                    try:
                        n = s.send(rest[i][:1 << 20])
                        rest[i] = rest[i][n:]
                        busy = busy or n > 0
                    except BlockingIOError:
                        busy = True
                    except OSError:
                        rest[i] = None
                try:
                    chunk = s.recv(65536)
                    self.answers[i] += chunk or b"<closed>"
                    rest[i] = None
                except BlockingIOError:
                    pass
                except OSError:  # reset: the server closed without reading the body
                    self.answers[i] += b"<reset>"
                    rest[i] = None
            if not any(r is not None and len(r) for r in rest):
                break
            if not busy:
                time.sleep(0.01)
        time.sleep(0.2)  # answers sent while the last bytes went out
        for i, s in enumerate(self._socks):
            try:
                self.answers[i] += s.recv(65536)
            except OSError:
                pass
        return self

    def __exit__(self, *exc):
        for s in self._socks:
            s.close()
        self._socks = []
