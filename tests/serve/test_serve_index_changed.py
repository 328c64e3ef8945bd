"""A server whose index files are truncated or rewritten in place (``cp`` over them,
``rsync --inplace``) while it serves them: it searches its own copy of them, answers 503
naming the file, and never dies of SIGBUS."""
from __future__ import annotations

import json
import random
import shutil
import threading
import time
from urllib.parse import quote

import pytest

pytest.importorskip("aiohttp", reason="features serve needs the [serve] extra (aiohttp)")

from conftest import run_cli  # noqa: E402
from serve_helpers import Server, get_json, request  # noqa: E402

from features.index import INDEX_FILE, REFINE_FILE, current_index_paths, index_record  # noqa: E402

KEY = quote("chelsea/half.jpg")


def _store(small_store, tmp_path, factory, cli_env):
    copy = tmp_path / "store"
    shutil.copytree(small_store, copy)
    if factory:
        run_cli("index", copy, "--index", factory, env=cli_env, check=True)
    return copy


def _truncate_in_place(path):
    """What ``cp`` over the file does first: the same inode, cut short."""
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 3)


@pytest.mark.parametrize("factory, name", [
    ("IVF2,Flat,Refine(Sparse)", REFINE_FILE),   # index.refine
    (None, INDEX_FILE),                          # the exact index
])
def test_index_file_cut_short_under_the_server_is_503(small_store, tmp_path, cli_env,
                                                      factory, name):
    store = _store(small_store, tmp_path, factory, cli_env)
    record = index_record(store)
    assert record["io_flag"] != "none" or name == REFINE_FILE   # the API would map it
    server = Server(store)
    try:
        url = server.url + f"api/search?key={KEY}&k=5"
        status, before = get_json(url)
        assert status == 200 and len(before["results"]) == 5
        _truncate_in_place(current_index_paths(store)[name])
        for endpoint in (url, server.url + "api/search?k=3&key=" + quote("coins/half.jpg")):
            status, body = get_json(endpoint)
            assert status == 503, body
            assert name in body["error"] and "in place" in body["error"], body
            assert len(body["error"].splitlines()) == 1
        assert server.proc.poll() is None                 # still serving
        status, health = get_json(server.url + "api/health")
        assert status == 200 and health["status"] == "ok"
        assert health["index_memory"] == "copy"           # a small index: copied
    finally:
        code, err = server.stop()
    assert code == 0, err
    assert "Traceback" not in err and "memory-mapped" not in err, err


def test_a_rebuild_under_the_server_leaves_its_files_alone(small_store, tmp_path, cli_env):
    """The project's own writer never touches a file in use: the server keeps answering
    from the generation it opened while a build switches to another and removes it."""
    store = _store(small_store, tmp_path, None, cli_env)
    server = Server(store, "--index-memory", "map")
    try:
        url = server.url + f"api/search?key={KEY}&k=5"
        status, before = get_json(url)
        assert status == 200
        assert get_json(server.url + "api/health")[1]["index_memory"] == "map"
        run_cli("index", store, "--index", "IVF2,Flat,Refine(Sparse)", env=cli_env,
                check=True)
        status, after = get_json(url)
        assert status == 200, after
        assert [r["key"] for r in after["results"]] == [r["key"] for r in before["results"]]
        assert server.proc.poll() is None
    finally:
        code, err = server.stop()
    assert code == 0 and "Traceback" not in err, err
    # mapped on request: said once at start, in one line
    notes = [line for line in err.splitlines() if "memory-mapped" in line]
    assert len(notes) == 1 and "in place" in notes[0] and "--index-memory map" in notes[0]


def _rewrite_in_place(path, original, rng):
    """``cp`` of other bytes over the file: the same inode truncated, then written."""
    with open(path, "r+b") as f:
        f.truncate(0)
        f.flush()
        f.write(bytes(rng.getrandbits(8) for _ in range(min(64, len(original))))
                + original[64:][::-1])
        f.flush()


