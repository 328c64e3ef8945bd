"""The inverted-file index (index.inverted) of large vocabularies: built from the store's
rows, chosen automatically for a sparse encoding over more than 16,384 words, answering
by key, by vector and by image as an exact index would, checked at open and by verify,
and searched by `features search --rerank` and `features serve` as any index."""
import json

import numpy as np
import pytest
import scipy.sparse as sp

from conftest import run_cli, write_store

import features
from features.exceptions import IndexDamaged, ParameterError
from features.index import build, load_index, search_vectors
from features.index.inverted import InvertedFile, write_inverted
from features.pipeline import build_index, run
from features.presets import get_preset
from features.search import Searcher
from features.sources import open_source
from features.store import Store


def sparse_rows(n, dim, per_row=30, seed=0, empty=()):
    """L2-normalized nonnegative rows of ``per_row`` words drawn from a Zipf-like law (a
    few frequent words, many rare ones, as tf-idf rows of a large vocabulary)."""
    rng = np.random.default_rng(seed)
    rows = np.zeros((n, dim), np.float32)
    p = 1.0 / np.arange(1, dim + 1)
    p /= p.sum()
    for i in range(n):
        if i in empty:
            continue
        words = rng.choice(dim, per_row, replace=False, p=p)
        rows[i, words] = rng.random(per_row) + 0.1
        rows[i] /= np.linalg.norm(rows[i])
    return rows


def exact(rows, q, k):
    """Exact inner-product top k, ties by row number, only rows sharing a word."""
    s = rows @ q
    order = np.lexsort((np.arange(len(rows)), -s))
    order = order[(rows[order] * q != 0).any(axis=1)][:k]
    return order, s[order]


def test_write_and_search_equal_exact(tmp_path):
    rows = sparse_rows(400, 3000, empty={3, 17})
    m = sp.csr_matrix(rows)
    keep = np.flatnonzero(np.diff(m.indptr) > 0)

    def blocks():
        for a in range(0, 400, 64):
            ids = keep[(keep >= a) & (keep < a + 64)]
            yield ids, m[ids]

    assert write_inverted(tmp_path / "i", blocks, 400, 3000) == 398
    inv = InvertedFile(tmp_path / "i")
    assert (inv.ntotal, inv.d, inv.postings) == (398, 3000, m.nnz)
    assert inv.check_structure(keep) == []
    for qi in (0, 5, 123):
        scores, ids = inv.search(rows[qi], 20)
        want, want_s = exact(rows, rows[qi], 20)
        assert np.array_equal(ids[0][:len(want)], want)
        np.testing.assert_allclose(scores[0][:len(want)], want_s, rtol=1e-5)
    # a query sharing no word: no results
    lonely = np.zeros(3000, np.float32)
    lonely[np.flatnonzero(~rows.any(axis=0))[:1]] = 1
    assert (inv.search(lonely, 5)[1] == -1).all()
    with pytest.raises(ParameterError):
        inv.search(rows[0][:10], 5)


def test_damaged_file_refused_at_open(tmp_path):
    rows = sparse_rows(50, 500)
    m = sp.csr_matrix(rows)
    write_inverted(tmp_path / "i", lambda: iter([(np.arange(50), m)]), 50, 500)
    data = bytearray((tmp_path / "i").read_bytes())
    (tmp_path / "short").write_bytes(data[:-4])
    with pytest.raises(IndexDamaged, match="bytes"):
        InvertedFile(tmp_path / "short")
    bad = bytearray(data)
    bad[64 + 8 * 7:64 + 8 * 8] = (10 ** 9).to_bytes(8, "little")   # a list start
    (tmp_path / "bad").write_bytes(bad)
    with pytest.raises(IndexDamaged, match="list starts"):
        InvertedFile(tmp_path / "bad")
    wrong = bytearray(data)
    wrong[64 + 8 * 501] = 0xFF           # an image number far out of range
    (tmp_path / "wrong").write_bytes(wrong)
    assert InvertedFile(tmp_path / "wrong").check_structure()


@pytest.fixture(scope="module")
def large_store(tmp_path_factory):
    """A store of sparse rows over 20,000 words (a codebook above the automatic choice's
    16,384), two images without features."""
    rows = sparse_rows(300, 20000, per_row=40, seed=1, empty={7, 250})
    out = write_store(tmp_path_factory.mktemp("inv") / "store", rows)
    return out, rows


