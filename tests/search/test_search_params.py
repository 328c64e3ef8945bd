"""Search-time parameters: nprobe and k_factor trade speed for recall; the store records
the defaults, a Searcher or a single search may ask for others, bad values are refused."""
import numpy as np
import pytest
from conftest import clustered_rows, write_store

from features import index as ix
from features.exceptions import ParameterError, StoreError
from features.search import Searcher
from features.store import Store

pytestmark = pytest.mark.usefixtures("faiss_one_thread")

N, DIM = 3000, 64


@pytest.fixture(scope="module")
def rows():
    return clustered_rows(N, dim=DIM, seed=1)


@pytest.fixture(scope="module")
def queries():
    return clustered_rows(200, dim=DIM, seed=99)


def _build(path, **kw):
    with Store(path) as s:
        out = ix.build(s, **kw)
    return out, ix.index_record(path)


@pytest.fixture(scope="module")
def ivf_store(tmp_path_factory, rows):
    store = write_store(tmp_path_factory.mktemp("ivf") / "s", rows)
    _build(store, factory="IVF64,Flat")
    return store


def _recall(got, rows, queries, k=10):
    truth = np.argsort(-(queries @ rows.T), axis=1, kind="stable")[:, :k]
    return float(np.mean([len(set(a) & set(b)) / k
                          for a, b in zip(got.tolist(), truth.tolist())]))


def test_more_lists_probed_find_more_true_neighbours(ivf_store, rows, queries):
    recall = {}
    with Searcher(ivf_store) as searcher:
        for nprobe in (1, 4, 16):
            _, got = ix.search_vectors(searcher.index, queries, 10, nprobe=nprobe)
            recall[nprobe] = _recall(got, rows, queries)
    print("recall@10 against exact search, IVF64,Flat, 3000 rows:", recall)
    assert recall[1] < recall[4] < recall[16]
    assert recall[1] < 0.9 and recall[16] > 0.97
    # the same through a Searcher opened with the parameter, and through search()
    with Searcher(ivf_store, params="nprobe=16") as searcher:
        assert searcher.params == {"nprobe": 16}
        _, got = ix.search_vectors(searcher.index, queries, 10)
        assert _recall(got, rows, queries) == recall[16]
    with Searcher(ivf_store, params={"nprobe": 1}) as searcher:
        query = searcher.query_from_key("c0/img_000007.jpg")
        one = [h["index"] for h in searcher.search(query, 10)]
        sixteen = [h["index"] for h in searcher.search(query, 10, nprobe=16)]
        assert [h["index"] for h in searcher.search(query, 10)] == one  # not left behind
        assert ix.current_params(searcher.index) == {"nprobe": 1}
        exact = np.argsort(-(rows @ rows[7]), kind="stable")
        exact = [int(i) for i in exact if i != 7][:10]
        assert len(set(sixteen) & set(exact)) >= len(set(one) & set(exact))
        batch = searcher.search_batch([query], 10, nprobe=16)[0]
        assert [h["index"] for h in batch] == sixteen


def test_defaults_are_recorded_and_changed_without_a_rebuild(tmp_path, rows):
    store = write_store(tmp_path / "s", rows[:1000])
    path, record = _build(store, factory="IVF16,Flat")
    # FAISS's own default would probe 1 list of 16
    assert record["params"] == {"nprobe": 8}
    stamp = path.stat().st_mtime_ns
    _, record = _build(store, factory="IVF16,Flat", search_params="nprobe=3")
    assert record["params"] == {"nprobe": 3} and path.stat().st_mtime_ns == stamp
    with Searcher(store) as searcher:
        assert ix.current_params(searcher.index) == {"nprobe": 3}
        assert searcher.params == {"nprobe": 3}
    # a rebuild with parameters records them over the defaults of its index
    _, record = _build(store, factory="IVF16,PQ8,Refine(SQfp16)",
                       search_params={"k_factor": 4})
    assert record["params"] == {"nprobe": 8, "k_factor": 4.0}
    with Searcher(store) as searcher:
        assert ix.current_params(searcher.index) == {"nprobe": 8, "k_factor": 4.0}
    # the automatic choice records its own, exact search none
    _, record = _build(store)
    assert record["factory"] == "Flat" and record["params"] == {}


def test_sparse_refine_stage_takes_k_factor(tmp_path, rows, queries):
    store = write_store(tmp_path / "s", rows[:1500])
    _, record = _build(store, factory="IVF16,PQ8,Refine(Sparse)", search_params="nprobe=16")
    assert record["params"] == {"k_factor": 100, "nprobe": 16}
    with Searcher(store, params="k_factor=1") as searcher:
        assert searcher.index.k_factor == 1
        _, short = ix.search_vectors(searcher.index, queries, 10)
        _, long = ix.search_vectors(searcher.index, queries, 10, k_factor=50)
        assert searcher.index.k_factor == 1
    r_short, r_long = _recall(short, rows[:1500], queries), _recall(long, rows[:1500], queries)
    assert r_short < r_long and r_long > 0.95


@pytest.mark.parametrize("params, words", [
    ({"nprobe": 0}, ["nprobe", "got 0"]),
    ({"nprobe": 2.5}, ["nprobe", "2.5"]),
    ({"k_factor": 0.5}, ["k_factor", "0.5"]),
    ("nprobe=x", ["search_params", "'x' is not a number"]),
    ("nprobe", ["search_params", "NAME=VALUE"]),
    ({"k_factor": 4}, ["k_factor 4 does not apply", "IVF64,Flat", "refine"]),
    ({"efSearch": 16}, ["efSearch 16 does not apply", "IVF64,Flat"]),
])
def test_bad_parameters_are_refused_naming_the_value(ivf_store, params, words):
    with pytest.raises(ParameterError) as e:
        Searcher(ivf_store, params=params)
    message = str(e.value)
    assert len(message.splitlines()) == 1 and all(w in message for w in words), message


def test_parameters_an_index_does_not_have(tmp_path, rows, ivf_store):
    store = write_store(tmp_path / "s", rows[:500])
    _build(store)
    with pytest.raises(ParameterError, match=r"nprobe 8 does not apply to this index \(Flat\)"):
        Searcher(store, params={"nprobe": 8})
    with Searcher(store) as searcher:
        query = searcher.query_from_key("c0/img_000007.jpg")
        with pytest.raises(ParameterError, match="nprobe 4 does not apply"):
            searcher.search(query, 5, nprobe=4)
        with pytest.raises(ParameterError, match="k must be >= 1"):
            searcher.search(query, 0)
    with Searcher(ivf_store) as searcher:
        query = searcher.query_from_key("c0/img_000007.jpg")
        with pytest.raises(ParameterError, match="nprobe must be an integer >= 1, got 0"):
            searcher.search(query, 5, nprobe=0)
    # refused before anything is built or recorded
    with Store(store) as s, pytest.raises(ParameterError, match="nprobe 4 does not apply"):
        ix.build(s, search_params={"nprobe": 4})
    assert ix.index_record(store)["params"] == {}


def test_a_manifest_recording_a_parameter_the_index_lacks_is_refused(tmp_path, rows):
    from features.store import Manifest
    store = write_store(tmp_path / "s", rows[:300])
    _build(store)
    manifest = Manifest(store)
    manifest.step_done("index", **{**ix.index_record(store), "params": {"nprobe": 4}})
    with pytest.raises(StoreError, match="--force"):
        Searcher(store)
