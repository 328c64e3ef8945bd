"""A bounded load generator for ``features serve`` (used by the test and the benchmark).

``clients`` concurrent clients (one aiohttp session, one connection each) share a fixed list
of requests and stop when it is used up, or at ``deadline`` seconds, whichever comes first:
the loop is bounded in count and in time and never retries. Meant for loopback only.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

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
