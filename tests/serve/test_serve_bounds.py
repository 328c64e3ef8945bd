"""`features serve` against clients that try to take its memory, its connections or its
origin: decompression bombs of every format, held uploads, slowloris, DNS rebinding, requests
aiohttp's parser refuses. A real server process and raw sockets."""
from __future__ import annotations

import json
import shutil
import socket
import time
from urllib.parse import quote, urlsplit

import cv2
import numpy as np
import pytest

pytest.importorskip("aiohttp", reason="features serve needs the [serve] extra (aiohttp)")

from serve_helpers import Server, get_json, request  # noqa: E402
from tiff_files import gray_tiff  # noqa: E402

HEADER_TIMEOUT = 2
BODY_TIMEOUT = 4
MAX_BODY_MB = 4
UPLOAD_MEMORY_MB = 32


@pytest.fixture(scope="module")
def server(small_store):
    srv = Server(small_store, "--threads", 2, "--header-timeout", HEADER_TIMEOUT,
                 "--body-timeout", BODY_TIMEOUT, "--max-body-mb", MAX_BODY_MB,
                 "--upload-memory-mb", UPLOAD_MEMORY_MB)
    yield srv
    code, err = srv.stop()
    assert code == 0, err
    assert "Traceback" not in err, err


def _rss_mb(srv) -> float:
    with open(f"/proc/{srv.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _address(srv):
    parts = urlsplit(srv.url)
    return parts.hostname, parts.port


def _host(srv) -> bytes:
    return urlsplit(srv.url).netloc.encode()


def _raw(srv, data: bytes, wait=10.0) -> bytes:
    """Send raw bytes on a new connection; everything read until it closes (or `wait`)."""
    with socket.create_connection(_address(srv), timeout=wait) as s:
        s.sendall(data)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except socket.timeout:
            pass
    return out


def _json_answer(raw: bytes):
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head[9:12])
    assert b"application/json" in head, raw[:300]
    return status, json.loads(body)


def _wait_idle(srv, tries=100):
    for _ in range(tries):
        status, body = get_json(srv.url + "api/health")
        if body["in_progress"] == 0:
            return body
        time.sleep(0.1)
    raise AssertionError(f"requests still in progress: {body}")


# ---- item: every format's size is checked before decoding ------------------------------

@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("big", [True, False], ids=["bigtiff", "tiff"])
@pytest.mark.parametrize("endpoint", ["api/search", "api/thumb"])
def test_tiff_bombs_are_refused_before_decoding(server, order, big, endpoint):
    """A header of 30000x30000 (900 Mpx; a few hundred bytes): 400 at once, nothing decoded
    (a decode would take gigabytes and seconds)."""
    before = _rss_mb(server)
    bomb = gray_tiff(size=(30000, 30000), order=order, big=big)
    status, body = get_json(server.url + endpoint, data=bomb, method="POST")
    assert status == 400 and "too many pixels (30000x30000" in body["error"], body
    assert _rss_mb(server) < before + 50


def test_a_small_bigtiff_is_served(server):
    pixels = cv2.resize(np.tile(np.arange(256, dtype=np.uint8), (64, 1)), (300, 200))
    status, headers, body = request(server.url + "api/thumb", method="POST",
                                    data=gray_tiff(pixels, big=True, order=">"))
    assert status == 200 and headers["Content-Type"] == "image/jpeg"


def test_unreadable_header_is_refused_not_decoded(server):
    no_size = b"II*\x00\x08\x00\x00\x00\x00\x00" + b"\0" * 64  # a TIFF directory without size
    status, body = get_json(server.url + "api/search", data=no_size, method="POST")
    assert status == 400 and "corrupt TIFF header" in body["error"], body


def test_memory_is_returned_when_requests_end(server):
    """Large images within the pixel limit (81 Mpx: 243 MB in color) decoded by a thumbnail
    and by a query that fails (a blank image has no features): once answered, the server
    keeps none of their pixels."""
    image = np.zeros((9000, 9000), np.uint8)
    image[::64] = 255
    data = cv2.imencode(".png", image)[1].tobytes()
    before = _rss_mb(server)
    for endpoint, expected in (("api/thumb", 200), ("api/search", 400),
                               ("api/thumb", 200), ("api/search", 400)):
        status, _, body = request(server.url + endpoint, data=data, method="POST",
                                  timeout=120)
        assert status == expected, body[:200]
    _wait_idle(server)
    grown = _rss_mb(server) - before
    print(f"\nRSS after 4 requests of 81 Mpx: {grown:+.0f} MB")
    assert grown < 150, grown


# ---- item: admission before the body, body budget, header and body deadlines ------------

