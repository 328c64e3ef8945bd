"""The sparse refine stage: the kernel, the file, the index built with it."""
import numpy as np
import pytest
from conftest import run_cli, write_store

from features import index as ix
from features._ext import _refine
from features.pipeline.verify import verify_store
from features.index import REFINE_FILE, files
from features.index.refine import RefinedIndex, RefineRows, SparsePart, write_refine
from features.search import Searcher
from features.store import Store
from features.exceptions import IndexDamaged, StoreError


pytestmark = pytest.mark.usefixtures("faiss_one_thread")


def sparse_rows(n, dim=64, keep=0.3, clusters=40, seed=0):
    """Clustered rows with most values zero (as tf-idf rows: a cluster's rows share most
    of their words), nonnegative, L2-normalized."""
    fixed = np.random.default_rng(dim)       # the same clusters for any seed
    centers = fixed.random((clusters, dim), np.float32) ** 3
    centers *= fixed.random((clusters, dim)) < keep
    rng = np.random.default_rng(seed)
    c = rng.integers(clusters, size=n)
    x = centers[c] * (1 + 0.3 * rng.standard_normal((n, dim)).astype(np.float32)) ** 2
    x *= rng.random((n, dim)) > 0.1
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(norms > 0, norms, 1)).astype(np.float32)


def _write(path, x, splits=(0,)):
    """index.refine from parts starting at ``splits``; every nonempty row stored."""
    bounds = list(splits) + [len(x)]
    parts = []
    for n, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        part = SparsePart(path.parent / f"part-{n}", a, b)
        ids = np.flatnonzero(x[a:b].any(1)) + a
        part.add(ids, x[ids])
        part.close()
        parts.append((a, b, path.parent / f"part-{n}"))
    write_refine(path, parts[::-1], len(x), x.shape[1])   # any order of the parts
    return RefineRows(path)


def _kernel_scores(rows, queries, ids, simd):
    """The kernel called on queries narrower than the rows (what a damaged file amounts to)."""
    out = np.empty(ids.shape, np.float32)
    _refine.sparse_scores(queries, rows.indptr, rows.columns, rows.values, ids, out, 1, simd)
    return out


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("simd", [True, False])
def test_scores_are_inner_products_with_the_half_precision_rows(tmp_path, threads, signed,
                                                                 simd):
    x = sparse_rows(500, dim=300)
    if signed:
        x *= np.where(np.random.default_rng(3).random(x.shape) < 0.5, -1, 1)
    x[7] = 0                       # an empty row
    x[8, 5] = 3e-6                 # subnormal in half precision
    x[9] = 0
    x[9, :11] = 0.25               # eight pairs at a time and three left over
    rows = _write(tmp_path / "r", x, splits=(0, 123, 400))
    # columns beyond the queries' width (a damaged file) count as zeros
    wide = _write(tmp_path / "w", np.hstack([x[:20], np.ones((20, 700), np.float32)]))
    narrow = np.random.default_rng(4).standard_normal((1, 1000)).astype(np.float32)
    narrow[0, 300:] = 0
    np.testing.assert_allclose(
        _kernel_scores(wide, narrow[:, :300], np.arange(20)[None], simd),
        rows.scores(narrow[:, :300], np.arange(20)[None], 1, simd), rtol=1e-5, atol=1e-6)
    assert rows.n_rows == 500 and rows.dim == 300 and rows.nnz == np.count_nonzero(x)
    q = np.random.default_rng(1).standard_normal((6, 300)).astype(np.float32)
    ids = np.random.default_rng(2).integers(0, 500, (6, 40))
    ids[:, 0] = 7
    ids[:, 1] = 8
    ids[:, 2] = 9
    ids[2, 5:9] = -1
    got = rows.scores(q, ids, threads, simd)
    x16 = x.astype(np.float16).astype(np.float64)
    want = np.einsum("nd,nmd->nm", q.astype(np.float64), x16[np.maximum(ids, 0)])
    want[ids < 0] = -np.inf
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert got[0, 0] == 0 and np.isneginf(got[2, 5:9]).all()


@pytest.mark.parametrize("simd", [True, False])
def test_every_finite_half_value_is_converted_exactly(tmp_path, simd):
    bits = np.arange(1 << 16, dtype=np.uint16)
    values = bits.view(np.float16)
    values = values[np.isfinite(values) & (values != 0)]
    n = len(values)
    x = np.zeros((n, 2), np.float32)
    x[:, 1] = values.astype(np.float32)       # exactly representable: round trip is exact
    rows = _write(tmp_path / "r", x)
    got = rows.scores(np.ones((1, 2), np.float32), np.arange(n)[None], simd=simd)
    np.testing.assert_array_equal(got[0], values.astype(np.float32))