def _generation(server):
    return get_json(server.url + "api/health")[1]["generation"]["number"]


def _hammer(url, stop, answers):
    """Searches over real sockets until ``stop``: each answer kept as (status, body)."""
    while not stop.is_set():
        status, _, body = request(url, timeout=60)
        answers.append((status, body))


@pytest.mark.parametrize("factory", ["IVF2,Flat,Refine(Sparse)", None])
def test_index_files_rewritten_in_place_under_load_never_stop_the_server(
        small_store, tmp_path, cli_env, factory):
    """The server reads its own copy of the index files: truncating them, writing other
    bytes over them, or leaving them empty while searches run answers 200 (the copy) or
    503 with one line naming the file, and never kills the process (SIGBUS)."""
    store = _store(small_store, tmp_path, factory, cli_env)
    paths = current_index_paths(store)
    names = [n for n in (INDEX_FILE, REFINE_FILE) if n in paths]
    assert len(names) == (2 if factory else 1)
    originals = {n: paths[n].read_bytes() for n in names}
    server = Server(store)
    answers, stop = [], threading.Event()
    rng = random.Random(0)
    try:
        keys = ["chelsea/half.jpg", "coins/half.jpg", "rocket/original.jpg",
                "astronaut/original.jpg"]
        urls = [server.url + f"api/search?k=5&key={quote(k)}" for k in keys]
        status, before = get_json(urls[0])
        assert status == 200, before
        threads = [threading.Thread(target=_hammer, args=(u, stop, answers)) for u in urls]
        for t in threads:
            t.start()
        try:
            generation = before_generation = _generation(server)
            for round_ in range(12):
                # the original bytes back (in place): the server switches to a generation
                # opened on them, whose checks pass, and the rewrites below hit searches
                # that are reading it
                for name in names:
                    paths[name].write_bytes(originals[name])
                deadline = time.monotonic() + 15
                while _generation(server) == generation and time.monotonic() < deadline:
                    time.sleep(0.05)
                generation = _generation(server)
                for _ in range(10):
                    for name in names:
                        _rewrite_in_place(paths[name], originals[name], rng)
            assert generation > before_generation + 5     # the rewrites hit fresh ones
            for name in names:            # truncated to nothing, and left so
                paths[name].write_bytes(b"")
            time.sleep(1.0)
            assert server.proc.poll() is None
        finally:
            stop.set()
            for t in threads:
                t.join(120)
        # the files on disk are empty now: every search says which file changed
        for url in urls:
            status, body = get_json(url)
            assert status == 503 and body["error"].count("\n") == 0, body
            assert any(n in body["error"] for n in names), body
        status, health = get_json(server.url + "api/health")
        assert status == 200, health
        assert server.proc.poll() is None
    finally:
        code, err = server.stop()
    assert code == 0, err
    assert "Bus error" not in err and "Traceback" not in err, err
    statuses = {}
    for status, body in answers:
        statuses[status] = statuses.get(status, 0) + 1
        assert status in (200, 503), (status, body[:300])
        if status == 503:
            error = json.loads(body)["error"]
            assert "\n" not in error and any(n in error for n in names), error
    assert len(answers) > 100 and statuses.get(200), statuses


def test_auto_copies_an_index_within_its_bound_and_maps_a_larger_one(small_store,
                                                                     monkeypatch):
    from features.serve import index_memory
    from features.exceptions import ParameterError
    size = index_memory.index_bytes(small_store)
    assert size == sum(p.stat().st_size for p in current_index_paths(small_store).values())
    assert index_memory.memory_limit() > 0
    assert index_memory.choose(small_store)[0] == "copy"
    monkeypatch.setattr(index_memory, "memory_limit", lambda: 4 * size - 4)
    mode, why = index_memory.choose(small_store)
    assert mode == "map" and "over the copy bound" in why
    assert index_memory.choose(small_store, "copy")[0] == "copy"
    with pytest.raises(ParameterError, match="index_memory"):
        index_memory.choose(small_store, "mmap")