def test_held_uploads_stay_within_the_upload_budget(server):
    """40 uploads of 4 MiB that send all but their last byte (160 MiB if buffered): those
    that fit the 32 MiB budget are admitted and held, the others are answered 503 (JSON) at
    once without their bodies being read; the server grows by about the budget, and the held
    ones get 408 at the body deadline, after which their memory is returned."""
    from features.serve.load import HeldUploads

    before = _rss_mb(server)
    with HeldUploads(server.url, 40, MAX_BODY_MB * 1024 * 1024, deadline=60) as held:
        during = _rss_mb(server)
        _, health = get_json(server.url + "api/health")
        admitted = UPLOAD_MEMORY_MB // MAX_BODY_MB
        assert held.held == admitted == health["in_progress"], held.statuses()
        assert set(held.statuses()) <= {503, 0}, held.answers
        refused = [a for a in held.answers if a.startswith(b"HTTP/1.1 503")]
        assert len(refused) >= 40 - admitted - 4   # a reset may beat a few answers
        assert b"uploads in memory" in refused[0] and b"application/json" in refused[0]
        time.sleep(BODY_TIMEOUT + 1)
        late = []
        for s, answer in zip(held._socks, held.answers):
            if not answer:
                s.setblocking(True)
                s.settimeout(10)
                late.append(s.recv(65536))
    assert len(late) == admitted and all(a.startswith(b"HTTP/1.1 408") for a in late), late
    _wait_idle(server)
    after = _rss_mb(server)
    print(f"\nheld uploads: RSS {before:.0f} -> {during:.0f} -> {after:.0f} MB, "
          f"answers {held.statuses()}")
    assert during - before < UPLOAD_MEMORY_MB + 40
    assert after - before < UPLOAD_MEMORY_MB / 2   # the bodies are gone with their requests


def test_a_client_that_leaves_mid_upload_is_no_error(server):
    """The server's stderr stays free of tracebacks (checked when the module's server stops)."""
    with socket.create_connection(_address(server), timeout=10) as s:
        s.sendall(b"POST /api/search HTTP/1.1\r\nHost: %s\r\nContent-Length: 100000\r\n\r\n"
                  % _host(server) + b"\xff\xd8\xff" + b"\0" * 5000)
        time.sleep(0.3)
    _wait_idle(server)


def test_admission_comes_before_the_body(small_store):
    """With one place taken by an upload in progress, the next upload is answered 503 as soon
    as its headers arrive: it never sends a byte of its body."""
    srv = Server(small_store, "--threads", 1, "--max-concurrent", 1,
                 "--body-timeout", BODY_TIMEOUT)
    try:
        with socket.create_connection(_address(srv), timeout=10) as holder:
            holder.sendall(b"POST /api/search HTTP/1.1\r\nHost: %s\r\n"
                           b"Content-Length: 1000000\r\n\r\n\xff\xd8\xff" % _host(srv))
            for _ in range(50):  # until the holder is admitted
                if get_json(srv.url + "api/health")[1]["in_progress"] == 1:
                    break
                time.sleep(0.1)
            status, body = _json_answer(_raw(srv, b"POST /api/search HTTP/1.1\r\n"
                                                  b"Host: %s\r\n"
                                                  b"Content-Length: 1000000\r\n\r\n"
                                                  % _host(srv)))
            assert status == 503 and "busy" in body["error"], body
            status, body = _json_answer(_read_all(holder))  # at the body deadline
            assert status == 408 and "did not arrive" in body["error"], body
    finally:
        code, err = srv.stop()
    assert code == 0 and "Traceback" not in err, err


def _read_all(sock) -> bytes:
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    return out


def test_slowloris_connections_are_closed(server):
    """Connections that send nothing, or a header line now and then, are closed at the
    header deadline, while the server answers others."""
    silent = socket.create_connection(_address(server))
    trickle = socket.create_connection(_address(server))
    trickle.sendall(b"GET /api/health HTTP/1.1\r\n")
    closed = set()
    for i in range(40):   # bounded: 20 s for a 2 s deadline
        for name, s in (("silent", silent), ("trickle", trickle)):
            if name in closed:
                continue
            s.settimeout(0.25)
            try:
                if s.recv(1024) == b"":
                    closed.add(name)
            except socket.timeout:
                pass
            except ConnectionResetError:
                closed.add(name)
        if "trickle" not in closed:
            try:
                trickle.sendall(b"X-Slow-%d: 1\r\n" % i)
            except OSError:
                closed.add("trickle")
        assert get_json(server.url + "api/health")[0] == 200
        if len(closed) == 2:
            break
    silent.close()
    trickle.close()
    assert closed == {"silent", "trickle"}


def _health_on(sock, srv) -> dict:
    """Ask for health on an open keep-alive connection; its JSON answer."""
    sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: " + _host(srv) + b"\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")))
    while len(body) < length:
        body += sock.recv(65536)
    assert head.startswith(b"HTTP/1.1 200"), head
    return json.loads(body)