def test_bad_arguments_and_damaged_files(tmp_path):
    rows = _write(tmp_path / "r", sparse_rows(50, dim=16))
    with pytest.raises(ValueError, match="n x 16"):
        rows.scores(np.zeros((1, 15), np.float32), np.zeros((1, 3), np.int64))
    with pytest.raises(ValueError, match="below 50"):
        rows.scores(np.zeros((1, 16), np.float32), np.array([[50]]))
    data = (tmp_path / "r").read_bytes()
    (tmp_path / "r").write_bytes(data[:-2])
    with pytest.raises(StoreError, match="damaged .*header says"):
        RefineRows(tmp_path / "r")
    (tmp_path / "r").write_bytes(b"x" * 100)
    with pytest.raises(StoreError, match="not a refine file"):
        RefineRows(tmp_path / "r")
    with pytest.raises(StoreError, match="beyond half precision"):
        SparsePart(tmp_path / "p", 0, 1).add([0], np.array([[1e6]], np.float32))
    with pytest.raises(StoreError, match="not finite"):
        SparsePart(tmp_path / "p", 0, 1).add([0], np.array([[np.nan]], np.float32))


# ------------------------------------------------------------------ the index

def _build(store, **kw):
    with Store(store) as s:
        ix.build(s, **kw)
    return ix.index_record(store)


def _file(store, name=REFINE_FILE):
    """The current index's file ``name`` (in the folder of its generation)."""
    return ix.current_index_paths(store)[ix.INDEX_FILE].with_name(name)


@pytest.fixture(scope="module")
def rows2k():
    return sparse_rows(2000, dim=64)


def test_auto_index_of_sparse_rows_refines_them(tmp_path, rows2k):
    store = write_store(tmp_path / "s", rows2k)
    record = _build(store, exact_below=100)
    assert record["factory"] == "IVF64,PQ8,Refine(Sparse)"
    assert record["params"] == {"nprobe": 2, "k_factor": 100} and record["refine"] == "sparse"
    assert record["refine_bytes"] == _file(store).stat().st_size
    with Store(store) as s:
        index = ix.load_index(s)
        assert isinstance(index, RefinedIndex) and index.ntotal == 2000
        with open("/proc/self/maps") as f:
            mapped = f.read()
        # the rows mapped (the large part), the PQ codes read (FAISS scans them faster)
        assert str(_file(store).resolve()) in mapped
        assert str(_file(store, ix.INDEX_FILE).resolve()) not in mapped
        queries = sparse_rows(100, dim=64, seed=9)
        scores, got = ix.search_vectors(index, queries, 10)
    exact = queries @ rows2k.T
    truth = np.argsort(-exact, axis=1, kind="stable")[:, :10]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got.tolist(), truth.tolist())])
    assert recall >= 0.95, recall
    # the scores are the rows' own (to half precision), not PQ estimates
    np.testing.assert_allclose(scores, np.take_along_axis(exact, got, 1), atol=2e-3)
    # smaller than FAISS's half-precision refine codes of the same rows
    assert record["refine_bytes"] < 2000 * 64 * 2
    assert ix.auto_factory(1_281_167, 1000, density=0.26) == (
        "IVF1024,PQ40,Refine(Sparse)", {"nprobe": 32, "k_factor": 100})
    assert ix.auto_factory(1_281_167, 1000, density=0.6)[0].endswith("Refine(SQfp16)")
    assert ix.auto_factory(1_281_167, 70_000, density=0.1)[0].endswith("Refine(SQfp16)")


def test_refine_file_is_the_same_however_the_index_is_filled(tmp_path, rows2k, cli_env):
    x = rows2k.copy()
    status = np.zeros(len(x), np.uint8)
    status[::13] = 2
    x[5::17] = 0
    store = write_store(tmp_path / "s", x, status=status)
    factory = "IVF16,PQ8,Refine(Sparse)"
    _build(store, factory=factory, part_rows=1, block=300)            # a part per shard
    parts = _file(store).read_bytes(), _file(store, ix.INDEX_FILE).read_bytes()
    run_cli("index", store, "--index", factory, "--force", "--jobs", "2", env=cli_env,
            check=True)
    assert (_file(store).read_bytes(), _file(store, ix.INDEX_FILE).read_bytes()) == parts
    record = _build(store, factory="HNSW16," + ix.SPARSE_REFINE, block=300)  # in memory
    assert _file(store).read_bytes() == parts[0]
    assert record["kind"] == "custom" and record["params"] == {"k_factor": 100}
    rows = RefineRows(_file(store))
    kept = (status == 0) & x.any(1)
    assert np.array_equal(np.diff(rows.indptr) > 0, kept)
    cols, vals = rows.row(100)
    np.testing.assert_array_equal(cols, np.flatnonzero(x[100]))
    np.testing.assert_array_equal(vals, x[100, cols].astype(np.float16).astype(np.float32))
    assert not list(store.glob(".index-parts-*")) and not list(store.glob(".*tmp*"))
    # another index without the stage: the file goes, nothing refers to it
    record = _build(store, factory="IVF16,SQ8")
    assert not _file(store).exists() and record["refine"] is None


