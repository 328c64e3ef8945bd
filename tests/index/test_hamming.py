"""Hamming embedding (index.hamming) beside an inverted file: signatures as a NumPy
reference computes them, the file's round trip and its damage found, blocks of bounded
size, refusal of bad parameters and of stores without descriptors, and on a real store
the copies of a photo ranked at least as well as by plain tf-idf."""
import json
import shutil

import numpy as np
import pytest

from conftest import SMALL_SET_EDITS, run_cli, write_store

from features.exceptions import IndexDamaged, ParameterError, StoreError
from features.index import build
from features.index import hamming as he
from features.index.hamming import (HammingFile, check_bits, learn_thresholds, projection,
                                    signatures, write_hamming)
from features.pipeline import build_index, run
from features.presets import get_preset
from features.search import Searcher
from features.sources import open_source
from features.store import Store


def test_projection_is_orthonormal_and_seeded():
    p = projection(64, seed=3)
    assert p.shape == (64, 128)
    np.testing.assert_allclose(p @ p.T, np.eye(64), atol=1e-5)
    assert np.array_equal(p, projection(64, seed=3))
    assert not np.array_equal(p, projection(64, seed=4))
    assert np.array_equal(projection(32, seed=3), p[:32])


def test_thresholds_are_word_medians_with_global_fallback():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 32)).astype(np.float32)
    words = np.r_[np.zeros(200, int), np.ones(97, int), np.full(3, 2)]
    t = learn_thresholds(x, words, 4, min_per_word=8)
    np.testing.assert_allclose(t[0], np.median(x[:200], axis=0), rtol=1e-6)
    np.testing.assert_allclose(t[1], np.median(x[200:297], axis=0), rtol=1e-6)
    # word 2 has 3 samples and word 3 none: the whole sample's medians
    np.testing.assert_allclose(t[2], np.median(x, axis=0), rtol=1e-6)
    np.testing.assert_allclose(t[3], np.median(x, axis=0), rtol=1e-6)


@pytest.mark.parametrize("bits", [32, 64])
def test_signature_bits_against_numpy_reference(bits):
    rng = np.random.default_rng(1)
    d = rng.integers(0, 256, (500, 128)).astype(np.uint8)
    words = rng.integers(0, 5, 500)
    p = projection(bits, seed=0)
    t = rng.normal(size=(5, bits)).astype(np.float32) * 50 + 500
    got = signatures(p, t, words, d)
    assert got.dtype == np.uint64
    for j in range(0, 500, 37):
        y = p.astype(np.float64) @ d[j].astype(np.float64)
        want = sum(1 << b for b in range(bits) if y[b] > t[words[j], b])
        assert int(got[j]) == want


def synthetic(n_images=40, n_words=50, per=60, seed=0):
    """Images of random descriptors, each word's descriptors scattered around its centre;
    image 1 is a copy of image 0 with noise, image 2 has image 0's words and other
    descriptors."""
    rng = np.random.default_rng(seed)
    centres = rng.integers(40, 200, (n_words, 128))
    words = [rng.integers(0, n_words, per) for _ in range(n_images)]
    descs = [np.clip(centres[w] + rng.normal(0, 30, (per, 128)), 0, 255).astype(np.uint8)
             for w in words]
    words[1] = words[0].copy()
    descs[1] = np.clip(descs[0] + rng.normal(0, 3, (per, 128)), 0, 255).astype(np.uint8)
    words[2] = words[0].copy()
    return words, descs


def blocks_of(words, descs, ids, size=7):
    def blocks():
        for a in range(0, len(ids), size):
            chunk = ids[a:a + size]
            yield (np.array(chunk), np.array([len(words[i]) for i in chunk]),
                   np.concatenate([words[i] for i in chunk]),
                   np.concatenate([descs[i] for i in chunk]))
    return blocks


