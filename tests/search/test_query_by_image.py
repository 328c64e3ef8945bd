"""Queries by image on an index over any encoding the store computes from images: a
stored image's own file, as a query, gives exactly its stored row (one computation for
both, `features.encodings.rows`), and an index over rows no image can be encoded as says
so rather than failing each query."""
import shutil

import numpy as np
import pytest

from features.exceptions import QueryError
from features.search import Encoder, Searcher

ENCODINGS = ("bovw", "spm", "vlad", "fisher")


@pytest.fixture(scope="module")
def encoded_store(tmp_path_factory, small_set, small_config):
    """The small set with every encoding (fisher in float16, its default)."""
    from features.pipeline import run
    out = tmp_path_factory.mktemp("encoded") / "store"
    run(small_config, str(small_set), out, progress=False, encodings=("spm", "vlad", "fisher"))
    return out


@pytest.fixture(scope="module")
def indexed(encoded_store, tmp_path_factory):
    """encoding -> a copy of the store whose index is over that encoding."""
    from features.pipeline import build_index
    out = {}
    for name in ENCODINGS:
        copy = tmp_path_factory.mktemp(f"index-{name}") / "store"
        shutil.copytree(encoded_store, copy)
        build_index(copy, encoding=name, force=True, progress=False)
        out[name] = copy
    return out


@pytest.mark.parametrize("name", ENCODINGS)
def test_an_images_own_file_gives_its_stored_row(encoded_store, small_set, name):
    with Encoder(encoded_store, name) as encoder:
        assert encoder.problem is None
        stored = encoder.store.encoding(name, dense=True)
        keys = encoder.store.keys
        assert stored.shape[0] == len(keys) == 24
        for i, key in enumerate(keys):
            row = encoder.encode(small_set / key)
            assert row.dtype == np.float32 and row.shape == (1, stored.shape[1])
            np.testing.assert_array_equal(row[0], stored[i], err_msg=f"{name} {key}")


@pytest.mark.parametrize("name", ENCODINGS)
def test_query_by_image_on_every_encoding(indexed, small_set, name):
    from skimage import io
    with Searcher(indexed[name]) as searcher:
        assert searcher.encoding == name and searcher.image_queries is None
        for key in ("chelsea/half.jpg", "rocket/rotate12.jpg", "coins/perspective.jpg"):
            i = searcher.store.index_of(key)
            query = searcher.query(str(small_set / key))
            # the Searcher's single BLAS thread gives the same row as the aggregation's
            np.testing.assert_array_equal(query.vector, searcher.rows.row(i))
            by_path = searcher.search(str(small_set / key), 5)
            by_vector = searcher.search(searcher.rows.row(i)[0], 5)
            assert [h["key"] for h in by_path] == [h["key"] for h in by_vector]
            if name != "spm":   # L2-normalized rows: the image itself is its best match
                assert by_path[0]["key"] == key
                assert by_path[0]["score"] == pytest.approx(1.0, abs=2e-3)
            # a decoded array (RGB, as scikit-image reads it) is a query too
            by_array = searcher.search(io.imread(small_set / key), 5)
            assert len(by_array) == 5 and by_array[0]["key"].split("/")[0] == key.split("/")[0]
        hits = searcher.search(str(small_set / "chelsea/half.jpg"), 5, rerank=True)
        assert hits[0]["key"] == "chelsea/half.jpg" and hits[0]["inliers"] >= 8


def test_rows_do_not_depend_on_the_blas_threads(encoded_store, small_set):
    from threadpoolctl import threadpool_limits
    with Encoder(encoded_store, "fisher") as encoder:
        path = small_set / "astronaut" / "crop60.jpg"
        with threadpool_limits(2):
            two = encoder.encode(path)
        with threadpool_limits(1):
            one = encoder.encode(path)
    np.testing.assert_array_equal(one, two)


def test_an_index_over_rows_no_image_can_give_says_why(tmp_path, small_set):
    from conftest import write_store
    from features.pipeline import build_index
    rng = np.random.default_rng(0)
    store = write_store(tmp_path / "s", rng.random((40, 16), np.float32), dense=True)
    build_index(store, encoding="dense", progress=False)
    with Searcher(store) as searcher:
        assert "encodings/dense" in searcher.image_queries
        with pytest.raises(QueryError, match="images cannot be queries of this index"):
            searcher.search(str(small_set / "chelsea" / "half.jpg"))
        assert len(searcher.search("c3/img_000010.jpg", 5)) == 5      # keys still work


def test_vectors_are_checked(indexed):
    from features.exceptions import ParameterError
    with Searcher(indexed["vlad"]) as searcher:
        with pytest.raises(ParameterError, match="vector"):
            searcher.search(np.zeros(7, np.float32))
        with pytest.raises(ParameterError, match="rerank"):
            searcher.search(searcher.rows.row(0)[0], rerank=True)


def test_rerank_verifies_only_the_shortlist(small_store, small_set, monkeypatch):
    """With k above the shortlist, the shortlist is verified and re-ordered, the rest follow
    unverified in the order of the plain search."""
    query = str(small_set / "coins" / "half.jpg")
    with Searcher(small_store) as searcher:
        plain = searcher.search(query, k=10)
        verified = []
        verify = searcher.verify_candidates

        def spy(q, ids, *args, **kwargs):
            verified.append(list(ids))
            return verify(q, ids, *args, **kwargs)

        monkeypatch.setattr(searcher, "verify_candidates", spy)
        hits = searcher.search(query, k=10, rerank=True, shortlist=4)
    assert len(hits) == 10 and sum(map(len, verified)) == 4
    assert set(verified[0]) == {h["index"] for h in plain[:4]}
    assert {h["index"] for h in hits[:4]} == {h["index"] for h in plain[:4]}
    assert [h["index"] for h in hits[4:]] == [h["index"] for h in plain[4:]]
    assert all(h["inliers"] == 0 for h in hits[4:])
    assert hits[0]["inliers"] >= 8
