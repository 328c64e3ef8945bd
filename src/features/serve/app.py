"""The HTTP API and the web page of ``features serve``, on aiohttp.

One process holds one open :class:`~features.search.Searcher` (store, index, codebook), opened
before the port is bound, per generation of the store (:mod:`.generation`: a rerun under the
server is switched to whole, never mixed). Every piece of CPU work (decoding, extraction,
search, verification, thumbnails) runs in a thread pool of ``threads`` workers, never on the
event loop, so slow queries do not stall health checks or uploads. Requests that need the pool
are admitted when their headers arrive, before their body is read, up to ``max_concurrent`` at
once and ``upload_memory`` bytes of bodies (:mod:`features.serve.admission`); beyond that the
answer is 503 at once rather than an ever longer queue or more memory. Each request has a
deadline (``timeout``), its body one of its own (``body_timeout``): past it the client gets 503
(408) and the work still running in a thread is left to finish (a thread cannot be
interrupted), still counted against the admission limit until it does. A request's error keeps
no pixels or upload alive: the frames of a failed pool call are cleared before the error leaves
the thread.

Errors are JSON ``{"error": "..."}`` with the status that fits: 400 for a bad parameter or an
image that cannot be decoded (decompression bombs included), 404 for an unknown key, 413 for
a body over ``max_body`` bytes, 415 for bytes that are not an image format, 503 when busy,
past the deadline, when the store cannot be read consistently (:mod:`.generation`) or a file
of it changed under the server (an index file truncated or rewritten in place:
``features.index.files``), 408 for a body that does not arrive within ``body_timeout``, 421
for a ``Host`` that does not name a server listening on loopback (DNS rebinding), 500 (logged
on stderr) for a bug; the server stays up. Requests aiohttp's own parser refuses get JSON too
(:mod:`features.serve.connections`).
"""
from __future__ import annotations

import asyncio
import contextvars
import hashlib
import math
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import numpy as np
from aiohttp import BodyPartReader, web

from ..decode import MAX_PIXELS, decode_gray, image_size, sniff_format
from ..exceptions import (DecodeError, ParameterError, QueryError, StoreError,
                          ThumbnailError, first_line)
from ..search.rerank import SHORTLIST
from ..store import OK
from .admission import Admission, current_ticket
from .generation import Generation, Generations
from .index_memory import CHOICES as INDEX_MEMORY
from .thumbs import render_thumbnail

STATIC_DIR = Path(__file__).parent / "static"
# The page's assets, read once: a request path is never used to open a file.
_ASSETS = {"index.html": "text/html", "app.js": "text/javascript", "style.css": "text/css"}
_READ_CHUNK = 1 << 16
# the longest shortlist a request may ask re-ranking to verify: a bound on its cost
MAX_SHORTLIST = 1000
# the generation of the store the request being handled reads (None: the current one)
_GENERATION: contextvars.ContextVar = contextvars.ContextVar("generation", default=None)