def test_automatic_choice_and_searches_equal_exact(large_store):
    out, rows = large_store
    with Store(out) as store:
        path = build(store)
    assert path.name == "index.inverted"
    record = json.loads((out / "manifest.json").read_text())["steps"]["index"]
    assert record["kind"] == "inverted" and record["factory"] == "Inverted"
    assert record["rows"] == 298 and set(record["files"]) == {"index.inverted"}
    with Searcher(out) as searcher:
        assert searcher.index.ntotal == 298
        for qi in (0, 42, 299):
            want, want_s = exact(rows, rows[qi], 11)
            by_vector = searcher.search(rows[qi], k=11)
            assert [h["index"] for h in by_vector] == list(want)
            np.testing.assert_allclose([h["score"] for h in by_vector], want_s, rtol=1e-5)
            # by key: the image itself left out
            key = str(searcher.store.keys[qi])
            assert [h["index"] for h in searcher.search(key, k=10)] == \
                [i for i in want if i != qi][:10]
    # kept when current, rebuilt on request
    with Store(out) as store:
        assert build(store) == path
        assert build(store, force=True) != path


def test_copied_answers_as_mapped_and_survives_rewrite(large_store):
    """``mmap=False`` (serve's copy) reads the lists into memory through the checked
    descriptor: the same answers, and a file rewritten in place afterwards cannot fault it."""
    out, rows = large_store
    with Store(out) as store:
        path = build(store)
        mapped, copied = load_index(store), load_index(store, mmap=False)
    assert isinstance(copied.ids, np.ndarray) and not isinstance(copied.ids, np.memmap)
    assert isinstance(mapped.ids, np.memmap)
    want = mapped.search(rows[[0, 42]], 10)
    saved = path.read_bytes()
    try:
        with open(path, "r+b") as f:       # in place, as `cp` over the file does
            f.truncate(64)
        got = copied.search(rows[[0, 42]], 10)
    finally:
        path.write_bytes(saved)
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_allclose(got[0], want[0])


def test_parameters_of_other_indexes_refused(large_store):
    out, rows = large_store
    with Store(out) as store:
        build(store)
        with pytest.raises(ParameterError, match="nprobe"):
            search_vectors(load_index(store), rows[:1], 5, nprobe=4)
        with pytest.raises(ParameterError):
            build(store, search_params="nprobe=4", force=True)


def test_verify_finds_damage(large_store, tmp_path, cli_env):
    import shutil
    out, _ = large_store
    with Store(out) as store:
        path = build(store)
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    damaged = copy / path.parent.name / path.name
    data = bytearray(damaged.read_bytes())
    data[-3] ^= 0x40
    damaged.write_bytes(data)
    proc = run_cli("verify", copy, env=cli_env)
    assert proc.returncode == 1 and "index.inverted" in proc.stdout, proc.stdout
    proc = run_cli("search", copy, str(features.open_store(out).keys[0]), env=cli_env)
    assert proc.returncode == 2 and "index.inverted is damaged" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def tree_store_inverted(tmp_path_factory, small_set):
    config = get_preset("sift", words=64, tree_branching=4, max_side=256,
                        max_keypoints=400, shard_size=5, sample_images=24)
    out = tmp_path_factory.mktemp("treeinv") / "store"
    run(config, open_source(str(small_set)), out, progress=False)
    exact_hits = {}
    with Searcher(out) as searcher:              # the Flat index of a small store
        for key in ("chelsea/crop60.jpg", "coins/rotate12.jpg"):
            exact_hits[key] = [(h["key"], round(h["score"], 5))
                               for h in searcher.search(key, k=8)]
    build_index(out, factory="Inverted", progress=False)
    return out, exact_hits


def test_real_store_search_rerank_and_serve(tree_store_inverted, small_set, cli_env):
    pytest.importorskip("aiohttp")
    from serve_helpers import Server, get_json
    out, exact_hits = tree_store_inverted
    with Searcher(out) as searcher:
        assert type(searcher.index).__name__ == "InvertedFile"
        for key, hits in exact_hits.items():
            got = [(h["key"], round(h["score"], 5)) for h in searcher.search(key, k=8)]
            assert got == hits
        reranked = searcher.search(str(small_set / "coins" / "half.jpg"), k=5, rerank=True)
        assert reranked[0]["key"] == "coins/half.jpg" and reranked[0]["inliers"] >= 8
    proc = run_cli("search", out, "chelsea/half.jpg", "--rerank", "--json", env=cli_env,
                   check=True)
    assert json.loads(proc.stdout)[0]["results"][0]["key"].startswith("chelsea/")
    assert run_cli("verify", out, env=cli_env).returncode == 0
    server = Server(out)
    try:
        status, health = get_json(server.url + "api/health")
        assert status == 200 and health["indexed"] == 24
        status, found = get_json(server.url + "api/search?key=coins/half.jpg&k=3")
        assert status == 200 and found["results"][0]["key"].startswith("coins/")
    finally:
        server.stop()


def test_dense_encoding_refused(tmp_path):
    from features.exceptions import StoreError
    rows = sparse_rows(30, 200)
    out = write_store(tmp_path / "s", rows, dense=True)
    with Store(out) as store:
        with pytest.raises(StoreError, match="stored dense"):
            build(store, "dense", "Inverted")
        # a small vocabulary keeps FAISS's exact index; Inverted when asked for
        assert build(store).name == "index.faiss"
        assert build(store, factory="Inverted").name == "index.inverted"