def test_key_query_through_the_refined_index(tmp_path, rows2k):
    store = write_store(tmp_path / "s", rows2k)
    _build(store, factory="PQ8,Refine(Sparse)")    # a shortlist of 1000: the exact order
    with Searcher(store) as searcher:
        q = searcher.query_from_key("c4/img_000123.jpg")
        hits = searcher.search(q, 10)
        batch = searcher.search_batch([q, searcher.query_from_key("c0/img_000700.jpg")], 10)
    exact = rows2k @ rows2k[123]
    exact[123] = -1
    truth = np.argsort(-exact, kind="stable")[:10]
    got = [h["index"] for h in hits]
    # the same images but for ties at half precision
    np.testing.assert_allclose(exact[got], exact[truth], atol=1e-3)
    np.testing.assert_allclose([h["score"] for h in hits], exact[truth], atol=1e-3)
    assert [h["index"] for h in batch[0]] == [h["index"] for h in hits]
    assert 700 not in [h["index"] for h in batch[1]] and len(batch[1]) == 10


@pytest.mark.parametrize("factory, words", [
    ("Refine(Sparse)", ["refines an index", "IVF1024,PQ40,Refine(Sparse)"]),
    ("IVF16,PQ8,Refine(Sparse)", ["stored dense", "dense"]),
])
def test_sparse_refine_refused_is_one_line(tmp_path, rows2k, cli_env, factory, words):
    store = write_store(tmp_path / "s", rows2k[:600], dense=True)
    proc = run_cli("index", store, "--index", factory, "--encoding", "dense", env=cli_env)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("features: error:")
    assert all(w in lines[0] for w in words), lines[0]
    assert not _file(store, ix.INDEX_FILE).exists() and not _file(store).exists()


@pytest.mark.parametrize("where", ["first", "last"])
def test_verify_reads_the_refine_rows_in_blocks(tmp_path, rows2k, where):
    """Blocks of 7 values (rows cross their edges): a value that is not finite is found in
    the first block and in the last, and nothing is reported of the sound file."""
    from features.index.verify import check_refine
    from features.index.builder import index_record
    from features.store.verify import Damage
    store = write_store(tmp_path / "s", rows2k[:300])
    _build(store, factory="IVF8,PQ8,Refine(Sparse)")
    path, record = _file(store), index_record(store)
    rows = RefineRows(path)
    bad = Damage()
    check_refine(path, record, None, bad, block=7)
    assert bad.found == []
    at = rows.values.offset + 2 * (0 if where == "first" else rows.nnz - 1)
    del rows
    raw = bytearray(path.read_bytes())
    raw[at:at + 2] = np.array([np.inf], np.float16).tobytes()
    path.write_bytes(bytes(raw))
    check_refine(path, record, None, bad, block=7)
    assert [d["problem"] for d in bad.found] == ["values that are not finite"]


def test_damaged_or_missing_refine_file(tmp_path, rows2k, cli_env, monkeypatch):
    store = write_store(tmp_path / "s", rows2k[:800])
    _build(store, factory="IVF8,PQ8,Refine(Sparse)")
    path = _file(store)
    good = path.read_bytes()
    assert not [d for d in verify_store(store)["damage"] if REFINE_FILE in d["path"]]

    def refine_damage():
        return [d["problem"] for d in verify_store(store)["damage"]
                if d["path"].endswith(REFINE_FILE)]

    # a row pointer made to decrease
    raw = bytearray(good)
    raw[64 + 8 * 10:64 + 8 * 11] = (10**6).to_bytes(8, "little")
    path.write_bytes(bytes(raw))
    assert any("row pointers" in p for p in refine_damage())
    with pytest.raises(StoreError, match="row pointers"):
        RefineRows(path)
    # a column beyond the dimension (the first stored column)
    raw = bytearray(good)
    at = 64 + 8 * 801
    raw[at:at + 2] = (64).to_bytes(2, "little")
    path.write_bytes(bytes(raw))
    assert any("beyond the dimension" in p for p in refine_damage())
    # refused at open: not the recorded file
    with pytest.raises(IndexDamaged, match="checksum"):
        Searcher(store)
    # a file too large to be hashed at open is searched anyway: the column counts as a
    # zero, nothing is read out of bounds
    monkeypatch.setitem(files.HASH_AT_OPEN, REFINE_FILE, 0)
    with Searcher(store) as searcher:
        assert len(searcher.search(searcher.query_from_key("c0/img_000000.jpg"), 5)) == 5
    monkeypatch.undo()
    # truncated: verify, search and a rebuild
    path.write_bytes(good[:-6])
    assert any("header says" in p for p in refine_damage())
    proc = run_cli("search", store, "c1/img_000001.jpg", env=cli_env)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert REFINE_FILE in proc.stderr and "features index" in proc.stderr
    with Store(store) as s:
        assert not ix.is_current(s, factory="IVF8,PQ8,Refine(Sparse)")
    path.unlink()
    assert refine_damage() == ["missing"]
    _build(store, factory="IVF8,PQ8,Refine(Sparse)")
    assert _file(store).read_bytes() == good and not path.exists()


