"""A server whose store is rewritten by a rerun under it serves one generation at a time:
every answer is wholly the old store's or wholly the new one's, then the new one's."""
from __future__ import annotations

import hashlib
import json
import shutil
import threading
import time
from urllib.parse import quote

import pytest

from features.index import current_index_paths

pytest.importorskip("aiohttp", reason="features serve needs the [serve] extra (aiohttp)")

from serve_helpers import Server, get_json, request  # noqa: E402

NEW_KEY = "aaa_added_folder_with_a_long_name/astronaut_copy.jpg"
GONE_KEY = "chelsea/half.jpg"


def _build(small_config, source, out):
    from features.pipeline import run
    from features.sources import open_source
    run(small_config, open_source(str(source)), out, progress=False)


@pytest.fixture
def job(tmp_path, small_set, small_config):
    """(source folder, store) built from a copy of the small set."""
    source = tmp_path / "images"
    shutil.copytree(small_set, source)
    out = tmp_path / "store"
    _build(small_config, source, out)
    return source, out


def _change(source):
    """A rerun's new source: one image gone, one added before every other key (so that
    every row, key offset and shard after it moves)."""
    (source / GONE_KEY).unlink()
    (source / NEW_KEY).parent.mkdir()
    shutil.copyfile(source / "astronaut/original.jpg", source / NEW_KEY)


def _requests(source):
    upload = (source / "coins/original.jpg").read_bytes()
    q = quote
    return {
        "key": ("api/search?k=5&key=" + q("rocket/original.jpg"), None),
        "new key": ("api/search?k=5&key=" + q(NEW_KEY), None),
        "gone key": ("api/search?k=5&key=" + q(GONE_KEY), None),
        "rerank": ("api/search?k=5&rerank=1&key=" + q("coins/half.jpg"), None),
        "upload": ("api/search?k=5", upload),
        "upload rerank": ("api/search?k=5&rerank=1", upload),
        "matches": ("api/matches?key=" + q("coins/half.jpg") + "&query=" + q("coins/jpeg15.jpg"),
                    None),
        "thumb": ("api/thumb?key=" + q("coins/half.jpg"), None),
        "gone thumb": ("api/thumb?key=" + q(GONE_KEY), None),
    }


def _answer(url, path, data):
    """What an answer says, without its timings."""
    status, headers, body = request(url + path, data=data, method="POST" if data else None)
    if headers.get("Content-Type", "").startswith("image/"):
        return status, hashlib.sha256(body).hexdigest()
    out = json.loads(body)
    if status != 200:
        assert "\n" not in out["error"], out
        return (status,) if status != 503 else (status, "busy or changing")
    out.pop("timing_ms", None)
    return status, json.dumps(out, sort_keys=True)


def _all(url, reqs):
    return {name: _answer(url, path, data) for name, (path, data) in reqs.items()}


def _generation(url):
    status, body = get_json(url + "api/health")
    assert status == 200, body
    return body


def _wait_for_generation(url, number, deadline=120.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        health = _generation(url)
        if health["generation"]["number"] >= number:
            return health
        time.sleep(0.1)
    raise AssertionError(f"generation {number} was never served: {health}")


def test_a_rerun_under_a_running_server_is_switched_whole(job, small_config):
    source, out = job
    srv = Server(out, "--threads", 2)
    try:
        reqs = _requests(source)
        old = _all(srv.url, reqs)
        assert old["new key"][0] == 404 and old["gone key"][0] == 200
        assert old["gone thumb"][0] == 200
        assert all(old[n][0] == 200 for n in ("key", "rerank", "upload", "matches", "thumb"))
        assert _generation(srv.url)["generation"]["number"] == 1

        seen, stop = [], threading.Event()

        def hammer():
            while not stop.is_set():
                for name, (path, data) in reqs.items():
                    seen.append((name, _answer(srv.url, path, data)))

        clients = [threading.Thread(target=hammer) for _ in range(2)]
        for c in clients:
            c.start()
        try:
            _change(source)
            _build(small_config, source, out)      # the rerun, under the running server
            health = _wait_for_generation(srv.url, 2)
            new = _all(srv.url, reqs)
        finally:
            stop.set()
            for c in clients:
                c.join()
    finally:
        code, err = srv.stop()
    assert code == 0 and "Traceback" not in err, err

    assert health["images"] == 24 and health["indexed"] == 24  # one gone, one added
    assert health["generation"]["switched"] is not None and health["generation"]["pending"] is None
    # after the switch the new keys are found and the gone ones are not
    assert new["new key"][0] == 200 and new["gone key"][0] == 404
    assert new["gone thumb"][0] == 404
    assert all(new[n][0] == 200 for n in ("key", "rerank", "upload", "upload rerank",
                                          "matches", "thumb"))
    assert new["key"] != old["key"]             # the added image changed the rows
    # every answer meanwhile was the old store's, the new one's, or a one-line 503
    assert len(seen) >= len(reqs)
    busy = (503, "busy or changing")
    mixed = [(name, a) for name, a in seen if a not in (old[name], new[name], busy)]
    assert not mixed, mixed[:3]


def test_a_job_holding_the_lock_keeps_the_old_generation_served(job, small_config):
    from features.store import store_lock

    source, out = job
    srv = Server(out, "--threads", 1)
    try:
        reqs = _requests(source)
        old = _all(srv.url, reqs)
        with store_lock(out, "test"):
            _change(source)
            _build(small_config, source, out)
            end = time.monotonic() + 60
            while _generation(srv.url)["generation"]["pending"] is None:
                assert time.monotonic() < end, "the new generation was never noticed"
                time.sleep(0.1)
            held = _generation(srv.url)
            # the key table and the shards read so far are the old generation's
            assert _answer(srv.url, *reqs["new key"]) == old["new key"]
            assert _answer(srv.url, *reqs["gone key"]) == old["gone key"]
            assert _answer(srv.url, *reqs["upload"]) == old["upload"]
        health = _wait_for_generation(srv.url, 2)
        assert _answer(srv.url, *reqs["new key"])[0] == 200
    finally:
        code, err = srv.stop()
    assert code == 0 and "Traceback" not in err, err
    assert held["generation"]["number"] == 1
    assert "lock" in held["generation"]["pending"]
    assert health["generation"]["switched"] is not None


def test_a_new_generation_that_cannot_be_opened_leaves_the_old_one_served(job):
    source, out = job
    srv = Server(out, "--threads", 1)
    try:
        reqs = _requests(source)
        old = _all(srv.url, reqs)
        index = current_index_paths(out)["index.faiss"]
        saved = index.read_bytes()
        index.unlink()                         # a generation without its index, as mid-run
        end = time.monotonic() + 60
        while _generation(srv.url)["generation"]["pending"] is None:
            assert time.monotonic() < end, "the change was never noticed"
            time.sleep(0.1)
        broken = _generation(srv.url)
        assert _all(srv.url, reqs) == old
        tmp = index.with_name("index.faiss.new")
        tmp.write_bytes(saved)
        tmp.replace(index)                     # the index back: a generation that opens
        health = _wait_for_generation(srv.url, 2)
        assert _all(srv.url, reqs) == old      # the same files: the same answers
    finally:
        code, err = srv.stop()
    assert code == 0 and "Traceback" not in err, err
    assert broken["generation"]["number"] == 1
    assert "cannot be opened" in broken["generation"]["pending"]
    assert "index" in broken["generation"]["pending"]
    assert health["generation"]["pending"] is None