def _until_connections(sock, srv, n):
    for _ in range(100):  # the server sees an opening or a close a moment later
        if _health_on(sock, srv)["connections"] == n:
            return
        time.sleep(0.05)
    raise AssertionError(f"the server never counted {n} connections")


def test_connections_over_the_limit_get_503_and_are_closed(small_store):
    """Idle connections count: with --max-connections 3, one asking for health and two held
    idle fill it; the next connections get a JSON 503 and are closed before anything of
    them is read, and one freed place serves again."""
    srv = Server(small_store, "--threads", 1, "--max-connections", 3)
    held = []
    try:
        held = [socket.create_connection(_address(srv), timeout=10) for _ in range(3)]
        asking = held[0]
        _until_connections(asking, srv, 3)
        for _ in range(3):  # every connection past the limit, not only the first
            raw = _raw(srv, b"GET /api/health HTTP/1.1\r\nHost: " + _host(srv) + b"\r\n\r\n")
            status, body = _json_answer(raw)
            assert status == 503 and "too many open connections (limit 3)" in body["error"]
        held.pop().close()
        _until_connections(asking, srv, 2)
        status, body = get_json(srv.url + "api/health")
        assert status == 200 and body["connections"] == 3
    finally:
        for s in held:
            s.close()
        code, err = srv.stop()
    assert code == 0, err
    assert "Traceback" not in err, err


def test_keep_alive_connection_serves_several_requests(server):
    with socket.create_connection(_address(server), timeout=10) as s:
        for _ in range(3):
            s.sendall(b"GET /api/health HTTP/1.1\r\nHost: %s\r\n\r\n" % _host(server))
            head = s.recv(65536)
            assert head.startswith(b"HTTP/1.1 200"), head


# ---- item: no paths, no foreign Host, JSON for every error -------------------------------

def test_thumbnail_404_does_not_name_the_source_folder(small_store, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(small_store, store)
    manifest = json.loads((store / "manifest.json").read_text())
    gone = str(tmp_path / "moved-away-source-folder")
    manifest["job"]["source"] = gone
    (store / "manifest.json").write_text(json.dumps(manifest))
    srv = Server(store, "--threads", 1)
    try:
        status, headers, body = request(srv.url + "api/thumb?key="
                                        + quote("coins/original.jpg"))
        assert status == 404 and headers["Content-Type"].startswith("application/json")
        error = json.loads(body)["error"]
        assert "not reachable" in error and "moved-away" not in error and "/" not in error
    finally:
        code, err = srv.stop()
    assert code == 0 and gone in err   # the operator is told where
    assert "Traceback" not in err, err


@pytest.mark.parametrize("host, ok", [
    ("attacker.example", False), ("attacker.example:{port}", False),
    ("127.0.0.1.nip.io:{port}", False), ("localhost", False), ("127.0.0.1:1", False),
    ("localhost:{port}", True), ("127.0.0.1:{port}", True), ("LOCALHOST:{port}", True),
    ("[::1]:{port}", True), (None, True)])
def test_only_loopback_host_names_are_answered(server, host, ok):
    port = _address(server)[1]
    if host is None:  # HTTP/1.0 may leave Host out: no browser does, so no rebinding
        head = b"GET /api/health HTTP/1.0\r\n"
    else:
        head = (b"GET /api/health HTTP/1.1\r\nConnection: close\r\nHost: "
                + host.format(port=port).encode() + b"\r\n")
    status, body = _json_answer(_raw(server, head + b"\r\n"))
    if ok:
        assert status == 200 and body["status"] == "ok", body
    else:
        assert status == 421 and "loopback" in body["error"], body


@pytest.mark.parametrize("raw, words", [
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", "malformed request"),
    (b"FOO / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", "malformed request"),
    (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n",
     "malformed request"),
    (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header\r\n\r\n", "malformed request"),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\0" * 32, "malformed request"),
])
def test_parser_errors_are_json(server, raw, words):
    status, body = _json_answer(_raw(server, raw))
    assert status == 400 and words in body["error"], body
    assert len(body["error"]) < 200


def test_still_up_after_all_that(server):
    body = _wait_idle(server)
    assert body["status"] == "ok"


def test_a_failed_request_keeps_no_pixels_alive(small_store):
    """The error of a pool call (a decode or extraction that failed after allocating pixels)
    leaves nothing of its work alive, without the cycle collector."""
    import asyncio
    import gc
    import weakref

    from features.serve.app import ApiError, ServeOptions, Service

    service = Service(small_store, ServeOptions(threads=1))
    alive = []

    def work():
        pixels = np.ones((1000, 1000), np.uint8)
        alive.append(weakref.ref(pixels))
        raise ApiError(400, "no features")

    async def query():
        with pytest.raises(ApiError):
            await service.run(work)

    gc.disable()
    try:
        asyncio.run(query())
        assert alive[0]() is None
    finally:
        gc.enable()
        service.close()