def test_round_trip_ranking_and_damage(tmp_path):
    words, descs = synthetic()
    ids = [i for i in range(40) if i != 5]              # image 5 has no features
    idf = np.linspace(1, 2, 50).astype(np.float32)
    path = tmp_path / "h"
    n = write_hamming(path, blocks_of(words, descs, ids), 40, 50, 64, idf,
                      total=39 * 60, sample=1000)
    assert n == 39 * 60
    h = HammingFile(path)
    assert (h.n_rows, h.d, h.postings, h.bits, h.threshold, h.ntotal) == (40, 50, n, 64, 24, 39)
    assert h.check_structure(np.array(ids)) == []
    # every descriptor is a posting of its word with its signature
    for w in (0, 7, 49):
        got_ids = np.asarray(h.ids[h.starts[w]:h.starts[w + 1]])
        want = np.concatenate([np.full(np.sum(words[i] == w), i) for i in ids])
        assert np.array_equal(got_ids, want)
    sig0 = h.signatures_of(words[0], descs[0])
    a, b = h.starts[words[0][0]], h.starts[words[0][0] + 1]
    assert sig0[0] in set(np.asarray(h.signatures[a:b]).tolist())
    # the query image first, its near copy second; image 2 shares every word with it
    # (as close as image 1 in tf-idf) but not the descriptors: far lower
    scores, found = h.search(words[0], descs[0], 5)
    assert list(found[0][:2]) == [0, 1]
    s = dict(zip(found[0].tolist(), scores[0].tolist()))
    assert s.get(2, 0) < 0.5 * s[1]
    assert 5 not in found[0]
    # damage: cut short, a header value, an image number out of range
    data = bytearray(path.read_bytes())
    (tmp_path / "short").write_bytes(data[:-4])
    with pytest.raises(IndexDamaged, match="bytes"):
        HammingFile(tmp_path / "short")
    bad = bytearray(data)
    bad[8 + 8 * 3:8 + 8 * 4] = (48).to_bytes(8, "little")       # bits
    (tmp_path / "bad").write_bytes(bad)
    with pytest.raises(IndexDamaged, match="header"):
        HammingFile(tmp_path / "bad")
    wrong = bytearray(data)
    wrong[-1] = 0x7F                                             # the last image number
    (tmp_path / "wrong").write_bytes(wrong)
    assert HammingFile(tmp_path / "wrong").check_structure()


def test_far_signatures_add_nothing():
    kernel = __import__("features._ext._hamming", fromlist=["accumulate"])
    starts = np.array([0, 3], np.int64)
    sigs = np.array([0, (1 << 24) - 1, (1 << 25) - 1], np.uint64)    # h = 0, 24, 25
    ids = np.array([0, 1, 2], np.int32)
    by_distance = np.exp(-np.arange(25) ** 2 / 256).astype(np.float32)
    scores, seen, touched = np.zeros(3, np.float32), np.zeros(3, np.uint8), np.zeros(3, np.int32)
    m, bad = kernel.accumulate(starts, sigs, ids, np.array([0], np.int64),
                               np.array([0], np.uint64), np.array([2], np.float32),
                               by_distance, scores, seen, touched)
    assert (m, bad) == (2, 0) and sorted(touched[:2]) == [0, 1]
    np.testing.assert_allclose(scores, [2, 2 * np.exp(-24 ** 2 / 256), 0], rtol=1e-6)


def test_bad_parameters_refused(tmp_path):
    for bits in (48, 0, "64", True):
        with pytest.raises(ParameterError, match=repr(bits)) as e:
            check_bits(bits)
        assert e.value.param == "hamming"
    rows = np.random.default_rng(0).random((20, 100)).astype(np.float32)
    out = write_store(tmp_path / "s", rows)
    with Store(out) as store:
        with pytest.raises(ParameterError, match="hamming 64 .*Inverted"):
            build(store, factory="Flat", hamming=64)
        # a store of rows only keeps no descriptors: one line naming the fix
        with pytest.raises(StoreError, match="no SIFT descriptors.*--no-descriptors") as e:
            build(store, factory="Inverted", hamming=64)
        assert "\n" not in str(e.value)
        assert not list(out.glob("index-*"))


@pytest.fixture(scope="module")
def tree_store(tmp_path_factory, small_set):
    config = get_preset("sift", words=64, tree_branching=4, max_side=256,
                        max_keypoints=400, shard_size=5, sample_images=24)
    out = tmp_path_factory.mktemp("treehe") / "store"
    run(config, open_source(str(small_set)), out, progress=False)
    build_index(out, factory="Inverted", progress=False)
    plain = {}
    with Searcher(out) as searcher:
        for key in searcher.store.keys:
            plain[str(key)] = [h["key"] for h in searcher.search(str(key), k=23)]
    return out, plain


def copy_ranks(hits, key):
    """Ranks (1-based) of the other versions of the query's photo."""
    photo = key.split("/")[0]
    return [r + 1 for r, k in enumerate(hits) if k.split("/")[0] == photo]


