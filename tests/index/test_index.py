import json
import shutil

import faiss
import h5py
import numpy as np
import pytest
from conftest import clustered_rows, run_cli, write_store

import features.store.encodings
from features import index as ix
from features.search import QueryError, Searcher
from features.store import Store
from features.store.encodings import EncodingRows
from features.exceptions import StoreError


def _exact_top(x, q, k):
    s = q @ x.T
    return np.argsort(-s, axis=1, kind="stable")[:, :k]


pytestmark = pytest.mark.usefixtures("faiss_one_thread")


@pytest.fixture(scope="module")
def rows3k():
    return clustered_rows(3000, dim=64, seed=1)


def _build(path, **kw):
    with Store(path) as s:
        out = ix.build(s, **kw)
    return out, ix.index_record(path)


def _file(store, name=ix.INDEX_FILE):
    """The current index's file ``name`` (in the folder of its generation)."""
    return ix.current_index_paths(store)[ix.INDEX_FILE].with_name(name)


@pytest.mark.parametrize("threshold, kind, factory", [
    (5000, "exact", "Flat"),
    (3000, "compressed", "IVF64,PQ8,Refine(SQfp16)"),   # "below": 3000 is not
    (100, "compressed", "IVF64,PQ8,Refine(SQfp16)"),
])
def test_index_kind_is_chosen_by_size(tmp_path, rows3k, threshold, kind, factory):
    store = write_store(tmp_path / "s", rows3k)
    path, record = _build(store, exact_below=threshold)
    assert record["kind"] == kind and record["factory"] == factory
    assert record["rows"] == 3000 and record["requested"] == "auto"
    header = ix.index_header(path)
    assert header["ntotal"] == 3000 and header["dim"] == 64
    assert header["metric"] == "inner product"
    loaded = ix.load_index(Store(store))     # (must outlive the views below)
    inner = faiss.downcast_index(faiss.downcast_index(loaded).index)
    assert isinstance(inner, faiss.IndexFlatIP if kind == "exact" else faiss.IndexRefine)


def test_auto_factory_scales_with_size():
    assert ix.auto_factory(10, 1000) == ("Flat", {})
    f, params = ix.auto_factory(1_281_167, 1000)
    assert f == "IVF1024,PQ40,Refine(SQfp16)" and params == {"nprobe": 64, "k_factor": 100}
    assert ix.auto_factory(300_000, 1000)[0].startswith("IVF512,PQ40")
    assert ix.auto_factory(200_000, 8192)[0] == "IVF512,PQ64,Refine(SQfp16)"
    assert ix.auto_factory(200_000, 127)[0] == "IVF512,SQ8"   # prime: no PQ split
    # the exact threshold counts values: 10,000 Fisher vectors of 32k dimensions are
    # compressed, 10,000 rows of 1000 words are not
    assert ix.auto_factory(10_000, 1000) == ("Flat", {})
    assert ix.auto_factory(10_000, 32_768)[0] == "IVF128,PQ64,Refine(SQfp16)"
    assert ix.auto_factory(1_500, 32_768) == ("Flat", {})


def test_compressed_index_recall_against_exact(tmp_path, rows3k):
    store = write_store(tmp_path / "s", rows3k)
    path, record = _build(store, exact_below=100)
    queries = clustered_rows(200, dim=64, seed=99)
    index = ix.load_index(Store(store))
    _, got = ix.search_vectors(index, queries, 10)
    truth = _exact_top(rows3k, queries, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got.tolist(), truth.tolist())])
    assert recall >= 0.9, recall
    # smaller than the exact index of the same rows (half-precision refine codes, 8-byte
    # PQ codes and ids, the quantizers)
    assert record["bytes"] < 0.8 * 3000 * 64 * 4