@pytest.mark.parametrize("factory", ["IVF8,Flat,Refine(Sparse)", "IVF8,PQ8,Refine(Sparse)",
                                     "Flat"])
def test_a_copied_index_survives_its_files_emptied_in_place(tmp_path, rows2k, factory):
    """``load_index(mmap=False)`` reads the files into memory through the descriptors it
    checked: no page of them is mapped, and emptying or rewriting them in place (what would
    kill a process reading a mapped one with SIGBUS) leaves its searches as they were; the
    check before each search still names the file."""
    store = write_store(tmp_path / "s", rows2k[:800])
    _build(store, factory=factory)
    queries = sparse_rows(20, dim=64, seed=3)
    paths = ix.current_index_paths(store)
    with Store(store) as s:
        index = ix.load_index(s, mmap=False)
        assert ix.index_memory(index) == "copy"
        with open("/proc/self/maps") as f:
            maps = f.read()
        assert not [p for p in paths.values() if str(p.resolve()) in maps]
        mapped = ix.load_index(s)
        assert ix.index_memory(mapped) == "map"
        expect = ix.search_vectors(mapped, queries, 10)
        before = ix.search_vectors(index, queries, 10)
        for path in paths.values():
            # the mapped index above maps them; the copy is compared with it
            original = path.read_bytes()
            with open(path, "r+b") as f:
                f.truncate(0)
                f.write(original[::-1])
                f.truncate(len(original) // 2)
        del mapped   # its pages are gone: never read again
        with pytest.raises(StoreError, match="in place"):
            ix.search_vectors(index, queries, 10)
        # the searches themselves, past the check: the copy, as it was
        if isinstance(index, RefinedIndex):
            index.rows.files = None
        after = index.search(queries, 10)
        if isinstance(index, RefinedIndex):
            assert index.rows.row(5)[0].size
    assert REFINE_FILE in paths or factory == "Flat"
    np.testing.assert_array_equal(before[1], expect[1])
    np.testing.assert_array_equal(after[1], before[1])
    np.testing.assert_allclose(after[0], before[0])


_READ_AFTER_EMPTIED = """
import sys, numpy as np
from features import index as ix
from features.store import Store
with Store(sys.argv[1]) as s:
    index = ix.load_index(s, mmap=sys.argv[2] == "map")
    q = np.zeros((1, index.d), np.float32)
    q[0, :20] = 1
    for path in ix.current_index_paths(s.dir).values():
        open(path, "r+b").truncate(0)
    index.rows.files = None          # past the check before each search
    print(index.search(q, 5)[1].tolist())
"""


@pytest.mark.parametrize("mode", ["map", "copy"])
def test_why_the_server_copies_a_mapped_index_read_after_its_files_emptied(
        tmp_path, rows2k, cli_env, mode):
    """What the check before each search guards a mapped index against, and what it cannot
    guard in the microseconds after it: a read of a page of a file emptied in place kills
    the process with SIGBUS. A copy answers."""
    import json
    import subprocess
    import sys
    store = write_store(tmp_path / "s", rows2k[:800])
    _build(store, factory="IVF8,PQ8,Refine(Sparse)")
    proc = subprocess.run([sys.executable, "-c", _READ_AFTER_EMPTIED, str(store), mode],
                          capture_output=True, text=True, env=cli_env, timeout=300)
    if mode == "map":
        assert proc.returncode == -7, (proc.returncode, proc.stderr[-500:])   # SIGBUS
    else:
        assert proc.returncode == 0, proc.stderr
        assert len(json.loads(proc.stdout)[0]) == 5
