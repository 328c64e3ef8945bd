"""``features serve``: a JSON API and a web page for query-by-image search over one store.

The application lives in :mod:`features.serve.app` (aiohttp), its admission control in
:mod:`features.serve.admission`, connection deadlines and the run loop in
:mod:`features.serve.connections`, thumbnails in :mod:`features.serve.thumbs`, the page's
HTML/CSS/JS in ``static/`` beside them.
"""
from __future__ import annotations

import importlib.util
import os
import socket
import sys

from ..exceptions import ParameterError, ServeError


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket, bound before the event loop starts so that a port in use is one
    clear error rather than a traceback from inside the server."""
    if not 0 <= port <= 65535:
        raise ParameterError(f"port must be between 0 and 65535, got {port}", "port")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise ServeError(f"cannot listen on {host}:{port}: unknown host ({e.strerror})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        # lets a restarted server take its port back from connections still in TIME_WAIT;
        # binding a port that another server listens on still fails
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as e:
        sock.close()
        hint = "; is another server running there? choose another --port" \
            if e.errno == 98 else ""
        raise ServeError(f"cannot listen on {host}:{port}: "
                         f"{(e.strerror or str(e)).lower()}{hint}") from None
    sock.setblocking(False)
    return sock


# descriptors the server needs besides its connections: the store's and the index's files,
# the listening socket, the pool's and the event loop's, a thumbnail's source image
OTHER_FILES = 64


def _open_files_for(max_connections: int):
    """Raise the process's soft open-file limit so that `max_connections` connections fit
    (up to the hard limit), or refuse: at the limit, accepting fails for every client."""
    import resource
    needed = max_connections + OTHER_FILES
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard == resource.RLIM_INFINITY or hard >= needed:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
            return
        except (ValueError, OSError):  # above the kernel's own ceiling (fs.nr_open)
            hard = soft
    raise ParameterError(f"max_connections {max_connections} needs {needed} open files, and "
                         f"this process may open {hard} (ulimit -n); lower --max-connections "
                         f"to at most {max(1, hard - OTHER_FILES)} or raise the limit",
                         "max_connections")


def serve(store, host: str = "127.0.0.1", port: int = 8000, **limits) -> int:
    """Open `store` and its index, listen on host:port and serve until SIGINT or SIGTERM.

    Prints one line with the address once it listens (``--port 0`` takes a free port and
    the line says which). `limits` are fields of :class:`features.serve.app.ServeOptions`
    (threads, max_body, max_pixels, timeout, max_concurrent, max_connections, header_timeout,
    body_timeout, upload_memory, ...). On a loopback address only ``Host`` headers naming
    loopback with the port are answered (421 otherwise). Raises StoreError for a path that
    is not a store or a store without an index, ServeError when the port cannot be bound,
    ParameterError for a bad limit (or more connections than the open-file limit allows).
    """
    if importlib.util.find_spec("aiohttp") is None:
        raise ServeError("features serve needs aiohttp: pip install '.[serve]'")
    from .app import ServeOptions, Service, create_app
    from .connections import ConnectionLimit, HeadDeadlines, loopback_hosts, run
    from .generation import mapped_note

    options = ServeOptions(**limits)  # ParameterError naming a bad limit, before opening anything
    _open_files_for(options.max_connections)
    # OpenCV's own pixel limit, a second line behind the header checks; read by OpenCV at its
    # first decode
    os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(options.max_pixels))
    import cv2
    import faiss

    service = Service(store, options)
    try:
        sock = _listen(host, port)
    except ServeError:
        service.close()
        raise
    # each request is one task on one pool thread: the pool, not OpenCV or FAISS threads
    # inside a request, is what uses the cores
    cv2.setNumThreads(1)
    faiss.omp_set_num_threads(1)
    # a mapped file changed in place under a read (the key table; the index when it is
    # mapped, in the microseconds after the check before each search) ends in SIGBUS:
    # then at least the reason is on stderr
    import faulthandler
    if not faulthandler.is_enabled():
        faulthandler.enable()
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    print(f"features: serving {service.store.dir} ({service.store.n_images} images, "
          f"{service.options.threads} threads) on http://{shown}:{bound_port}/", flush=True)
    if service.generation.index_memory == "map":
        print(mapped_note(service.generation), file=sys.stderr, flush=True)
    if service.searcher.image_queries:
        print(f"features: note: no queries by image, only by key "
              f"({service.searcher.image_queries})", file=sys.stderr, flush=True)
    if not service.files.available:
        print(f"features: note: no thumbnails ({service.files.reason})", file=sys.stderr,
              flush=True)
    deadlines = HeadDeadlines(options.header_timeout)
    limit = ConnectionLimit(options.max_connections)
    app = create_app(service, hosts=loopback_hosts(bound_host, bound_port), deadlines=deadlines,
                     connections=limit)
    run(app, sock, deadlines, limit, shutdown_timeout=5)
    return 0


__all__ = ["ServeError", "serve"]