def test_exact_index_is_exact(tmp_path, rows3k):
    store = write_store(tmp_path / "s", rows3k)
    _build(store)
    queries = clustered_rows(50, dim=64, seed=5)
    _, got = ix.search_vectors(ix.load_index(Store(store)), queries, 10)
    assert (got == _exact_top(rows3k, queries, 10)).mean() > 0.99  # ties may swap


def test_failed_and_empty_images_are_not_indexed(tmp_path, rows3k):
    x = rows3k[:500].copy()
    status = np.zeros(500, np.uint8)
    status[::7] = 2
    x[3::11] = 0
    store = write_store(tmp_path / "s", x, status=status)
    _, record = _build(store)
    index = ix.load_index(Store(store))
    outer = faiss.downcast_index(index)
    ids = set(faiss.vector_to_array(outer.id_map).tolist())
    want = {i for i in range(500) if status[i] == 0 and x[i].any()}
    assert ids == want and record["rows"] == len(want)


def _store_with_gaps(tmp_path, rows3k):
    """A store of ``rows3k`` where every 13th image failed and every 17th from the 5th has
    no features: (store, rows, status)."""
    x = rows3k.copy()
    status = np.zeros(len(x), np.uint8)
    status[::13] = 2
    x[5::17] = 0
    return write_store(tmp_path / "s", x, status=status), x, status


@pytest.mark.parametrize("factory", ["IVF16,PQ8,Refine(SQ8)", "IVF16,SQ8", "Flat",
                                     "IVF16,Flat,Refine(Flat)"])
def test_index_merged_on_disk_is_the_index_filled_in_one_go(tmp_path, rows3k, factory):
    """Parts filled shard by shard from copies of the trained index, their inverted lists
    merged on disk and their codes streamed into the file: byte for byte the index that
    FAISS writes when one copy is filled with every row in memory."""
    store, x, status = _store_with_gaps(tmp_path, rows3k)
    path, record = _build(store, factory=factory, part_rows=1, block=500)  # one part a shard
    assert not list(store.glob(".index-parts-*")) and not list(store.glob(".*tmp*"))
    with Store(store) as s:
        rows = EncodingRows(s.h5, "bovw")
        assert len(ix.builder._part_ranges(s, rows.n_rows, 1)) == 3    # three shards of 1000
        one_go = faiss.read_index(str(path))
        one_go.reset()   # the same trained index, emptied
        ix.builder._fill_in_memory(one_go, s, rows, 0, rows.n_rows, 500, s.column("status"))
    assert record["rows"] == one_go.ntotal == int(((status == 0) & x.any(1)).sum())
    assert path.read_bytes() == faiss.serialize_index(one_go).tobytes()


@pytest.mark.parametrize("factory, kind", [("IVF16,PQ8,Refine(SQ8)", faiss.IndexIVFPQ),
                                           ("PQ8", faiss.IndexIDMap)])   # by parts, in memory
def test_rows_go_to_faiss_in_bounded_batches(tmp_path, rows3k, monkeypatch, factory, kind):
    """FAISS's scratch grows with the rows added at once (a product quantizer's table of
    rows x M x 256 distances, 335 MB for a block of 8,192 rows of PQ40): the rows read a
    block at a time go to FAISS in batches within ``ADD_SCRATCH_BYTES``, and the index is
    byte for byte the one filled a whole block at a time."""
    store, x, status = _store_with_gaps(tmp_path, rows3k)
    by_block, _ = _build(store, factory=factory, part_rows=1, block=500)
    by_block = by_block.read_bytes()
    per_row = 4 * (64 + 8 * 256)       # a row and its table of 8 sub-quantizers x 256
    assert ix.builder.ADD_SCRATCH_BYTES // per_row > 500    # by default: whole blocks here
    monkeypatch.setattr(ix.builder, "ADD_SCRATCH_BYTES", 60 * per_row)
    assert ix.builder._add_batch(ix.factory.make_index("HNSW16,PQ8", 64), 500) == 500
    sizes, original = [], kind.add_with_ids

    def spy(self, rows, ids):
        sizes.append(len(rows))
        return original(self, rows, ids)

    monkeypatch.setattr(kind, "add_with_ids", spy)
    path, record = _build(store, factory=factory, part_rows=1, block=500, force=True)
    assert max(sizes) == 60
    assert sum(sizes) == record["rows"] == int(((status == 0) & x.any(1)).sum())
    assert len(sizes) > 2 * 6        # six blocks of 500 rows, each split
    assert path.read_bytes() == by_block


