"""FAISS inner-product index over a stored encoding (cosine similarity for L2-normalized rows).

Which index: exact (``Flat``) for fewer than ``EXACT_BELOW`` indexable images of 1000
dimensions (as many values in all for other dimensions), where an exhaustive scan still
answers a query in a few milliseconds; above it, an inverted file
with product-quantized codes whose shortlist of 100 k is re-scored: tf-idf scores near
rank 10 lie within 0.001 of each other, which PQ codes alone cannot order. For an
encoding stored as sparse rows (``bovw``: about a quarter of the words per image) the
re-scoring is ``Refine(Sparse)`` (``features.refine``): on the rows themselves, kept as
(column, half-precision value) pairs in ``index.refine``, about 1 KB per image and the
rows' own scores to half precision. For dense encodings it is FAISS's ``Refine(SQfp16)``,
half-precision vectors (2 bytes per dimension). 8-bit refine codes are not precise enough:
at 1.28M rows their recall@10 against exact search stays at 0.93 however long the
shortlist (``benchmarks/results/search.md``). Any FAISS factory string can be given
instead (``features index STORE --index STRING``), with ``,Refine(Sparse)`` after it for
a sparse encoding.

How it is built, the same way on one machine and on a cluster (``train_index``,
``fill_part``, ``_merge_on_disk``): an empty index is trained on a seeded sample of the
rows and written to a file; each task (whole shards of the store, ``--jobs`` worker
processes or Dask workers) reads its rows straight from ``store.h5`` (for an encoding added
by ``aggregate``: from its shard files) a block at a time and adds them to its own copy of
the trained index, writing the part's inverted lists and flat codes to files; the driver
merges the parts' inverted lists on disk (FAISS's ``OnDiskInvertedLists``, over the parts
memory-mapped) and streams the merged lists, the flat codes (refine stage, or the whole
index when it is flat) and the ids into one FAISS file, written atomically: byte for byte
the file FAISS writes for the same index filled in memory. A sparse refine stage's rows
are written by the same tasks, part by part, and concatenated into ``index.refine``.
Memory: one block of rows per task, the training sample and one inverted list; never the
index. Indexes that do not split into inverted lists and flat codes (HNSW, fast-scan PQ,
PQ without IVF, pre-transforms) are filled in memory instead.

Ids of the index are image numbers of the store. Images whose status is not ok, or whose
encoding row is empty (no features), are left out. The index is opened memory-mapped: the
flat codes (exact vectors, refine codes) with ``IO_FLAG_MMAP_IFC``, or the inverted lists
with ``IO_FLAG_MMAP`` for an IVF without a FAISS refine stage (FAISS maps one or the
other), and ``index.refine`` too, so a process touches only the pages its queries read.

The manifest records what the index was built from (encoding, factory, a fingerprint of
the rows) so ``features run`` does not rebuild an index that is current.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import shutil
import struct
import sys
import time
import uuid
from pathlib import Path

import faiss
import h5py
import numpy as np

from .refine import MAX_DIM, REFINE_FILE, RefinedIndex, RefineRows, SparsePart, write_refine
from .store import OK, Manifest, Store, StoreError, atomic_file, atomic_path

INDEX_FILE = "index.faiss"
# Below this many indexable images the index is exact: a flat scan of 1000-d float32 rows
# still answers in a few ms on one thread (benchmarks/results/search.md), and an inverted
# file would have too few points per list to train well.
EXACT_BELOW = 50_000
_EXACT_DIM = 1000         # the dimension EXACT_BELOW was measured at (1000-word tf-idf)
AUTO = "auto"
SPARSE_REFINE = "Refine(Sparse)"  # our refine stage (features.refine), after a FAISS factory
_TRAIN_PER_LIST = 48      # training points per inverted list (FAISS asks for >= 39)
_TRAIN_DEFAULT = 50_000   # training points when the factory string has no IVF
_IO_FLAGS = {"mmap": faiss.IO_FLAG_MMAP, "mmap_ifc": faiss.IO_FLAG_MMAP_IFC, "none": 0}


# ---------------------------------------------------------------------------- rows
class EncodingRows:
    """Row access to one stored encoding, whatever its layout: a CSR group
    (``indptr``, ``indices``, ``data``, attribute ``shape``) or a dense row-chunked dataset.

    Reads only what is asked: a block of rows, or one row."""

    def __init__(self, h5, name):
        path = "encodings/" + name
        if not name or path not in h5:
            have = sorted(k for k in h5["encodings"] if _is_encoding(h5["encodings/" + k])) \
                if "encodings" in h5 else []
            raise StoreError(f"the store has no encoding {name!r} "
                             f"(it has: {', '.join(have) or 'none'})")
        node = h5[path]
        if not _is_encoding(node):
            raise StoreError(f"encodings/{name} is not an encoding (neither CSR rows nor a "
                             f"matrix of rows)")
        self.name = name
        self.node = node
        if isinstance(node, h5py.Group):
            self.sparse = True
            self.indptr = node["indptr"][:]
            self.n_rows, self.dim = (int(v) for v in node.attrs["shape"])
        else:
            self.sparse = False
            self.n_rows, self.dim = (int(v) for v in node.shape)

    def block(self, start, stop) -> np.ndarray:
        """Rows ``start:stop`` as a dense float32 matrix."""
        if not self.sparse:
            return np.asarray(self.node[start:stop], np.float32)
        out = np.zeros((stop - start, self.dim), np.float32)
        a, b = int(self.indptr[start]), int(self.indptr[stop])
        if b > a:
            lengths = np.diff(self.indptr[start:stop + 1])
            rows = np.repeat(np.arange(stop - start), lengths)
            out[rows, self.node["indices"][a:b]] = self.node["data"][a:b]
        return out

    def row(self, i) -> np.ndarray:
        return self.block(i, i + 1)

    def nonempty(self, start, stop) -> np.ndarray:
        if self.sparse:
            return np.diff(self.indptr[start:stop + 1]) > 0
        return np.any(self.block(start, stop) != 0, axis=1)

    def fingerprint(self) -> dict:
        """Cheap identity of the rows: layout, attributes, and a digest of the row
        structure (CSR) or of the first and last rows (dense)."""
        h = hashlib.sha256()
        if self.sparse:
            h.update(np.ascontiguousarray(self.indptr).tobytes())
        else:
            h.update(self.block(0, min(16, self.n_rows)).tobytes())
            h.update(self.block(max(0, self.n_rows - 16), self.n_rows).tobytes())
        attrs = {k: _plain(v) for k, v in self.node.attrs.items()}
        return {"shape": [self.n_rows, self.dim], "sparse": self.sparse, "attrs": attrs,
                "rows_sha256": h.hexdigest()}


def _is_encoding(node) -> bool:
    if isinstance(node, h5py.Group):
        return {"indptr", "indices", "data"} <= set(node.keys()) and "shape" in node.attrs
    return isinstance(node, h5py.Dataset) and node.ndim == 2


def _plain(v):
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    return v


def indexable(store: Store, rows: EncodingRows, start, stop, status=None) -> np.ndarray:
    """Image numbers in ``start:stop`` that go into the index: status ok, features present."""
    status = store.h5["images/status"][start:stop] if status is None else status[start:stop]
    keep = (status == OK) & rows.nonempty(start, stop)
    return np.flatnonzero(keep) + start


# ---------------------------------------------------------------------------- choosing
def auto_factory(n: int, dim: int, exact_below: int = EXACT_BELOW,
                 density: float = 1.0) -> tuple[str, dict]:
    """The factory string and search parameters for ``n`` vectors of ``dim`` dimensions,
    ``density`` of them nonzero when the encoding is stored as sparse rows (1: dense)."""
    # the threshold is for 1000-d rows: a scan costs as many values, so wider rows (a Fisher
    # vector of 32k dimensions) switch at fewer images
    if n < exact_below and n * dim < exact_below * _EXACT_DIM:
        return "Flat", {}
    nlist = max(64, 2 ** round(math.log2(math.sqrt(n))))
    m = _pq_subquantizers(dim)
    if m is None:
        return f"IVF{nlist},SQ8", {"nprobe": max(1, nlist // 16)}
    # a stored value takes 4 bytes in the sparse refine stage, 2 in FAISS's SQfp16
    if density <= 0.5 and dim <= MAX_DIM:
        return (f"IVF{nlist},PQ{m},{SPARSE_REFINE}",
                {"nprobe": max(1, nlist // 32), "k_factor": 100})
    return f"IVF{nlist},PQ{m},Refine(SQfp16)", {"nprobe": max(1, nlist // 16), "k_factor": 100}


def split_factory(factory: str) -> tuple[str, bool]:
    """(FAISS factory string, whether a sparse refine stage follows it)."""
    if factory == SPARSE_REFINE or factory.endswith("," + SPARSE_REFINE):
        base = factory[:-len(SPARSE_REFINE)].rstrip(",")
        if not base:
            raise StoreError(f"{SPARSE_REFINE} refines an index: give one before it, "
                             f"for example IVF1024,PQ40,{SPARSE_REFINE}")
        return base, True
    return factory, False


def _pq_subquantizers(dim) -> int | None:
    """About 25 dimensions per PQ sub-quantizer (40 for 1000 words), 8 to 64 of them,
    dividing ``dim``."""
    want = min(64, max(8, dim / 25))
    divisors = [m for m in range(8, 65) if dim % m == 0]
    return min(divisors, key=lambda m: (abs(m - want), m)) if divisors else None


def _make_index(factory: str, dim: int):
    try:
        inner = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as e:
        raise StoreError(f"FAISS refuses the index {factory!r}: {_faiss_message(e)}") from None
    index = faiss.IndexIDMap(inner)
    index.referenced_objects = [inner]  # keep the wrapped index alive with its wrapper
    return index


def _faiss_message(e) -> str:
    text = str(e).strip().splitlines()
    msg = next((line for line in text if "Error" in line), text[0] if text else "")
    return msg.split("Error in", 1)[-1].split(":", 1)[-1].strip() or str(e).strip()


def _train_size(factory: str, n: int) -> int:
    m = re.search(r"IVF(\d+)", factory)
    want = _TRAIN_PER_LIST * int(m.group(1)) if m else _TRAIN_DEFAULT
    return min(n, max(want, 1))


def _set_params(index, params: dict):
    """Search-time parameters (they are saved with the index)."""
    for sub in _walk(index):
        if "nprobe" in params and isinstance(sub, faiss.IndexIVF):
            sub.nprobe = int(params["nprobe"])
        if "k_factor" in params and isinstance(sub, faiss.IndexRefine):
            sub.k_factor = float(params["k_factor"])


def _walk(index):
    """The index and the indexes it wraps, downcast."""
    index = faiss.downcast_index(index)
    yield index
    for attr in ("index", "base_index", "refine_index"):
        inner = getattr(index, attr, None)
        if isinstance(inner, faiss.Index):
            yield from _walk(inner)
    if isinstance(index, faiss.IndexIVF):
        yield from _walk(index.quantizer)


def _io_flag(index) -> str:
    """Which part to memory-map: flat codes (exact vectors, refine codes) when the index has
    them, else the inverted lists. FAISS maps one or the other, not both."""
    kinds = list(_walk(index))
    outer_ivf = [k for k in kinds if isinstance(k, faiss.IndexIVF)]
    refined = any(isinstance(k, faiss.IndexRefine) for k in kinds)
    if outer_ivf and not refined:
        return "mmap"
    return "mmap_ifc"


# ---------------------------------------------------------------------------- building
def train_index(store: Store, rows: EncodingRows, factory: str, *, seed=0, eligible=None,
                params=None):
    """An empty index trained on a seeded sample of the indexable rows."""
    index = _make_index(factory, rows.dim)
    _set_params(index, params or {})
    for sub in _walk(index):
        # Polysemous training orders PQ centroids for Hamming-distance filtering, which
        # these searches never use (ADC distances do not depend on the order); it is
        # simulated annealing that costs a minute even for a 768-point training set.
        if isinstance(sub, (faiss.IndexPQ, faiss.IndexIVFPQ)):
            sub.do_polysemous_training = False
    if index.is_trained:
        return index
    if eligible is None:
        eligible = indexable(store, rows, 0, rows.n_rows)
    n = _train_size(factory, len(eligible))
    if n == 0:
        raise StoreError("no indexable images (status ok, with features) to train the index on")
    sample = _training_sample(rows, eligible, n, seed)
    try:
        index.train(sample)
    except RuntimeError as e:
        raise StoreError(f"cannot train the index {factory!r} on {len(sample)} vectors: "
                         f"{_faiss_message(e)}") from None
    return index


def _training_sample(rows: EncodingRows, eligible, n, seed, run=32) -> np.ndarray:
    """``n`` rows drawn as seeded random runs of ``run`` consecutive eligible rows (a run
    reads one or two compressed chunks; single scattered rows would each read their own)."""
    rng = np.random.default_rng(seed)
    if n >= len(eligible):
        starts = np.arange(0, len(eligible), run)
    else:
        n_runs = max(1, len(eligible) // run)
        starts = np.sort(rng.choice(n_runs, min(n_runs, -(-n // run)), replace=False)) * run
    out = np.empty((sum(len(eligible[s:s + run]) for s in starts), rows.dim), np.float32)
    at = 0
    for s in starts:
        r = eligible[s:s + run]
        out[at:at + len(r)] = rows.block(int(r[0]), int(r[-1]) + 1)[r - r[0]]
        at += len(r)
    return out


# The parts of an index that are filled shard by shard and merged on disk: the inverted
# lists of an IVF (merged with FAISS's OnDiskInvertedLists) and the flat codes of the index
# that holds one code per vector (the refine stage, or the whole index when it is flat),
# streamed into the index file with the ids. Anything else is filled in memory.
_PART_SHIFT = 40   # ids in a part's lists: part number << 40 | position in the part
_PLAIN_IVF = ("IndexIVFFlat", "IndexIVFPQ", "IndexIVFScalarQuantizer", "IndexIVF")
_PLAIN_FLAT = ("IndexFlat", "IndexFlatIP", "IndexFlatL2", "IndexScalarQuantizer")


def _split(index):
    """(ivf, flat) of an ``IndexIDMap`` whose inner index is an IVF, a flat-codes index, or
    an IVF refined by a flat-codes index; None when the index is not of these kinds."""
    outer = faiss.downcast_index(index)
    if not isinstance(outer, faiss.IndexIDMap) or isinstance(outer, faiss.IndexIDMap2):
        return None
    inner = faiss.downcast_index(outer.index)
    ivf = flat = None
    if isinstance(inner, faiss.IndexRefine):
        ivf = faiss.downcast_index(inner.base_index)
        flat = faiss.downcast_index(inner.refine_index)
    elif isinstance(inner, faiss.IndexIVF):
        ivf = inner
    elif isinstance(inner, faiss.IndexFlatCodes):
        flat = inner
    else:
        return None
    if ivf is not None:
        # fast-scan and PQ-refined IVFs keep codes outside plain inverted lists
        if type(ivf).__name__ not in _PLAIN_IVF or not isinstance(
                faiss.downcast_InvertedLists(ivf.invlists), faiss.ArrayInvertedLists):
            return None
    # the flat codes must end the flat index's serialization (an IndexPQ's do not)
    if flat is not None and type(flat).__name__ not in _PLAIN_FLAT:
        return None
    if isinstance(inner, faiss.IndexRefine) and ivf is None:
        return None
    return ivf, flat


def fill_part(store_dir, encoding, trained_path, start, stop, prefix, number, block=8192,
              refine=False, parallel=False) -> dict:
    """One task of an index build: the indexable rows ``start:stop`` of the store (whole
    shards) added to a copy of the trained index read from ``trained_path``. Writes
    ``PREFIX.ivf`` (the IVF with this part's inverted lists; an id is the part's ``number``
    times 2**40 plus the position in the part, made global when the lists are merged),
    ``PREFIX.codes`` (the part's flat codes, row after row) and ``PREFIX.ids.npy`` (image
    numbers, in the same order). With ``refine``, also the part's rows for a sparse refine
    stage (``features.refine.SparsePart``). Memory: one block of rows and the part's IVF
    codes.

    It opens the store itself, so it runs the same in a joblib worker or on a Dask worker
    that shares the store's filesystem."""
    if parallel:
        faiss.omp_set_num_threads(1)
    trained = faiss.read_index(str(trained_path))
    ivf, flat = _split(trained)
    prefix = Path(prefix)
    with Store(store_dir) as store:
        rows = EncodingRows(store.h5, encoding)
        status = store.h5["images/status"][:]
        kept, at = [], 0
        codes_tmp = atomic_path(prefix.with_suffix(".codes"))
        sparse = SparsePart(prefix, start, stop) if refine else None
        try:
            with open(codes_tmp, "wb") as codes:
                for a in range(start, stop, block):
                    b = min(a + block, stop)
                    ids = indexable(store, rows, a, b, status)
                    if not len(ids):
                        continue
                    x = np.ascontiguousarray(rows.block(a, b)[ids - a])
                    if ivf is not None:
                        ivf.add_with_ids(x, (int(number) << _PART_SHIFT)
                                         + np.arange(at, at + len(x), dtype=np.int64))
                    at += len(x)
                    if flat is not None:
                        codes.write(flat.sa_encode(x).tobytes())
                    if sparse is not None:
                        sparse.add(ids, x)
                    kept.append(ids)
            ids = np.concatenate(kept).astype(np.int64) if kept else np.zeros(0, np.int64)
            if ivf is not None:
                tmp = atomic_path(prefix.with_suffix(".ivf"))
                faiss.write_index(ivf, str(tmp))
                os.replace(tmp, prefix.with_suffix(".ivf"))
            np.save(prefix.with_suffix(".ids.npy"), ids)
            os.replace(codes_tmp, prefix.with_suffix(".codes"))
            if sparse is not None:
                sparse.close()
                sparse = None
        finally:
            codes_tmp.unlink(missing_ok=True)
            if sparse is not None:
                sparse.discard()
    return {"prefix": str(prefix), "rows": int(len(ids))}


