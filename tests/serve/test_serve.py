"""`features serve` as a user meets it: a real process on a free loopback port, real HTTP."""
from __future__ import annotations

import json
import shutil
import socket
import struct
import subprocess
import sys
import time
import zlib
from urllib.parse import quote

import cv2
import numpy as np
import pytest

pytest.importorskip("aiohttp", reason="features serve needs the [serve] extra (aiohttp)")

from features.serve.app import MAX_SHORTLIST  # noqa: E402
from serve_helpers import Server, cli_env, get_json, multipart, request  # noqa: E402

MAX_BODY_MB = 1
MAX_PIXELS = 2_000_000


@pytest.fixture(scope="module")
def server(small_store):
    srv = Server(small_store, "--threads", 2, "--max-body-mb", MAX_BODY_MB,
                 "--max-pixels", MAX_PIXELS)
    yield srv
    code, err = srv.stop()
    assert code == 0, err
    assert "Traceback" not in err, err


def _bytes(small_set, key):
    return (small_set / key).read_bytes()


def test_health(server):
    status, body = get_json(server.url + "api/health")
    assert status == 200
    assert body["status"] == "ok"
    assert body["images"] == 24 and body["indexed"] == 24
    assert body["thumbnails"] is True
    assert body["search_params"] == {}   # an exact index has none
    assert body["encoding"] == "bovw" and body["image_queries"] is True
    assert "image_queries_reason" not in body


def test_uploads_on_an_index_over_vlad(small_store, small_set, tmp_path):
    """Queries by image on an index over a dense encoding of the store: the upload of a
    stored image finds that image first."""
    from features.pipeline import build_index
    from features.pipeline.aggregate import aggregate
    store = tmp_path / "store"
    shutil.copytree(small_store, store)
    aggregate(None, store, "vlad", options={"centers": 8}, progress=False, report=lambda _: None)
    build_index(store, encoding="vlad", force=True, progress=False)
    srv = Server(store, "--threads", 1)
    try:
        status, health = get_json(srv.url + "api/health")
        assert status == 200 and health["encoding"] == "vlad" and health["image_queries"]
        status, body = get_json(srv.url + "api/search?k=3",
                                data=_bytes(small_set, "coins/half.jpg"), method="POST")
        assert status == 200, body
        assert body["results"][0]["key"] == "coins/half.jpg"
        assert body["results"][0]["score"] == pytest.approx(1.0, abs=1e-3)
    finally:
        code, err = srv.stop()
    assert code == 0 and "Traceback" not in err and "no queries by image" not in err, err


def test_an_index_no_image_can_query_says_why(tmp_path, small_set):
    """An index over rows that no image can be encoded as (written by other code): the
    server starts, says so once on stderr and in /api/health, answers key queries, and an
    upload is a 400 with the reason."""
    from conftest import write_store
    from features.pipeline import build_index
    store = write_store(tmp_path / "s", np.random.default_rng(0).random((30, 16), np.float32),
                        dense=True)
    build_index(store, encoding="dense", progress=False)
    srv = Server(store, "--threads", 1)
    try:
        status, health = get_json(srv.url + "api/health")
        assert status == 200 and health["image_queries"] is False
        assert "encodings/dense" in health["image_queries_reason"]
        status, body = get_json(srv.url + "api/search",
                                data=_bytes(small_set, "coins/half.jpg"), method="POST")
        assert status == 400 and "images cannot be queries" in body["error"]
        status, body = get_json(srv.url + "api/search?key=" + quote("c1/img_000008.jpg"))
        assert status == 200 and len(body["results"]) == 10
    finally:
        code, err = srv.stop()
    assert code == 0 and "Traceback" not in err, err
    notes = [line for line in err.splitlines() if "no queries by image" in line]
    assert len(notes) == 1 and "encodings/dense" in notes[0]


def test_search_by_uploaded_bytes(server, small_set):
    status, body = get_json(server.url + "api/search?k=6",
                            data=_bytes(small_set, "coins/perspective.jpg"), method="POST")
    assert status == 200, body
    results = body["results"]
    assert len(results) == 6
    assert set(results[0]) >= {"key", "label", "name", "score"}
    assert results[0]["key"] == "coins/perspective.jpg"  # the same file is in the store
    assert results[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)
    assert sum(r["name"] == "coins" for r in results) >= 4
    assert {"queue", "query", "search", "total"} <= set(body["timing_ms"])
    assert body["query"]["width"] > 0 and body["query"]["height"] > 0