@pytest.mark.parametrize("factory", ["IVF16,PQ8", "PQ8"])     # by parts, in memory
def test_dense_rows_are_read_a_bounded_block_at_a_time(tmp_path, rows3k, monkeypatch,
                                                       factory):
    """FAISS takes rows dense: a Fisher vector of 32,768 values is 128 KB a row, and the
    build read 8,192 of them at once (1 GiB), and 131,072 at once to find the empty rows.
    A dense encoding is now read at most ``EncodingRows.block_rows`` rows at a time (about
    ``BLOCK_BYTES`` of float32), whatever the build's block, and the index is byte for byte
    the one built from whole blocks."""
    x = rows3k[:2000].copy()
    x[7::29] = 0                                       # images without features
    store = write_store(tmp_path / "s", x, dense=True)
    whole, _ = _build(store, encoding="dense", factory=factory, part_rows=1, block=500)
    whole = whole.read_bytes()
    monkeypatch.setattr(features.store.encodings, "BLOCK_BYTES", 100 * 4 * 64)  # 100 rows
    spans, original = [], h5py.Dataset.__getitem__

    def spy(self, key):
        if self.name == "/encodings/dense" and isinstance(key, slice):
            spans.append(key.stop - key.start)
        return original(self, key)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
    path, record = _build(store, encoding="dense", factory=factory, part_rows=1, block=500,
                          force=True)
    assert spans and max(spans) == 100
    assert record["rows"] == int(x.any(1).sum())
    assert path.read_bytes() == whole


def test_index_filled_by_worker_processes(tmp_path, rows3k, cli_env):
    store = write_store(tmp_path / "s", rows3k)
    one = _build(store, factory="IVF16,PQ8,Refine(SQ8)")[0].read_bytes()
    proc = run_cli("index", store, "--index", "IVF16,PQ8,Refine(SQ8)", "--force", "--jobs", "2",
                   env=cli_env, check=True)
    assert proc.stdout.startswith("index: ") and len(proc.stdout.splitlines()) == 1
    assert _file(store).read_bytes() == one


def test_unmergeable_index_is_filled_in_place(tmp_path, rows3k):
    store = write_store(tmp_path / "s", rows3k[:1000])
    _, record = _build(store, factory="HNSW16", part_rows=300, block=128)
    assert record["rows"] == 1000
    queries = clustered_rows(30, dim=64, seed=4)
    _, got = ix.search_vectors(ix.load_index(Store(store)), queries, 10)
    assert got.min() >= 0 and all(len(set(r)) == 10 for r in got.tolist())


def _mapped_files():
    with open("/proc/self/maps") as f:
        return {line.split(None, 5)[-1].strip() for line in f if line.count(" ") >= 5}


@pytest.mark.parametrize("threshold", [10**9, 100])
def test_index_is_opened_memory_mapped(tmp_path, threshold):
    x = clustered_rows(3000, dim=64, seed=2)
    store = write_store(tmp_path / "s", x)
    _build(store, exact_below=threshold)
    path = str(_file(store).resolve())
    assert path not in _mapped_files()
    index = ix.load_index(Store(store))
    assert path in _mapped_files()          # the codes are pages of the file, not copies
    _, ids = ix.search_vectors(index, x[:5], 1)
    assert ids[:, 0].tolist() == [0, 1, 2, 3, 4]
    del index
    copy = ix.load_index(Store(store), mmap=False)
    assert copy.ntotal == 3000