def test_blocks_bounded_and_same_file(tree_store, tmp_path, monkeypatch):
    out, _ = tree_store
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    seen = []
    real = he.write_hamming

    def spy(path, blocks, *args, **kwargs):
        def counted():
            for block in blocks():
                seen.append((len(block[0]), len(block[2])))
                yield block
        return real(path, counted, *args, **kwargs)
    with Store(out) as store:
        path = build(store, factory="Inverted", hamming=64)
    reference = HammingFile(path.parent / "index.hamming")
    monkeypatch.setattr("features.index.builder.write_hamming", spy)
    monkeypatch.setattr(he, "BLOCK_DESCRIPTORS", 500)
    with Store(copy) as store:
        path = build(store, factory="Inverted", hamming=64, force=True)
    # blocks of at most 500 descriptors, or one image when it alone has more
    assert seen and all(n <= 500 or images == 1 for images, n in seen)
    assert max(n for _, n in seen) > 0
    # the same postings; a signature bit may differ where a projection lies within
    # float32 rounding of its threshold (the product is summed in another order)
    got = HammingFile(path.parent / "index.hamming")
    assert np.array_equal(got.starts, reference.starts)
    assert np.array_equal(got.ids, reference.ids)
    flips = np.unpackbits((np.asarray(got.signatures) ^ np.asarray(reference.signatures))
                          .view(np.uint8)).sum()
    assert flips <= 1e-3 * 64 * got.postings


def test_real_store_ranks_copies_and_serves(tree_store, small_set, cli_env):
    out, plain = tree_store
    proc = run_cli("index", out, "--index", "Inverted", "--hamming", "64", env=cli_env,
                   check=True)
    assert "Hamming embedding of 64 bits" in proc.stdout
    with Store(out) as store:
        record = json.loads((out / "manifest.json").read_text())["steps"]["index"]
        assert record["hamming"] == 64 and "index.hamming" in record["files"]
        assert build(store, factory="Inverted", hamming=64).name == "index.inverted"  # kept
    better = worse = 0
    with Searcher(out) as searcher:
        assert searcher.index.hamming.bits == 64
        for key, plain_hits in plain.items():
            he_hits = [h["key"] for h in searcher.search(key, k=23)]
            # a true copy is ranked at least as high as by plain tf-idf (mean rank of the
            # photo's other versions, the query left out)
            a, b = np.mean(copy_ranks(he_hits, key)), np.mean(copy_ranks(plain_hits, key))
            better += a < b
            worse += a > b
        assert better >= worse and better > 0, (better, worse)
        # by image: the image's own file comes first
        hits = searcher.search(str(small_set / "coins" / "half.jpg"), k=5)
        assert hits[0]["key"] == "coins/half.jpg"
        ranked = searcher.search("chelsea/crop60.jpg", k=len(SMALL_SET_EDITS) - 1)
        assert all(h["key"].startswith("chelsea/") for h in ranked)
        reranked = searcher.search("coins/rotate12.jpg", k=5, rerank=True)
        assert reranked[0]["key"].startswith("coins/") and reranked[0]["inliers"] >= 8
        # a vector query is scored by the inverted file
        assert searcher.search(searcher.query_from_key("coins/half.jpg").vector, k=1)
        batch = searcher.search_batch(["chelsea/half.jpg", "coins/half.jpg"], k=2)
        assert [b[0]["key"].split("/")[0] for b in batch] == ["chelsea", "coins"]
        with pytest.raises(ParameterError, match="nprobe"):
            searcher.search("coins/half.jpg", k=3, nprobe=4)
    proc = run_cli("search", out, "chelsea/half.jpg", "--rerank", "--json", env=cli_env,
                   check=True)
    assert json.loads(proc.stdout)[0]["results"][0]["key"].startswith("chelsea/")
    assert run_cli("verify", out, env=cli_env).returncode == 0
    pytest.importorskip("aiohttp")
    from serve_helpers import Server, get_json
    server = Server(out)
    try:
        status, found = get_json(server.url + "api/search?key=coins/half.jpg&k=3")
        assert status == 200 and found["results"][0]["key"].startswith("coins/")
    finally:
        server.stop()
    proc = run_cli("index", out, "--index", "Inverted", "--hamming", "48", env=cli_env)
    assert proc.returncode != 0 and "48" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_verify_finds_damage_and_search_refuses(tree_store, tmp_path, cli_env):
    out, _ = tree_store
    with Store(out) as store:
        path = build(store, factory="Inverted", hamming=32)
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    damaged = copy / path.parent.name / "index.hamming"
    data = bytearray(damaged.read_bytes())
    data[-3] ^= 0x40
    damaged.write_bytes(data)
    proc = run_cli("verify", copy, env=cli_env)
    assert proc.returncode == 1 and "index.hamming" in proc.stdout, proc.stdout
    proc = run_cli("search", copy, "chelsea/half.jpg", env=cli_env)
    assert proc.returncode == 2 and "index.hamming is damaged" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