@dataclass(frozen=True)
class ServeOptions:
    """Limits and sizes of the server (see ``features serve --help``)."""

    threads: int = 2
    max_body: int = 16 * 1024 * 1024
    max_pixels: int = MAX_PIXELS
    timeout: float = 30.0
    max_concurrent: int = 64
    max_connections: int = 1024
    header_timeout: float = 10.0
    body_timeout: float = 20.0
    upload_memory: int = 256 * 1024 * 1024
    max_k: int = 100
    thumb_side: int = 256
    thumb_cache: int = 1024
    query_cache: int = 64
    max_matches: int = 500
    # the index's search parameters for every request that gives none (nprobe, k_factor,
    # any FAISS one); None: those the store records
    search_params: dict | None = field(default=None)
    # the index copied into the server's memory or mapped (features.serve.index_memory)
    index_memory: str = "auto"

    def __post_init__(self):
        for name in ("threads", "max_body", "max_pixels", "max_concurrent", "max_connections",
                     "max_k",
                     "thumb_side", "thumb_cache", "query_cache", "max_matches",
                     "upload_memory"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ParameterError(f"{name} must be a positive integer, got {value!r}", name)
        for name in ("timeout", "header_timeout", "body_timeout"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and not isinstance(value, bool)
                    and math.isfinite(value) and value > 0):
                raise ParameterError(f"{name} must be a positive number of seconds, "
                                     f"got {value!r}", name)
        if self.index_memory not in INDEX_MEMORY:
            raise ParameterError(f"index_memory must be one of {', '.join(INDEX_MEMORY)}, "
                                 f"got {self.index_memory!r}", "index_memory")
        if self.upload_memory < self.max_body:
            raise ParameterError(f"upload_memory ({self.upload_memory:,} bytes) must be at "
                                 f"least max_body ({self.max_body:,})", "upload_memory")


class ApiError(Exception):
    """An answer other than 200: status, one readable message, extra headers."""

    def __init__(self, status: int, message: str, headers=None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def _ms(seconds):
    return round(1000 * seconds, 2)


class Service:
    """What the handlers share: the open searcher, the pool, the caches, the limits."""

    def __init__(self, store_path, options: ServeOptions | None = None):
        self.options = options or ServeOptions()
        # StoreError: not a store, or no index; ParameterError: a search parameter the
        # index does not take
        self.generations = Generations(store_path, self.options)
        self.pool = ThreadPoolExecutor(self.options.threads, thread_name_prefix="features-serve")
        self.admission = Admission(self.options.max_concurrent, self.options.upload_memory)
        self.assets = {name: (STATIC_DIR / name).read_bytes() for name in _ASSETS}

    # what a request reads comes from the generation it started on (see .generation)
    @property
    def generation(self) -> Generation:
        return _GENERATION.get() or self.generations.current

    searcher = property(lambda self: self.generation.searcher)
    store = property(lambda self: self.generation.store)
    classes = property(lambda self: self.generation.classes)
    names = property(lambda self: self.generation.names)
    files = property(lambda self: self.generation.files)
    thumbs = property(lambda self: self.generation.thumbs)
    queries = property(lambda self: self.generation.queries)
    _columns = property(lambda self: self.generation.columns)

    def close(self):
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.generations.close()

    # ---- the pool -------------------------------------------------------------------

    @property
    def admitted(self) -> int:
        return self.admission.admitted

    async def run(self, fn, *args):
        """Run ``fn(*args)`` in the pool; ``(result, seconds it waited for a worker)``."""
        generation = self.generation.enter()  # kept open until the work is over
        future = self.pool.submit(contextvars.copy_context().run, _call, fn, args,
                                  time.perf_counter())
        future.add_done_callback(generation.leave)
        ticket = current_ticket()
        if ticket is not None:
            # the request's place is freed when the work is really over, not when a
            # timed-out request gives up on it
            ticket.hold(future)
        return await asyncio.wrap_future(future)

    # ---- store lookups (in the pool: they read HDF5) -----------------------------------

    def row_of(self, key: str) -> int:
        """The store row of a key given by a client (404 when the store has no such key)."""
        i = self.store.index_of(key)
        if i is None:
            raise ApiError(404, f"no image with key {key!r} in the store")
        return int(i)

    def image_info(self, i: int) -> dict:
        """What the store says of row i; the key is read from the store, never taken from
        the request."""
        c = self._columns
        label = int(c["label"][i])
        # the key from the store's key table (an h5py read of one key decompresses its whole
        # chunk of keys: about a millisecond a request at 1.28M images)
        return {"key": self.store.key_of(i), "label": label, "name": self.name(label),
                "width": int(c["width"][i]), "height": int(c["height"][i]),
                "status": int(c["status"][i])}

    def name(self, label: int) -> str:
        if 0 <= label < len(self.names) and self.names[label]:
            return self.names[label]
        if 0 <= label < len(self.classes):
            return self.classes[label]
        return ""

    # ---- queries ----------------------------------------------------------------------

    def query_from_bytes(self, data: bytes):
        """(Query, (width, height)) of uploaded bytes, cached by their digest."""
        digest = hashlib.sha256(data).hexdigest()
        hit = self.queries.get(digest)
        if hit is not None:
            return hit
        try:
            query = self.searcher.query_from_bytes("upload", data)
            size = image_size(data)
            if size is None:  # a header this project does not parse: decode for the size
                d = decode_gray(data, 16, max_pixels=self.options.max_pixels)
                size = (d.width, d.height)
        except (QueryError, DecodeError) as e:
            raise ApiError(400, str(e).removeprefix("upload: ")) from None
        self.queries.put(digest, (query, size))
        return query, size

    def query_from_key(self, key: str):
        info = self.image_info(self.row_of(key))
        try:
            query = self.searcher.query_from_key(info["key"])
        except QueryError as e:
            raise ApiError(400, str(e)) from None
        return query, (info["width"], info["height"])

    def search(self, make_query, arg, k: int, rerank: bool, tuning=None):
        t0 = time.perf_counter()
        query, size = make_query(arg)
        t1 = time.perf_counter()
        try:
            hits = self.searcher.search(query, k, rerank=rerank, **(tuning or {}))
        except ParameterError as e:
            raise ApiError(400, str(e)) from None
        t2 = time.perf_counter()
        results = []
        for hit in hits:
            label = int(hit["label"])
            r = {"key": hit["key"], "label": label, "name": self.name(label),
                 "score": hit["score"], "thumbnail": "/api/thumb?key=" + quote(hit["key"])}
            if "inliers" in hit:
                r["inliers"] = hit["inliers"]
            results.append(r)
        return {"results": results, "query": {"width": size[0], "height": size[1]},
                "timing_ms": {"query": _ms(t1 - t0), "search": _ms(t2 - t1)}}

    def matches(self, make_query, arg, key: str):
        t0 = time.perf_counter()
        query, (qw, qh) = make_query(arg)
        i = self.row_of(key)
        info = self.image_info(i)
        if info["status"] != OK:
            raise ApiError(400, f"{key}: this image failed in the store and has no features")
        t1 = time.perf_counter()
        # the verification re-ranking runs (Searcher.verify): the inliers drawn are those
        # that ranked the result, read from the geometry records where the store has them
        m = self.searcher.matches(query, i)
        t2 = time.perf_counter()
        scale = np.float32([1 / max(qw, 1), 1 / max(qh, 1),
                            1 / max(info["width"], 1), 1 / max(info["height"], 1)])
        pairs = np.hstack([np.float32(m["query_points"]).reshape(-1, 2),
                           np.float32(m["result_points"]).reshape(-1, 2)]) * scale
        shown = np.clip(pairs[:self.options.max_matches], 0, 1)
        info.pop("status")
        info["thumbnail"] = "/api/thumb?key=" + quote(info["key"])
        return {"query": {"width": qw, "height": qh}, "result": info, "inliers": m["inliers"],
                "matches": np.round(shown.astype(np.float64), 5).tolist(),
                "timing_ms": {"features": _ms(t1 - t0), "verify": _ms(t2 - t1)}}

    def thumbnail_of_key(self, key: str) -> bytes:
        i = self.row_of(key)
        stored_key = self.image_info(i)["key"]  # the file is named by the store, not the client
        data = self.thumbs.get(stored_key)
        if data is None:
            try:
                data = render_thumbnail(self.files.read(stored_key), self.options.thumb_side,
                                        self.options.max_pixels)
            except (ThumbnailError, DecodeError) as e:
                raise ApiError(404, f"no thumbnail: {e}") from None
            self.thumbs.put(stored_key, data)
        return data

    def thumbnail_of_bytes(self, data: bytes) -> bytes:
        try:
            return render_thumbnail(data, self.options.thumb_side, self.options.max_pixels)
        except DecodeError as e:
            raise ApiError(400, str(e)) from None


def _call(fn, args, submitted):
    started = time.perf_counter()
    try:
        return fn(*args), started - submitted
    except BaseException as e:
        _forget(e)
        fn = args = None  # noqa: F841  (this frame stays in the traceback)
        raise


def _forget(error):
    """Clear the locals of the finished frames `error` passed through.

    An error travels through futures and frames that refer to each other (the future holds
    the error, the error its traceback, the traceback the frame that holds the future), so
    without this it would keep every local of those frames (decoded pixels, the upload)
    until the cycle collector runs: gigabytes per request for a large image. The errors it
    was raised from (``__context__``, ``__cause__``) hold frames too."""
    pending, seen = [error], set()
    while pending:
        e = pending.pop()
        if e is not None and id(e) not in seen:
            seen.add(id(e))
            traceback.clear_frames(e.__traceback__)
            pending += [e.__context__, e.__cause__]


# ---- request parsing ------------------------------------------------------------------

def _int_param(request, name, default, lo, hi):
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"{name} must be an integer, got {raw!r}") from None
    if not lo <= value <= hi:
        raise ApiError(400, f"{name} must be between {lo} and {hi}, got {value}")
    return value


def _float_param(request, name, lo):
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ApiError(400, f"{name} must be a number, got {raw!r}") from None
    if not (math.isfinite(value) and value >= lo):
        raise ApiError(400, f"{name} must be >= {lo:g}, got {raw}")
    return value


def _bool_param(request, name):
    raw = request.query.get(name, "0").lower()
    if raw in ("1", "true", "yes", "on", ""):
        return raw != ""
    if raw in ("0", "false", "no", "off"):
        return False
    raise ApiError(400, f"{name} must be 0 or 1, got {raw!r}")


def _key_param(request, name="key"):
    key = request.query.get(name)
    if not key:
        raise ApiError(400, f"missing query parameter {name!r} (the key of an image in the store)")
    return key


async def _read_capped(read_chunk, limit, reserve):
    # one growing buffer, not a list of chunks: a large block goes back to the system when
    # the request ends, thousands of 64 KB ones would stay in the allocator's heap
    body = bytearray()
    try:
        while True:
            chunk = await read_chunk(_READ_CHUNK)
            if not chunk:
                return bytes(body)
            if len(body) + len(chunk) > limit:
                raise ApiError(413, f"request body larger than the limit of {limit:,} bytes")
            reserve(len(chunk))
            body += chunk
    except BaseException:
        # the error's traceback holds this frame: without this, the partial body would
        # live as long as the error (until the cycle collector runs, for a timeout)
        del body[:]
        raise


async def read_image(request, options: ServeOptions) -> bytes:
    """The image of a request: the raw body, or the multipart field ``image``; checked to be
    an image format (415) whose header does not announce too many pixels (400).

    The body counts against the upload memory budget (503 when it does not fit) and has
    ``body_timeout`` seconds to arrive (408)."""
    limit = options.max_body
    length = request.content_length
    if length is not None and length > limit:
        raise ApiError(413, f"request body of {length:,} bytes is larger "
                            f"than the limit of {limit:,}")
    ticket = current_ticket()

    def reserve(nbytes):  # body bytes against the upload memory budget
        if ticket is not None and not ticket.reserve(nbytes):
            raise ApiError(503, ticket.admission.full(), {"Retry-After": "1"})

    if length is not None:
        reserve(length)  # the whole body, before reading a byte of it
    try:
        data = await asyncio.wait_for(
            _read_body(request, limit, reserve if length is None else (lambda n: None)),
            options.body_timeout)
    except asyncio.TimeoutError:
        raise ApiError(408, f"the request body did not arrive within "
                            f"{options.body_timeout:g} s") from None
    return _checked_image(data, options)


async def _read_body(request, limit, reserve):
    try:
        if request.content_type.startswith("multipart/"):
            reader = await request.multipart()
            data = None
            while (part := await reader.next()) is not None:
                if isinstance(part, BodyPartReader) and part.name == "image" and data is None:
                    data = await _read_capped(part.read_chunk, limit, reserve)
                else:
                    await part.release()
            if data is None:
                raise ApiError(400, "multipart body without an 'image' field")
        else:
            data = await _read_capped(request.content.read, limit, reserve)
    except (ValueError, AssertionError) as e:  # aiohttp's words for a malformed multipart body
        raise ApiError(400, f"malformed request body ({e})") from None
    except web.RequestPayloadError as e:  # a chunked encoding aiohttp's parser refused
        raise ApiError(400, f"malformed request body ({e})") from None
    except ConnectionError:  # the client went away: nobody reads this, nothing to log
        raise ApiError(400, "the connection was lost while the body was read") from None
    return data


def _checked_image(data, options):
    if not data:
        raise ApiError(400, "empty body: send the image bytes, or a multipart field 'image'")
    fmt = sniff_format(data)
    if fmt is None:
        raise ApiError(415, f"not an image (the body starts with {data[:8]!r})")
    try:
        size = image_size(data)
    except DecodeError as e:
        raise ApiError(400, str(e)) from None
    if fmt in ("heic", "exr", "hdr", "pfm"):
        raise ApiError(415, f"unsupported image format: {fmt}")
    if size is not None and size[0] * size[1] > options.max_pixels:
        w, h = size
        raise ApiError(400, f"too many pixels ({w}x{h} = {w * h:,} > {options.max_pixels:,})")
    return data


# ---- handlers -------------------------------------------------------------------------

def _json(data, status=200, headers=None):
    return web.json_response(data, status=status, headers=headers)


def _service(request) -> Service:
    return request.app[SERVICE]


async def page(request):
    return _asset(request, "index.html")


async def static(request):
    name = request.match_info["name"]
    if name not in _ASSETS:
        raise ApiError(404, f"no such asset: {name}")
    return _asset(request, name)


def _asset(request, name):
    return web.Response(body=_service(request).assets[name], content_type=_ASSETS[name],
                        charset="utf-8", headers={"Cache-Control": "no-cache"})


async def health(request):
    s = _service(request)
    # an index over an encoding no image can be encoded as: key queries only, and the page
    # offers no upload
    why_not = s.searcher.image_queries
    return _json({"status": "ok", "images": s.store.n_images, "indexed": s.searcher.index.ntotal,
                  "preset": s.store.config.preset, "words": s.store.config.words,
                  "encoding": s.searcher.encoding, "image_queries": why_not is None,
                  **({"image_queries_reason": why_not} if why_not else {}),
                  "thumbnails": s.files.available, "threads": s.options.threads,
                  "in_progress": s.admitted, "connections": _open_connections(request),
                  "search_params": s.searcher.params,
                  "index_memory": s.generation.index_memory,
                  "generation": {**s.generation.describe(),
                                 "pending": s.generations.pending}})


def _open_connections(request):
    limit = request.app.get(CONNECTIONS)
    return None if limit is None else limit.open


async def search(request):
    s = _service(request)
    t0 = time.perf_counter()
    k = _int_param(request, "k", 10, 1, s.options.max_k)
    rerank = _bool_param(request, "rerank")
    # this request's search parameters (the server's own apply otherwise), and how many
    # results re-ranking verifies
    tuning = {"nprobe": _int_param(request, "nprobe", None, 1, 1 << 20),
              "k_factor": _float_param(request, "k_factor", 1),
              "shortlist": _int_param(request, "shortlist", SHORTLIST, 1, MAX_SHORTLIST)}
    if request.method == "GET":
        make_query, arg = s.query_from_key, _key_param(request)
    else:
        make_query, arg = s.query_from_bytes, await read_image(request, s.options)
    out, waited = await s.run(s.search, make_query, arg, k, rerank, tuning)
    out["timing_ms"] = {"queue": _ms(waited), **out["timing_ms"],
                        "total": _ms(time.perf_counter() - t0)}
    return _json(out)


async def matches(request):
    s = _service(request)
    t0 = time.perf_counter()
    key = _key_param(request)
    if request.method == "GET":
        make_query, arg = s.query_from_key, _key_param(request, "query")
    else:
        make_query, arg = s.query_from_bytes, await read_image(request, s.options)
    out, waited = await s.run(s.matches, make_query, arg, key)
    out["timing_ms"] = {"queue": _ms(waited), **out["timing_ms"],
                        "total": _ms(time.perf_counter() - t0)}
    return _json(out)


async def thumbnail(request):
    s = _service(request)
    if request.method == "GET":
        data, _ = await s.run(s.thumbnail_of_key, _key_param(request))
        cache = "max-age=3600"
    else:
        data, _ = await s.run(s.thumbnail_of_bytes, await read_image(request, s.options))
        cache = "no-store"
    return web.Response(body=data, content_type="image/jpeg", headers={"Cache-Control": cache})


def _needs_place(request) -> bool:
    """Whether a request uses the pool or sends a body: those are admitted (the page, its
    assets and the health check never wait)."""
    return request.method not in ("GET", "HEAD") or (
        request.path.startswith("/api/") and request.path != "/api/health")


def _named_first(host):
    return not host.startswith("localhost"), host


def _guard(service: Service, hosts=None, deadlines=None):
    """The middleware: Host check, admission, deadline, every error as JSON."""
    timeout = service.options.timeout

    async def answer(request, handler):
        service.generations.poll()
        generation = service.generations.acquire()
        token = _GENERATION.set(generation)
        try:
            return await checked(request, handler)
        finally:
            _GENERATION.reset(token)
            generation.leave()

    async def checked(request, handler):
        try:
            host = request.headers.get("Host")
            if hosts is not None and host is not None and host.lower() not in hosts:
                named = " or ".join(sorted(hosts, key=_named_first)[:2])
                raise ApiError(421, f"this server listens on loopback and answers only to "
                                    f"{named}, not to Host {host[:100]!r}")
            if not _needs_place(request):
                return await asyncio.wait_for(handler(request), timeout)
            ticket = service.admission.enter()
            if ticket is None:
                raise ApiError(503, service.admission.busy(), {"Retry-After": "1"})
            with ticket:
                return await asyncio.wait_for(handler(request), timeout)
        except ApiError as e:
            _forget(e)
            return _json({"error": e.message}, e.status, e.headers)
        except web.HTTPException as e:
            if e.status < 400:
                raise
            _forget(e)
            return _json({"error": e.reason if e.text is None or e.text.startswith(str(e.status))
                          else e.text}, e.status, {k: v for k, v in e.headers.items()
                                                   if k in ("Allow", "Retry-After")})
        except StoreError as e:
            # the generation served can no longer be read whole (a rerun replaced a file
            # it had not opened yet): never a mix, the new one is opened meanwhile
            _forget(e)
            service.generations.poll(force=True)
            return _json({"error": f"the store cannot be read consistently now "
                                   f"({first_line(e, 300)}); try again"}, 503,
                         {"Retry-After": "1"})
        except asyncio.TimeoutError as e:
            _forget(e)
            return _json({"error": f"the request took longer than {timeout:g} s"}, 503,
                         {"Retry-After": "1"})
        except Exception as e:  # a bug: say so, keep serving
            print(f"features serve: error in {request.method} {request.path_qs}:",
                  file=sys.stderr)
            traceback.print_exc(file=sys.stderr)
            _forget(e)
            return _json({"error": "internal server error"}, 500)

    @web.middleware
    async def guard(request, handler):
        transport = request.transport
        if deadlines is not None:
            deadlines.disarm(transport)  # the head is in; the body has its own deadline
        try:
            response = await answer(request, handler)
        finally:
            if deadlines is not None:
                deadlines.arm(transport)  # the clock of the next request head
        if response.status >= 400 and request.body_exists and not request.content.is_eof():
            response.force_close()  # a body nobody will read: close rather than drain it
        return response

    return guard


SERVICE = web.AppKey("service", Service)
CONNECTIONS = web.AppKey("connections", object)


def create_app(service: Service, *, hosts=None, deadlines=None,
               connections=None) -> web.Application:
    """The aiohttp application over an open :class:`Service` (closed on app cleanup).

    `hosts`: the ``Host`` values answered (lower case), None for any
    (:func:`features.serve.connections.loopback_hosts`); `deadlines`: the
    :class:`~features.serve.connections.HeadDeadlines` of the connections, restarted after
    each request; `connections`: their :class:`~features.serve.connections.ConnectionLimit`
    (the health answer's count of open connections)."""
    app = web.Application(middlewares=[_guard(service, hosts, deadlines)],
                          client_max_size=service.options.max_body)
    app[SERVICE] = service
    if connections is not None:
        app[CONNECTIONS] = connections

    async def close(_app):
        service.close()

    app.on_cleanup.append(close)
    app.router.add_get("/", page)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/api/health", health)
    app.router.add_route("GET", "/api/search", search)
    app.router.add_route("POST", "/api/search", search)
    app.router.add_route("GET", "/api/matches", matches)
    app.router.add_route("POST", "/api/matches", matches)
    app.router.add_route("GET", "/api/thumb", thumbnail)
    app.router.add_route("POST", "/api/thumb", thumbnail)
    return app
