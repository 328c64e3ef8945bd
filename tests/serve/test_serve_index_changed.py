"""A server whose index files are truncated or rewritten in place (``cp`` over them,
``rsync --inplace``) while it maps them: 503 naming the file, never SIGBUS."""
from __future__ import annotations

import shutil
from urllib.parse import quote

import pytest

pytest.importorskip("aiohttp", reason="features serve needs the [serve] extra (aiohttp)")

from conftest import run_cli  # noqa: E402
from serve_helpers import Server, get_json  # noqa: E402

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
    ("IVF2,Flat,Refine(Sparse)", REFINE_FILE),   # index.refine, always mapped
    (None, INDEX_FILE),                          # the exact index: FAISS maps its vectors
])
def test_index_file_cut_short_under_the_server_is_503(small_store, tmp_path, cli_env,
                                                      factory, name):
    store = _store(small_store, tmp_path, factory, cli_env)
    record = index_record(store)
    assert record["io_flag"] != "none" or name == REFINE_FILE   # the file is really mapped
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
    finally:
        code, err = server.stop()
    assert code == 0, err
    assert "Traceback" not in err, err


def test_a_rebuild_under_the_server_leaves_its_files_alone(small_store, tmp_path, cli_env):
    """The project's own writer never touches a file in use: the server keeps answering
    from the generation it opened while a build switches to another and removes it."""
    store = _store(small_store, tmp_path, None, cli_env)
    server = Server(store)
    try:
        url = server.url + f"api/search?key={KEY}&k=5"
        status, before = get_json(url)
        assert status == 200
        run_cli("index", store, "--index", "IVF2,Flat,Refine(Sparse)", env=cli_env,
                check=True)
        status, after = get_json(url)
        assert status == 200, after
        assert [r["key"] for r in after["results"]] == [r["key"] for r in before["results"]]
        assert server.proc.poll() is None
    finally:
        code, err = server.stop()
    assert code == 0 and "Traceback" not in err, err