def test_multipart_upload_gives_the_same_results(server, small_set):
    data = _bytes(small_set, "rocket/crop60.jpg")
    _, raw = get_json(server.url + "api/search?k=5", data=data, method="POST")
    body, ctype = multipart("image", "q.jpg", data, extra=[("note", "ignored")])
    status, form = get_json(server.url + "api/search?k=5", data=body, method="POST",
                            headers={"Content-Type": ctype})
    assert status == 200, form
    assert [r["key"] for r in form["results"]] == [r["key"] for r in raw["results"]]


@pytest.mark.parametrize("rerank", [0, 1])
def test_search_by_key(server, rerank):
    status, body = get_json(server.url + f"api/search?key={quote('chelsea/half.jpg')}&k=5"
                            f"&rerank={rerank}")
    assert status == 200, body
    keys = [r["key"] for r in body["results"]]
    assert "chelsea/half.jpg" not in keys  # a key query leaves the image itself out
    assert len(keys) == 5 and all(k.startswith("chelsea/") for k in keys[:3])
    assert ("inliers" in body["results"][0]) == bool(rerank)


def test_search_shortlist(server):
    """Re-ranking verifies the request's shortlist only; a shortlist out of bounds is 400."""
    url = server.url + f"api/search?key={quote('chelsea/half.jpg')}&k=4&rerank=1"
    status, body = get_json(url + "&shortlist=1")
    assert status == 200, body
    inliers = [r["inliers"] for r in body["results"]]
    assert inliers[0] >= 8 and inliers[1:] == [0, 0, 0]
    status, body = get_json(url)
    assert status == 200 and [r["inliers"] for r in body["results"]][1] > 0
    for bad in (0, MAX_SHORTLIST + 1, "x"):
        status, body = get_json(url + f"&shortlist={bad}")
        assert status == 400 and "shortlist" in body["error"]


def test_matches_land_on_the_same_scene_points(server, small_set):
    """half.jpg is original.jpg at half size: in fractions of width and height, every
    verified match must join (almost) the same point of both images."""
    status, body = get_json(server.url + "api/matches?key=astronaut/original.jpg",
                            data=_bytes(small_set, "astronaut/half.jpg"), method="POST")
    assert status == 200, body
    m = np.array(body["matches"])
    assert body["inliers"] >= 10 and m.shape == (min(body["inliers"], 500), 4)
    assert (m >= 0).all() and (m <= 1).all()
    assert np.median(np.abs(m[:, :2] - m[:, 2:])) < 0.01
    assert body["result"]["key"] == "astronaut/original.jpg"
    assert body["result"]["name"] == "astronaut"
    assert body["query"]["width"] * 2 in (body["result"]["width"], body["result"]["width"] - 1)

    status, by_key = get_json(server.url + "api/matches?query=astronaut/half.jpg"
                              "&key=astronaut/original.jpg")
    assert status == 200, by_key
    assert by_key["inliers"] >= 10


def test_matches_drawn_are_those_that_ranked_the_results(server):
    """The inliers /api/matches draws are the ones the re-ranking counted for that result."""
    status, body = get_json(server.url + "api/search?key=coins/half.jpg&k=6&rerank=1")
    assert status == 200, body
    for hit in body["results"]:
        _, m = get_json(server.url + "api/matches?query=coins/half.jpg&key="
                        + quote(hit["key"]))
        assert m["inliers"] == hit["inliers"], hit["key"]
        assert len(m["matches"]) == min(m["inliers"], 500)
    assert body["results"][0]["inliers"] >= 10


def test_matches_between_different_photos_are_few(server):
    _, same = get_json(server.url + "api/matches?query=coins/jpeg15.jpg&key=coins/original.jpg")
    _, other = get_json(server.url + "api/matches?query=coins/jpeg15.jpg"
                        "&key=chelsea/original.jpg")
    assert same["inliers"] > 3 * max(other["inliers"], 3)