def test_index_is_kept_when_current_and_rebuilt_when_stale(tmp_path, rows3k):
    store = write_store(tmp_path / "s", rows3k[:400])
    path, first = _build(store)
    stamp = path.stat().st_mtime_ns
    _, again = _build(store)
    assert path.stat().st_mtime_ns == stamp and again == first
    # another factory: rebuilt
    _, other = _build(store, factory="IVF4,Flat")
    assert other["factory"] == "IVF4,Flat" and other["kind"] == "custom"
    _, back = _build(store)
    assert back["factory"] == "Flat"
    # the rows changed (an image now failed): rebuilt without it
    import h5py
    with h5py.File(store / "store.h5", "r+") as f:
        f["images/status"][5] = 1
    _, changed = _build(store)
    assert changed["rows"] == 399 and changed["source"] != back["source"]
    # a damaged or replaced file: rebuilt
    path = _file(store)
    path.write_bytes(path.read_bytes()[:-10])
    path, rebuilt = _build(store)
    assert path.stat().st_size == rebuilt["bytes"]
    # a damaged file of the recorded size: rebuilt too (its checksum)
    raw = bytearray(path.read_bytes())
    raw[-100] ^= 0x40
    path.write_bytes(bytes(raw))
    with Store(store) as s:
        assert not ix.is_current(s)
    new, again = _build(store)
    assert new != path and not path.exists() and again["generation"] != rebuilt["generation"]


def test_run_does_not_rebuild_a_current_index(tmp_path, small_store, small_set, small_config):
    from features.pipeline import run
    from features.sources import open_source
    out = tmp_path / "store"
    shutil.copytree(small_store, out)
    path = _file(out)
    stamp, record = path.stat().st_mtime_ns, ix.index_record(out)
    run(small_config, open_source(str(small_set)), out, progress=False)  # resumes: all done
    assert path.stat().st_mtime_ns == stamp and ix.index_record(out) == record


def test_any_stored_encoding_can_be_indexed_dense_or_sparse(tmp_path, rows3k):
    store = write_store(tmp_path / "s", rows3k[:600], dense=True)
    _, record = _build(store, encoding="dense")
    assert record["encoding"] == "dense" and record["rows"] == 600
    with Searcher(store) as searcher:
        assert searcher.encoding == "dense"
        q = searcher.query_from_key("c3/img_000010.jpg")
        np.testing.assert_allclose(q.vector[0], rows3k[10].astype(np.float16), rtol=0)
        hits = searcher.search(q, 5)
        assert len(hits) == 5 and all(h["key"] != "c3/img_000010.jpg" for h in hits)
        with pytest.raises(QueryError, match="dense"):
            searcher.query_from_bytes("x.jpg", b"\xff\xd8")


def test_key_query_reads_only_its_row(tmp_path, rows3k, monkeypatch):
    store = write_store(tmp_path / "s", rows3k[:900])
    _build(store)
    reads = []
    original = EncodingRows.block

    def spy(self, start, stop):
        reads.append((start, stop))
        return original(self, start, stop)

    with Searcher(store) as searcher:
        monkeypatch.setattr(EncodingRows, "block", spy)
        monkeypatch.setattr(Store, "keys", property(lambda self: pytest.fail("all keys read")))
        q = searcher.query_from_key("c4/img_000123.jpg")
        hits = searcher.search(q, 10)
    assert reads == [(123, 124)]
    np.testing.assert_allclose(q.vector[0], rows3k[123])
    truth = _exact_top(rows3k[:900], rows3k[123:124], 11)[0]
    assert [h["index"] for h in hits] == [i for i in truth if i != 123][:10]
    assert hits[0]["key"] == f"c{truth[1] % 7}/img_{truth[1]:06d}.jpg"