def _part_ranges(store: Store, n_rows, part_rows):
    """Row ranges of whole shards (the encode step's, ``config.shard_size`` images each),
    at least ``part_rows`` rows each: one task reads its shards' rows and nothing else."""
    shard = max(1, int(getattr(store.config, "shard_size", 0) or 1000))
    step = shard * max(1, -(-part_rows // shard))
    return [(a, min(a + step, n_rows)) for a in range(0, n_rows, step)]


def _merge_on_disk(trained_path, prefixes, counts, work, out):
    """Write the merged index to ``out``, one self-contained FAISS file, without holding its
    vectors: the parts' inverted lists are merged on disk (FAISS's ``OnDiskInvertedLists``
    over memory-mapped part lists, into ``work``), then streamed list by list into the
    file, followed by the flat codes and the ids streamed from the part files.
    Memory: the trained index and one inverted list."""
    skeleton = faiss.read_index(str(trained_path))
    ivf, flat = _split(skeleton)
    outer = faiss.downcast_index(skeleton)
    inner = faiss.downcast_index(outer.index)
    refined = isinstance(inner, faiss.IndexRefine)
    n_vectors = sum(counts)
    outer.ntotal = inner.ntotal = n_vectors
    if flat is not None:
        flat.ntotal = n_vectors
    lists = None
    if ivf is not None:
        ivf.ntotal = n_vectors
        empty_ivf = faiss.serialize_index(ivf).tobytes()
        lists = _merged_lists(ivf, prefixes, work / "merged.ivfdata", n_vectors)
    raw = faiss.serialize_index(skeleton).tobytes()
    # The serialized skeleton holds empty vectors where the streams go: the IVF's inverted
    # lists (last in an IVF's serialization), then at the end [flat codes: size 0]
    # [k_factor, if refined] [id_map: size 0].
    tail = b""
    if flat is not None:
        tail = struct.pack("<Q", 0) + (struct.pack("<f", inner.k_factor) if refined else b"")
    tail += struct.pack("<Q", 0)
    if not raw.endswith(tail):
        raise RuntimeError("unexpected layout of a serialized FAISS index")
    head, middle = raw[:len(raw) - len(tail)], b""
    if ivf is not None:
        empty_lists = (b"ilar" + struct.pack("<QQ", ivf.nlist, ivf.code_size) + b"sprs"
                       + struct.pack("<Q", 0))
        at = head.find(empty_ivf)
        if (not empty_ivf.endswith(empty_lists) or at < 0
                or head.find(empty_ivf, at + 1) >= 0):
            raise RuntimeError("unexpected layout of a serialized FAISS IVF index")
        cut = at + len(empty_ivf)
        head, middle = head[:cut - len(empty_lists)], head[cut:]
    with atomic_file(out) as tmp, open(tmp, "wb") as f:
        f.write(head)
        if lists is not None:
            starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
            _write_lists(f, lists, ivf.nlist, ivf.code_size, starts)
            del lists
        f.write(middle)
        if flat is not None:
            # IndexFlat counts its vector in floats (its legacy xb), the others in bytes
            unit = 4 if isinstance(flat, faiss.IndexFlat) else 1
            f.write(struct.pack("<Q", n_vectors * flat.code_size // unit))
            for p in prefixes:
                with open(p.with_suffix(".codes"), "rb") as src:
                    shutil.copyfileobj(src, f, 1 << 22)
            if refined:
                f.write(struct.pack("<f", inner.k_factor))
        f.write(struct.pack("<Q", n_vectors))
        for p in prefixes:
            f.write(np.load(p.with_suffix(".ids.npy")).astype("<i8").tobytes())


def _errno_in(text):
    import errno
    for number in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EIO):
        if os.strerror(number) in text:
            return number
    return errno.EIO


def _merged_lists(ivf, prefixes, path, n_vectors):
    """The parts' inverted lists merged into one ``OnDiskInvertedLists`` file."""
    parts = [faiss.read_index(str(p.with_suffix(".ivf")), faiss.IO_FLAG_MMAP) for p in prefixes]
    sources = faiss.InvertedListsPtrVector()
    for part in parts:
        sources.push_back(faiss.extract_index_ivf(part).invlists)
    merged = faiss.OnDiskInvertedLists(ivf.nlist, ivf.code_size, str(path))
    with _quiet_stdout():  # FAISS prints each resize of the file
        # no shift_ids: FAISS 1.15 shifts each part by the wrong count; the ids carry their
        # part number instead (see fill_part)
        total = merged.merge_from_multiple(sources.data(), sources.size(), False)
    if total != n_vectors:
        raise RuntimeError(f"merged {total} vectors, expected {n_vectors}")
    merged.parts = parts  # the part lists stay mapped while the merged ones are read
    return merged


def _write_lists(f, lists, nlist, code_size, starts):
    """FAISS's serialization of ``ArrayInvertedLists`` ("ilar", all sizes, then each
    list's codes and ids), one list at a time from the on-disk lists; ids become positions
    in the whole index (``starts``: the first position of each part)."""
    sizes = np.array([lists.list_size(i) for i in range(nlist)], "<u8")
    f.write(b"ilar" + struct.pack("<QQ", nlist, code_size) + b"full")
    f.write(struct.pack("<Q", nlist) + sizes.tobytes())
    for i, n in enumerate(sizes.tolist()):
        if n:
            f.write(faiss.rev_swig_ptr(lists.get_codes(i), n * code_size).tobytes())
            ids = faiss.rev_swig_ptr(lists.get_ids(i), n)
            ids = starts[ids >> _PART_SHIFT] + (ids & ((1 << _PART_SHIFT) - 1))
            f.write(ids.astype("<i8").tobytes())


@contextlib.contextmanager
def _quiet_stdout():
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _fill_in_memory(index, store, rows, start, stop, block, status, sparse=None):
    """Indexes that do not split into inverted lists and flat codes (HNSW, fast-scan, PQ
    refined IVF, pre-transformed ...) are filled in memory, a block of rows at a time (and
    a sparse refine stage's rows written from the same blocks)."""
    for a in range(start, stop, block):
        b = min(a + block, stop)
        ids = indexable(store, rows, a, b, status)
        if len(ids):
            x = rows.block(a, b)[ids - a]
            index.add_with_ids(x, ids.astype(np.int64))
            if sparse is not None:
                sparse.add(ids, x)


def _fingerprint(store: Store, rows: EncodingRows) -> str:
    status = store.h5["images/status"][:]
    manifest = Manifest(store.dir).data.get("shards", {})
    shards = sorted((k, v.get("count"), v.get("first_key"), v.get("last_key"))
                    for k, v in manifest.items())
    h = hashlib.sha256(json.dumps({"rows": rows.fingerprint(), "shards": shards},
                                  sort_keys=True, default=str).encode())
    h.update(status.tobytes())
    return h.hexdigest()


def index_record(directory) -> dict | None:
    return Manifest(directory).data.get("steps", {}).get("index")


def is_current(store: Store, encoding="bovw", factory=AUTO) -> bool:
    """Whether ``index.faiss`` was built from these rows with this request."""
    record = index_record(store.dir)
    path = store.dir / INDEX_FILE
    if not record or not path.exists() or path.stat().st_size != record.get("bytes"):
        return False
    if record.get("refine"):
        refine = store.dir / REFINE_FILE
        if not refine.exists() or refine.stat().st_size != record.get("refine_bytes"):
            return False
    if record.get("encoding") != encoding or record.get("requested") != factory:
        return False
    try:
        rows = EncodingRows(store.h5, encoding)
    except StoreError:
        return False
    return record.get("source") == _fingerprint(store, rows)


def build_index(store: Store, encoding="bovw", factory=None, *, exact_below=EXACT_BELOW,
                block=8192, part_rows=20_000, seed=0, force=False, jobs=1) -> Path:
    """Build (or keep, when current) the store's index; returns its path.

    ``factory``: None or "auto" to choose by size, or any FAISS index factory string,
    optionally followed by ``,Refine(Sparse)`` (``features.refine``; sparse encodings).
    ``jobs``: worker processes, or a ``features.cluster.Cluster``, for the fill tasks (one
    per run of whole shards, at least ``part_rows`` rows).
    """
    from .jobs import run_tasks
    requested = factory or AUTO
    out = store.dir / INDEX_FILE
    if not force and is_current(store, encoding, requested):
        return out
    started = time.monotonic()
    rows = EncodingRows(store.h5, encoding)
    status = store.h5["images/status"][:]
    if len(status) != rows.n_rows:
        raise StoreError(f"encoding {encoding!r} has {rows.n_rows} rows for "
                         f"{len(status)} images")
    eligible = np.concatenate([indexable(store, rows, a, min(a + (1 << 17), rows.n_rows), status)
                               for a in range(0, rows.n_rows, 1 << 17)] or [np.zeros(0, int)])
    if requested == AUTO:
        density = (int(rows.indptr[-1]) / max(1, len(eligible) * rows.dim) if rows.sparse
                   else 1.0)
        factory, params = auto_factory(len(eligible), rows.dim, exact_below, density)
    else:
        factory, params = requested, {}
    base_factory, refine = split_factory(factory)
    if refine:
        if not rows.sparse:
            raise StoreError(f"{SPARSE_REFINE} re-scores sparse rows, and encoding "
                             f"{encoding!r} is stored dense: refine it with FAISS's "
                             f"Refine(SQfp16) instead")
        if rows.dim > MAX_DIM:
            raise StoreError(f"{SPARSE_REFINE} takes encodings of at most {MAX_DIM} "
                             f"dimensions; {encoding!r} has {rows.dim}")
        # the refine stage is cheap (a gather per stored value): a long shortlist
        params = {"k_factor": 100, **params}
    trained = train_index(store, rows, base_factory, seed=seed, eligible=eligible,
                          params=params)
    token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    work = store.dir / f".index-parts-{token}"
    work.mkdir()
    try:
        if _split(trained) is None:
            index = faiss.clone_index(trained)
            prefix = work / "part-000000"
            sparse = SparsePart(prefix, 0, rows.n_rows) if refine else None
            try:
                _fill_in_memory(index, store, rows, 0, rows.n_rows, block, status, sparse)
            finally:
                if sparse is not None:
                    sparse.close()
            parts = [(0, rows.n_rows, prefix)]
            if refine:
                write_refine(store.dir / REFINE_FILE, parts, rows.n_rows, rows.dim)
            with atomic_file(out) as tmp:
                try:
                    faiss.write_index(index, str(tmp))
                except RuntimeError as e:
                    # FAISS reports a failed write (full disk, read-only folder) as a
                    # RuntimeError with the C library's message: give it back its errno.
                    raise OSError(_errno_in(str(e)), f"cannot write the index: {e}",
                                  str(out)) from None
            n_vectors = int(index.ntotal)
            del index
        else:
            trained_path = work / "trained.faiss"
            faiss.write_index(trained, str(trained_path))
            ranges = _part_ranges(store, rows.n_rows, part_rows)
            tasks = [(str(store.dir), encoding, str(trained_path), a, b,
                      str(work / f"part-{n:06d}"), n, block, refine)
                     for n, (a, b) in enumerate(ranges)]
            prefixes, counts = [], []
            for done in run_tasks(fill_part, tasks, jobs):
                prefixes.append(Path(done["prefix"]))
                counts.append(done["rows"])
            if refine:
                write_refine(store.dir / REFINE_FILE,
                             [(a, b, p) for (a, b), p in zip(ranges, prefixes)],
                             rows.n_rows, rows.dim)
            _merge_on_disk(trained_path, prefixes, counts, work, out)
            n_vectors = sum(counts)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    refine_path = store.dir / REFINE_FILE
    if not refine:
        refine_path.unlink(missing_ok=True)
    manifest = Manifest(store.dir)
    manifest.step_done("index", encoding=encoding, requested=requested, factory=factory,
                       params=params, kind=_kind(factory, requested), rows=n_vectors,
                       dim=rows.dim, bytes=out.stat().st_size,
                       # with a sparse refine stage the FAISS part is the small one (PQ codes
                       # and ids, 48 bytes per image): read, since FAISS scans mapped lists
                       # at half the speed (1.6 against 3.0-3.4 ms at 1.28M, nprobe 32);
                       # index.refine, 20 times larger, is mapped
                       io_flag="none" if refine else _io_flag(trained),
                       refine="sparse" if refine else None,
                       refine_bytes=refine_path.stat().st_size if refine else None,
                       source=_fingerprint(store, rows),
                       seconds=round(time.monotonic() - started, 3))
    return out


def _kind(factory, requested):
    if requested != AUTO:
        return "custom"
    return "exact" if factory == "Flat" else "compressed"


# ---------------------------------------------------------------------------- reading
def load_index(store: Store, mmap=True):
    """The store's index, memory-mapped where FAISS allows."""
    path = store.dir / INDEX_FILE
    if not path.exists():
        raise StoreError(f"{store.dir} has no search index; run `features index {store.dir}`")
    record = index_record(store.dir) or {}
    flags = [_IO_FLAGS[record["io_flag"]]] if record.get("io_flag") in _IO_FLAGS \
        else [faiss.IO_FLAG_MMAP_IFC, faiss.IO_FLAG_MMAP]
    if not mmap:
        flags = [0]
    error = index = None
    for flag in flags + [0]:
        try:
            index = faiss.read_index(str(path), flag)
            break
        except RuntimeError as e:
            error = e
    if index is None:
        raise StoreError(f"{path} is damaged (FAISS cannot read it: {_faiss_message(error)}); "
                         f"run `features index {store.dir}` to rebuild it")
    if record.get("refine") == "sparse":
        try:
            rows = RefineRows(store.dir / REFINE_FILE)
        except StoreError as e:
            raise StoreError(f"{e}; run `features index {store.dir}` to rebuild it") from None
        if rows.n_rows != store.n_images:
            raise StoreError(f"{rows.path} holds {rows.n_rows} rows for {store.n_images} "
                             f"images; run `features index {store.dir}` to rebuild it")
        index = RefinedIndex(index, rows, record.get("params", {}).get("k_factor", 100))
    return index


_HEADER = struct.Struct("<4sIqqq?I")  # fourcc, d, ntotal, 2 dummies, is_trained, metric


def index_header(path) -> dict:
    """Dimension, vector count and outer type of a FAISS index file, from its first bytes."""
    with open(path, "rb") as f:
        raw = f.read(_HEADER.size + 4)
    if len(raw) < _HEADER.size:
        raise StoreError(f"{path} is not a FAISS index (too short)")
    fourcc, d, ntotal, _, _, trained, metric = _HEADER.unpack_from(raw)
    if not fourcc.isalnum() or ntotal < 0:
        raise StoreError(f"{path} is not a FAISS index")
    info = {"type": fourcc.decode("ascii"), "dim": int(d), "ntotal": int(ntotal),
            "metric": {0: "inner product", 1: "L2"}.get(metric, str(metric))}
    if metric <= 1 and len(raw) >= _HEADER.size + 4:
        info["inner_type"] = raw[_HEADER.size:_HEADER.size + 4].decode("ascii", "replace")
    return info


def search_vectors(index, queries, k):
    """(scores, ids) of the k best rows per query; missing results have id -1."""
    q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
    k = max(1, min(int(k), index.ntotal)) if index.ntotal else 1
    return index.search(q, k)