def test_thumbnail_of_a_result(server, small_set):
    status, headers, body = request(server.url + "api/thumb?key=" + quote("rocket/original.jpg"))
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    thumb = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    full = cv2.imread(str(small_set / "rocket/original.jpg"))
    assert max(thumb.shape[:2]) == 256
    assert thumb.shape[1] / thumb.shape[0] == pytest.approx(full.shape[1] / full.shape[0],
                                                            rel=0.01)
    small = cv2.resize(full, thumb.shape[1::-1], interpolation=cv2.INTER_AREA)
    assert np.abs(small.astype(int) - thumb).mean() < 6  # the same picture, in color


def test_thumbnail_of_an_upload(server, small_set):
    status, headers, body = request(server.url + "api/thumb", method="POST",
                                    data=_bytes(small_set, "coins/half.jpg"))
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    assert cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR) is not None


@pytest.mark.parametrize("key", ["../conftest.py", "/etc/passwd", "chelsea/../../x",
                                 "chelsea", "chelsea/original.jpg\x00.png", ""])
def test_a_key_is_never_a_path(server, key):
    status, headers, body = request(server.url + "api/thumb?key=" + quote(key))
    assert status in (400, 404)
    assert headers["Content-Type"].startswith("application/json")
    assert "error" in json.loads(body)


def _png_header(width, height):
    def chunk(kind, payload):
        return (struct.pack(">I", len(payload)) + kind + payload
                + struct.pack(">I", zlib.crc32(kind + payload)))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height,
                                                              8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def _real_bomb():
    """A real PNG of 3,000,000 pixels in a few KB (over the server's --max-pixels)."""
    ok, data = cv2.imencode(".png", np.zeros((1500, 2000), np.uint8))
    return data.tobytes()


BAD_UPLOADS = {
    "text": (b"hello, this is not an image" * 10, 415, "not an image"),
    "heic": (b"\x00\x00\x00\x18ftypheic" + b"\x00" * 64, 415, "unsupported"),
    "empty": (b"", 400, "empty"),
    "bomb-header": (_png_header(60000, 60000), 400, "too many pixels"),
    "bomb-real": (_real_bomb(), 400, "too many pixels"),
    "too-large": (b"\xff\xd8\xff" + b"\x00" * (MAX_BODY_MB * 1024 * 1024 + 10), 413, "larger"),
}


@pytest.mark.parametrize("case", sorted(BAD_UPLOADS))
@pytest.mark.parametrize("endpoint", ["api/search", "api/matches?key=coins/half.jpg"])
def test_bad_uploads_get_the_right_status(server, case, endpoint):
    data, expected, words = BAD_UPLOADS[case]
    status, headers, body = request(server.url + endpoint, data=data, method="POST")
    assert status == expected, body
    assert headers["Content-Type"].startswith("application/json")
    assert words in json.loads(body)["error"]