def test_batch_search_equals_single_queries(tmp_path, rows3k):
    store = write_store(tmp_path / "s", rows3k)
    _build(store, exact_below=100)
    with Searcher(store, batch_threads=2) as searcher:
        queries = [searcher.query_from_key(f"c{i % 7}/img_{i:06d}.jpg") for i in range(0, 3000, 97)]
        single = [searcher.search(q, 7) for q in queries]
        batch = searcher.search_batch(queries, 7)
        assert faiss.omp_get_max_threads() == 1   # back to one thread for single queries
    assert [[h["index"] for h in r] for r in batch] == [[h["index"] for h in r] for r in single]


def _one_line_error(proc, *words):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("features: error:"), proc.stderr
    for w in words:
        assert w in lines[0], lines[0]


@pytest.mark.parametrize("factory, words", [
    ("IVF-nonsense", ["FAISS refuses", "IVF-nonsense"]),
    ("PQ7", ["PQ7"]),            # 64 dims do not split into 7 sub-quantizers
    ("IVF5000,Flat", ["IVF5000,Flat"]),  # more lists than vectors to train them
])
def test_refused_factory_string_is_one_line(tmp_path, rows3k, cli_env, factory, words):
    store = write_store(tmp_path / "s", rows3k[:300])
    _one_line_error(run_cli("index", store, "--index", factory, env=cli_env), *words)
    assert not _file(store).exists() and not list(store.glob("index-*"))
    assert not list(store.glob(".*tmp*"))


def test_bad_encoding_or_missing_index_is_one_line(tmp_path, rows3k, cli_env):
    store = write_store(tmp_path / "s", rows3k[:300])
    _one_line_error(run_cli("index", store, "--encoding", "vlad", env=cli_env), "vlad", "bovw")
    _one_line_error(run_cli("index", store, "--encoding", "idf", env=cli_env), "idf")
    _one_line_error(run_cli("search", store, "c1/img_000001.jpg", env=cli_env), "no search index")
    (store / ix.INDEX_FILE).write_bytes(b"not an index at all, not at all")
    _one_line_error(run_cli("search", store, "c1/img_000001.jpg", env=cli_env), "FAISS")


def test_cli_index_then_info_reads_the_header(tmp_path, rows3k, cli_env, monkeypatch):
    store = write_store(tmp_path / "s", rows3k[:300])
    proc = run_cli("index", store, "--index", "IVF8,SQ8", env=cli_env, check=True)
    assert "IVF8,SQ8" in proc.stdout
    info = json.loads(run_cli("info", store, "--json", env=cli_env, check=True).stdout)
    assert info["index_size"] == 300
    assert info["index_info"]["factory"] == "IVF8,SQ8" and info["index_info"]["kind"] == "custom"
    from features.pipeline.info import store_info
    monkeypatch.setattr(faiss, "read_index", lambda *a: pytest.fail("index loaded"))
    assert store_info(store)["index_size"] == 300


def test_work_folders_of_killed_builds_are_removed(tmp_path, rows3k):
    """`features index` killed with -9 leaves its work folder; the next build removes it
    (and the folders older versions named `.index-parts-PID-TOKEN`), a live writer's and
    another host's are left."""
    import subprocess
    import sys

    from features.store.atomic import HOST
    store = write_store(tmp_path / "s", rows3k)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()                                   # a pid that is no process any more
    leftovers = [store / f".index-parts.tmp-{HOST}-{dead.pid}", store / ".index-parts-1234-ab12cd34"]
    kept = [store / f".index-parts.tmp-otherhost-{dead.pid}"]
    for d in leftovers + kept:
        d.mkdir()
        (d / "part-000000.ivfdata").write_bytes(b"x" * 100)
    _build(store, factory="IVF16,Flat", part_rows=1, block=500)
    assert [d for d in leftovers if d.exists()] == []
    assert all(d.is_dir() for d in kept)
    assert not list(store.glob(f".*tmp-{HOST}-*"))