def test_truncated_jpeg_is_400(server, small_set):
    data = _bytes(small_set, "coins/original.jpg")
    status, body = get_json(server.url + "api/search", data=data[:len(data) // 2],
                            method="POST")
    assert status == 400 and "truncated" in body["error"]


def test_a_streamed_body_over_the_limit_is_413(server):
    def chunks():  # no Content-Length: the server has to count as it reads
        yield b"\xff\xd8\xff\xe0"
        for _ in range(MAX_BODY_MB * 16 + 2):
            yield b"\x00" * 65536
    status, headers, body = request(server.url + "api/search", data=chunks(), method="POST",
                                    headers={"Content-Type": "image/jpeg"})
    assert status == 413, body


@pytest.mark.parametrize("path, expected", [
    ("api/search?key=chelsea/half.jpg&k=0", 400),
    ("api/search?key=chelsea/half.jpg&k=ten", 400),
    ("api/search?key=chelsea/half.jpg&k=100000", 400),
    ("api/search?key=chelsea/half.jpg&rerank=maybe", 400),
    ("api/search?key=chelsea/half.jpg&nprobe=0", 400),
    ("api/search?key=chelsea/half.jpg&nprobe=4", 400),      # an exact index has no lists
    ("api/search?key=chelsea/half.jpg&k_factor=0.5", 400),
    ("api/search?key=chelsea/half.jpg&k_factor=many", 400),
    ("api/search", 400),
    ("api/search?key=no/such.jpg", 404),
    ("api/matches?query=chelsea/half.jpg", 400),
    ("api/matches?query=no/such.jpg&key=chelsea/half.jpg", 404),
    ("api/matches?query=chelsea/half.jpg&key=no/such.jpg", 404),
    ("api/nothing", 404),
    ("static/../app.py", 404),
    ("static/nothing.js", 404),
])
def test_bad_requests_get_json_errors(server, path, expected):
    status, headers, body = request(server.url + path)
    assert status == expected, body
    assert "error" in json.loads(body)


def test_wrong_method_and_bad_multipart(server):
    status, headers, body = request(server.url + "api/search", method="DELETE")
    assert status == 405 and "error" in json.loads(body)
    body, ctype = multipart("picture", "q.jpg", b"\xff\xd8\xff\xe0 not really")
    status, out = get_json(server.url + "api/search", data=body, method="POST",
                           headers={"Content-Type": ctype})
    assert status == 400 and "'image'" in out["error"]
    status, out = get_json(server.url + "api/search", data=b"--x\r\ngarbage", method="POST",
                           headers={"Content-Type": "multipart/form-data; boundary=zz"})
    assert status == 400


def test_the_page_and_its_assets(server):
    status, headers, body = request(server.url)
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b'<script src="/static/app.js">' in body
    for asset, ctype in (("app.js", "text/javascript"), ("style.css", "text/css")):
        status, headers, body = request(server.url + "static/" + asset)
        assert status == 200 and headers["Content-Type"].startswith(ctype) and body
        assert b"http://" not in body and b"https://" not in body  # nothing external


def test_still_up_after_all_that(server):
    status, body = get_json(server.url + "api/health")
    assert status == 200 and body["in_progress"] == 0


# ---- limits: a server of its own -------------------------------------------------------

def _slow_png():
    """A 30-megapixel PNG in about 40 KB: its decoding alone takes a few hundred ms."""
    row = (np.arange(6000) % 256).astype(np.uint8)
    image = np.tile(row, (5000, 1))
    image[::7] = 255 - image[::7]
    return cv2.imencode(".png", image)[1].tobytes()


def test_timeout_and_concurrency_limit(small_store):
    """One admitted request at a time and a 0.1 s deadline: a slow upload gets 503 at its
    deadline while its work goes on in the pool, and a request arriving meanwhile is
    turned away as busy (503) instead of queueing; then the server answers again."""
    srv = Server(small_store, "--threads", 1, "--max-concurrent", 1, "--timeout", 0.1)
    try:
        slow, light = _slow_png(), srv.url + "api/search?key=chelsea/half.jpg"
        busy = None
        for _ in range(5):  # bounded: a loaded machine may finish the slow work first
            status, body = get_json(srv.url + "api/search", data=slow, method="POST")
            assert status == 503 and "longer than 0.1 s" in body["error"], body
            status, body = get_json(light)
            if status == 503 and "busy" in body["error"]:
                busy = body
                break
        assert busy is not None, body
        for _ in range(100):  # the slow work ends, the server takes requests again
            status, body = get_json(srv.url + "api/health")
            if body["in_progress"] == 0:
                break
            time.sleep(0.1)
        assert body["in_progress"] == 0
        status, headers, _ = request(srv.url + "api/thumb?key=chelsea/half.jpg")
        assert status == 200
    finally:
        code, err = srv.stop()
    assert code == 0 and "Traceback" not in err, err


# ---- startup errors: one line, exit 2 --------------------------------------------------

def _serve(*args):
    return subprocess.run([sys.executable, "-m", "features", "serve", *map(str, args)],
                          capture_output=True, text=True, env=cli_env(), timeout=120)


def _one_error_line(proc, words):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("features: error: "), proc.stderr
    assert words in lines[0], lines[0]


def test_port_in_use(small_store):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        proc = _serve(small_store, "--port", port)
    _one_error_line(proc, "address already in use")


def test_missing_store(tmp_path):
    _one_error_line(_serve(tmp_path / "nothing", "--port", 0), "not a features store")


def test_store_without_index(small_store, tmp_path):
    copy = tmp_path / "store"
    shutil.copytree(small_store, copy)
    from features.index import INDEX_FILE, current_index_paths
    current_index_paths(copy)[INDEX_FILE].unlink()
    _one_error_line(_serve(copy, "--port", 0), "no search index")


@pytest.mark.parametrize("option, value", [("--threads", 0), ("--timeout", -1),
                                           ("--max-concurrent", 0), ("--max-body-mb", 0),
                                           ("--port", 70000), ("--nprobe", 4),
                                           ("--k-factor", 0), ("--header-timeout", 0),
                                           ("--body-timeout", "nan"),
                                           ("--upload-memory-mb", 0),
                                           ("--max-connections", 0)])
def test_bad_options(small_store, option, value):
    _one_error_line(_serve(small_store, "--port", 0, option, value), option.split("-")[-1])


def test_more_connections_than_open_files(small_store):
    """A connection limit the process's open-file limit cannot hold is refused at start
    (at the open-file limit accepting would fail for every client)."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        pytest.skip("no hard open-file limit to exceed")
    _one_error_line(_serve(small_store, "--port", 0, "--max-connections", hard + 1),
                    "--max-connections")


def test_upload_memory_below_the_body_limit(small_store):
    _one_error_line(_serve(small_store, "--port", 0, "--max-body-mb", 4,
                           "--upload-memory-mb", 2), "upload_memory")


def test_search_parameters_server_wide_and_per_request(small_store, tmp_path):
    """An IVF index: the server searches with --nprobe unless a request gives its own."""
    store = tmp_path / "store"
    shutil.copytree(small_store, store)
    subprocess.run([sys.executable, "-m", "features", "index", str(store), "--index",
                    "IVF4,Flat"], check=True, capture_output=True, env=cli_env(), timeout=120)
    srv = Server(store, "--threads", 1, "--nprobe", 1)
    try:
        status, body = get_json(srv.url + "api/health")
        assert status == 200 and body["search_params"] == {"nprobe": 1}
        url = srv.url + "api/search?key=coins/half.jpg&k=23"
        status, one = get_json(url)
        assert status == 200, one
        status, every = get_json(url + "&nprobe=4")   # every list: the whole store
        assert status == 200, every
        assert len(every["results"]) == 23 > len(one["results"])   # one list of 4: fewer
        status, body = get_json(url + "&k_factor=2")
        assert status == 400 and "k_factor 2 does not apply" in body["error"], body
    finally:
        code, err = srv.stop()
    assert code == 0 and "Traceback" not in err, err


# ---- load: 8 concurrent clients on loopback, bounded ------------------------------------

def test_load_eight_clients_no_errors(small_store, small_set):
    """320 valid requests (uploads, key queries, matches, thumbnails) from 8 concurrent
    clients: every one answers 200 with the expected top result. Timings are printed
    (``-s``), never asserted; benchmarks/bench_serve.py is the timed version."""
    from features.serve.load import run_load

    files = sorted(small_set.glob("*/*.jpg"))
    keys = [p.relative_to(small_set).as_posix() for p in files]
    plan = []
    for i in range(320):
        key, data = keys[i % len(keys)], files[i % len(files)].read_bytes()
        kind = i % 4
        if kind == 0:  # unique bytes (after the JPEG's end): never from the query cache
            plan.append(("POST", "/api/search?k=5", data + b"%d" % i, ("top", key)))
        elif kind == 1:
            plan.append(("GET", f"/api/search?key={quote(key)}&k=5", None,
                         ("class", key.split("/")[0])))
        elif kind == 2:
            other = key.split("/")[0] + "/original.jpg"
            plan.append(("GET", f"/api/matches?query={quote(key)}&key={quote(other)}", None,
                         ("matches", None)))
        else:
            plan.append(("GET", f"/api/thumb?key={quote(key)}", None, ("jpeg", None)))

    def check(expect, body):
        what, value = expect
        if what == "jpeg":
            return body[:3] == b"\xff\xd8\xff"
        out = json.loads(body)
        if what == "top":
            return out["results"][0]["key"] == value
        if what == "class":
            return out["results"][0]["key"].split("/")[0] == value
        return "inliers" in out

    srv = Server(small_store, "--threads", 2)
    try:
        result = run_load(srv.url, plan, clients=8, deadline=300, check=check)
    finally:
        code, err = srv.stop()
    summary = result.summary()
    print("\nload:", json.dumps(summary))
    assert result.errors == 0, result.error_examples
    assert summary["requests"] == 320 and summary["statuses"] == {"200": 320}
    assert code == 0 and "Traceback" not in err, err
