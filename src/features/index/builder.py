"""FAISS inner-product index over a stored encoding (cosine similarity for L2-normalized rows).

Which index: exact (``Flat``) for fewer than ``EXACT_BELOW`` indexable images of 1000
dimensions (as many values in all for other dimensions), where an exhaustive scan still
answers a query in a few milliseconds; above it, an inverted file
with product-quantized codes whose shortlist of 100 k is re-scored: tf-idf scores near
rank 10 lie within 0.001 of each other, which PQ codes alone cannot order. For an
encoding stored as sparse rows (``bovw``: about a quarter of the words per image) the
re-scoring is ``Refine(Sparse)`` (``features.index.refine``): on the rows themselves, kept as
(column, half-precision value) pairs in ``index.refine``, about 1 KB per image and the
rows' own scores to half precision. For dense encodings it is FAISS's ``Refine(SQfp16)``,
half-precision vectors (2 bytes per dimension). 8-bit refine codes are not precise enough:
at 1.28M rows their recall@10 against exact search stays at 0.93 however long the
shortlist (``benchmarks/results/search.md``). Any FAISS factory string can be given
instead (``features index STORE --index STRING``), with ``,Refine(Sparse)`` after it for
a sparse encoding.

How it is built, the same way on one machine and on a cluster (``train_index``,
``fill_part``, ``ondisk.merge_on_disk``): an empty index is trained on a seeded sample of the
rows and written to a file; each task (whole shards of the store, ``--jobs`` worker
processes or Dask workers) reads its rows straight from ``store.h5`` (for an encoding added
by ``aggregate``: from its shard files) a block at a time and adds them to its own copy of
the trained index, writing the part's inverted lists and flat codes to files; the driver
merges the parts' inverted lists on disk (FAISS's ``OnDiskInvertedLists``, over the parts
memory-mapped) and streams the merged lists, the flat codes (refine stage, or the whole
index when it is flat) and the ids into one FAISS file: byte for byte the file FAISS writes
for the same index filled in memory. A sparse refine stage's rows are written by the same
tasks, part by part, and concatenated into ``index.refine``. Both files are written into a
new generation's folder (``features.index.layout``), and the manifest's record, rewritten
atomically with their sizes and checksums, switches to it; the previous generation is
removed after. No file a reader may have open or mapped is ever written again.
Memory: one block of rows per task (8,192, fewer for rows wider than 1,024 values: about
32 MB of float32), added to FAISS in batches whose scratch is bounded
(``ADD_SCRATCH_BYTES``), the training sample and one inverted list; never the index.
Indexes that do not split into inverted lists and flat codes (HNSW, fast-scan PQ, PQ
without IVF, pre-transforms) are filled in memory instead.

Ids of the index are image numbers of the store. Images whose status is not ok, or whose
encoding row is empty (no features), are left out. The index is opened memory-mapped: the
flat codes (exact vectors, refine codes) with ``IO_FLAG_MMAP_IFC``, or the inverted lists
with ``IO_FLAG_MMAP`` for an IVF without a FAISS refine stage (FAISS maps one or the
other), and ``index.refine`` too, so a process touches only the pages its queries read.

The manifest records what the index was built from (encoding, factory, a fingerprint of
the rows) so ``features run`` does not rebuild an index that is current, and the search
parameters searches start from (``features.index.params``): the factory's defaults and those
given to the build, which a kept index takes without a rebuild.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import faiss
import numpy as np

from ..exceptions import ParameterError, StoreError
from ..store import OK, Manifest, Store
from ..store.atomic import atomic_file, atomic_path, remove_stale_temporaries
from ..store.encodings import EncodingRows
from .factory import (AUTO, EXACT_BELOW, SPARSE_REFINE, auto_factory, default_params,
                      faiss_message, io_flag, make_index, set_params, split_factory, train_size,
                      walk)
from .files import OpenIndexFiles, describe_files
from .hamming import check_bits, write_hamming
from .layout import (HAMMING_FILE, INDEX_FILE, INVERTED_FILE, REFINE_FILE, index_paths,
                     index_record, is_generation, new_generation)
from .load import load_index
from .ondisk import PART_SHIFT, errno_in, merge_on_disk, split_index
from .params import apply_params, parse_params
from .inverted import INVERTED, INVERTED_KIND, INVERTED_WORDS, write_inverted
from .refine import MAX_DIM, SparsePart, write_refine

# Rows go to FAISS in batches whose scratch is at most this many bytes, whatever the block
# of rows read from the store: FAISS's product quantizer encodes a batch through a table of
# each row's distances to every centroid of every sub-quantizer (rows x M x 256 floats, for
# sub-quantizers of 16 or more dimensions), beside the IVF's residuals (rows x dim floats):
# 335 MB for a block of 8,192 rows of 1000 words in IVF256,PQ40, the peak of each fill
# worker, and 1,119 rows within this budget. A row's code and list do not depend on the
# rows added with it, so the index is the same whatever the batch.
ADD_SCRATCH_BYTES = 48 << 20


def indexable(store: Store, rows: EncodingRows, start, stop, status=None) -> np.ndarray:
    """Image numbers in ``start:stop`` that go into the index: status ok, features present."""
    status = store.h5["images/status"][start:stop] if status is None else status[start:stop]
    keep = (status == OK) & rows.nonempty(start, stop)
    return np.flatnonzero(keep) + start


def train_index(store: Store, rows: EncodingRows, factory: str, *, seed=0, eligible=None,
                params=None):
    """An empty index trained on a seeded sample of the indexable rows."""
    index = make_index(factory, rows.dim)
    set_params(index, params or {})
    for sub in walk(index):
        # Polysemous training orders PQ centroids for Hamming-distance filtering, which
        # these searches never use (ADC distances do not depend on the order); it is
        # simulated annealing that costs a minute even for a 768-point training set.
        if isinstance(sub, (faiss.IndexPQ, faiss.IndexIVFPQ)):
            sub.do_polysemous_training = False
    if index.is_trained:
        return index
    if eligible is None:
        eligible = indexable(store, rows, 0, rows.n_rows)
    n = train_size(factory, len(eligible))
    if n == 0:
        raise StoreError("no indexable images (status ok, with features) to train the index on")
    sample = _training_sample(rows, eligible, n, seed)
    try:
        index.train(sample)
    except RuntimeError as e:
        raise StoreError(f"cannot train the index {factory!r} on {len(sample)} vectors: "
                         f"{faiss_message(e)}") from None
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


def fill_part(store_dir, encoding, trained_path, start, stop, prefix, number, block=8192,
              refine=False, parallel=False) -> dict:
    """One task of an index build: the indexable rows ``start:stop`` of the store (whole
    shards) added to a copy of the trained index read from ``trained_path``. Writes
    ``PREFIX.ivf`` (the IVF with this part's inverted lists; an id is the part's ``number``
    times 2**40 plus the position in the part, made global when the lists are merged),
    ``PREFIX.codes`` (the part's flat codes, row after row) and ``PREFIX.ids.npy`` (image
    numbers, in the same order). With ``refine``, also the part's rows for a sparse refine
    stage (``features.index.refine.SparsePart``). Memory: one block of rows, FAISS's scratch
    for one batch of them (``ADD_SCRATCH_BYTES``) and the part's IVF codes.

    It opens the store itself, so it runs the same in a joblib worker or on a Dask worker
    that shares the store's filesystem."""
    if parallel:
        faiss.omp_set_num_threads(1)
    trained = faiss.read_index(str(trained_path))
    ivf, flat = split_index(trained)
    prefix = Path(prefix)
    with Store(store_dir) as store:
        rows = EncodingRows(store.h5, encoding)
        block = _dense_block(rows, block)
        add = _add_batch(ivf, block) if ivf is not None else block
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
                        part_ids = (int(number) << PART_SHIFT) + np.arange(
                            at, at + len(x), dtype=np.int64)
                        for c in range(0, len(x), add):
                            ivf.add_with_ids(x[c:c + add], part_ids[c:c + add])
                    at += len(x)
                    if flat is not None:
                        codes.write(flat.sa_encode(x).tobytes())
                    if sparse is not None:
                        sparse.add(ids, x)
                    kept.append(ids)
            ids = np.concatenate(kept).astype(np.int64) if kept else np.zeros(0, np.int64)
            if ivf is not None:
                _write_small_index(ivf, prefix.with_suffix(".ivf"))
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


def _dense_block(rows: EncodingRows, block) -> int:
    """Rows read at a time for FAISS, which takes them dense: at most ``block``, and at most
    :attr:`EncodingRows.block_rows` (about ``BLOCK_BYTES`` of float32), so that a wide
    encoding (a Fisher vector of 32,768 values, 128 KB a row) is read 256 rows at a time,
    not 8,192 (1 GiB)."""
    return max(1, min(int(block), rows.block_rows))


def _add_batch(index, block) -> int:
    """Rows added to ``index`` at a time: as many as ``ADD_SCRATCH_BYTES`` of FAISS's scratch
    holds, at most ``block``. A graph (HNSW, NSG) takes whole blocks: the batches it is
    given shape it (a batch's rows are linked highest level first)."""
    subs = list(walk(index))
    if any(isinstance(sub, (faiss.IndexHNSW, faiss.IndexNSG)) for sub in subs):
        return block
    per_row = 4 * index.d
    for sub in subs:
        pq = getattr(sub, "pq", None)
        if isinstance(pq, faiss.ProductQuantizer):
            per_row += 4 * pq.M * pq.ksub
    return max(1, min(block, ADD_SCRATCH_BYTES // per_row))


def _part_ranges(store: Store, n_rows, part_rows):
    """Row ranges of whole shards (the encode step's, ``config.shard_size`` images each),
    at least ``part_rows`` rows each: one task reads its shards' rows and nothing else."""
    shard = max(1, int(getattr(store.config, "shard_size", 0) or 1000))
    step = shard * max(1, -(-part_rows // shard))
    return [(a, min(a + step, n_rows)) for a in range(0, n_rows, step)]


def _fill_in_memory(index, store, rows, start, stop, block, status, sparse=None,
                    progress=None):
    """Indexes that do not split into inverted lists and flat codes (HNSW, fast-scan, PQ
    refined IVF, pre-transformed ...) are filled in memory, a block of rows at a time (and
    a sparse refine stage's rows written from the same blocks), added in batches of
    ``_add_batch`` rows; ``progress(added)`` after each block."""
    block = _dense_block(rows, block)
    add = _add_batch(index, block)
    for a in range(start, stop, block):
        b = min(a + block, stop)
        ids = indexable(store, rows, a, b, status)
        if len(ids):
            x = rows.block(a, b)[ids - a]
            ids = ids.astype(np.int64)
            for c in range(0, len(x), add):
                index.add_with_ids(x[c:c + add], ids[c:c + add])
            if sparse is not None:
                sparse.add(ids, x)
            if progress is not None:
                progress(int(index.ntotal))


def _fingerprint(store: Store, rows: EncodingRows) -> str:
    status = store.h5["images/status"][:]
    manifest = Manifest(store.dir).data.get("shards", {})
    shards = sorted((k, v.get("count"), v.get("first_key"), v.get("last_key"))
                    for k, v in manifest.items())
    h = hashlib.sha256(json.dumps({"rows": rows.fingerprint(), "shards": shards},
                                  sort_keys=True, default=str).encode())
    h.update(status.tobytes())
    return h.hexdigest()


def is_current(store: Store, encoding="bovw", factory=AUTO, hamming=None) -> bool:
    """Whether the index was built from these rows with this request (and Hamming
    embedding of ``hamming`` bits, None: without), and its files are those recorded
    (sizes, and checksums where ``load_index`` checks them)."""
    record = index_record(store.dir)
    if not record or record.get("encoding") != encoding or record.get("requested") != factory:
        return False
    if record.get("hamming") != hamming:
        return False
    try:
        OpenIndexFiles(store.dir, record).close()
    except StoreError:       # damaged or missing (IndexDamaged), or a bad generation name
        return False
    try:
        rows = EncodingRows(store.h5, encoding)
    except StoreError:
        return False
    return record.get("source") == _fingerprint(store, rows)


def build(store: Store, encoding="bovw", factory=None, *, exact_below=EXACT_BELOW,
          block=8192, part_rows=20_000, seed=0, force=False, run_tasks=None,
          search_params=None, hamming=None, progress=None) -> Path:
    """Build (or keep, when current) the store's index; returns its path.

    ``factory``: None or "auto" to choose by size, or any FAISS index factory string,
    optionally followed by ``,Refine(Sparse)`` (``features.index.refine``; sparse encodings).
    ``search_params`` (a dict, or ``"nprobe=8,k_factor=4"``): the search parameters
    recorded as the index's defaults, over those chosen with it (``default_params``); for
    an index that is kept, they replace the recorded ones without a rebuild.
    ``run_tasks(func, tasks)`` runs the fill tasks (one per run of whole shards, at least
    ``part_rows`` rows), yielding ``func(*task)`` in task order: the pipeline's runner
    (worker processes, a Dask cluster); by default they run here, one after another.
    ``hamming`` (32 or 64): an inverted file with Hamming embedding signatures of that
    many bits per descriptor (``features.index.hamming``), from the store's descriptors.
    ``progress(done, total)`` is called as the rows go in: images added so far, and of
    how many.
    """
    if run_tasks is None:
        run_tasks = _run_here
    requested = factory or AUTO
    given = parse_params(search_params or {})
    if hamming is not None:
        hamming = check_bits(hamming)
    if not force and is_current(store, encoding, requested, hamming):
        if given:
            _record_params(store, given)
        paths = index_paths(store.dir, index_record(store.dir))
        return paths.get(INDEX_FILE) or paths[INVERTED_FILE]
    started = time.monotonic()
    plan = _plan(store, encoding, requested, exact_below, block)
    if hamming is not None and plan.factory != INVERTED:
        raise ParameterError(f"hamming {hamming} weighs the word matches of an inverted "
                             f"file, and this index is {plan.factory} (give --index "
                             f"{INVERTED})", "hamming")
    if plan.factory == INVERTED:
        return _build_inverted(plan, given, started, progress or _no_progress, hamming, seed)
    trained = train_index(store, plan.rows, plan.base_factory, seed=seed,
                          eligible=plan.eligible, params=plan.params)
    if given:
        # checked on the trained index, before the rows are added: a parameter it does
        # not take fails in seconds, not after the build
        apply_params(_with_sparse_stage(trained, plan.refine), given, plan.factory)
        plan.params = {**plan.params, **given}
    n_vectors = _fill(plan, trained, part_rows, run_tasks, progress or _no_progress)
    try:
        _record(plan, trained, n_vectors, started)     # the switch to the new generation
    except BaseException:
        shutil.rmtree(plan.folder, ignore_errors=True)
        raise
    _remove_unused(store.dir, plan.generation)
    return plan.out


class _Plan:
    """What one build reads and makes, passed from step to step: the encoding's rows, the
    images' status and the indexable image numbers, the index chosen for them, and the
    block of rows read at a time; the generation its files are written to."""

    def __init__(self, store, encoding, rows, status, eligible, requested, factory, params,
                 block):
        self.store, self.encoding, self.rows, self.status = store, encoding, rows, status
        self.eligible = eligible
        self.requested = requested          # "auto" or the factory string given
        self.factory, self.params = factory, params
        self.base_factory, self.refine = split_factory(factory)
        self.block = block
        self.generation = new_generation()
        self.folder = store.dir / self.generation
        self.out = self.folder / INDEX_FILE
        self.refine_path = self.folder / REFINE_FILE


def _plan(store, encoding, requested, exact_below, block) -> _Plan:
    """Read the rows' status, list the indexable images and choose the index."""
    rows = EncodingRows(store.h5, encoding)
    status = store.h5["images/status"][:]
    if len(status) != rows.n_rows:
        raise StoreError(f"encoding {encoding!r} has {rows.n_rows} rows for "
                         f"{len(status)} images")
    eligible = np.concatenate([indexable(store, rows, a, min(a + (1 << 17), rows.n_rows), status)
                               for a in range(0, rows.n_rows, 1 << 17)] or [np.zeros(0, int)])
    words = (int(store.h5["codebook/centroids"].shape[0]) if "codebook/centroids" in store.h5
             else 0)
    factory, params = _choose_factory(rows, encoding, requested, len(eligible), exact_below,
                                      words)
    return _Plan(store, encoding, rows, status, eligible, requested, factory, params, block)


def _choose_factory(rows, encoding, requested, n_eligible, exact_below, words=0):
    """The factory string and its search parameters: chosen by size for "auto" (an
    inverted file for a sparse encoding over a vocabulary of more than
    ``INVERTED_WORDS`` words, ``words``), else the one requested; a sparse refine stage
    and an inverted file are checked against the encoding."""
    if requested == INVERTED or (requested == AUTO and rows.sparse
                                 and words > INVERTED_WORDS and rows.dim >= words):
        if not rows.sparse:
            raise StoreError(f"an inverted file indexes sparse rows, and encoding "
                             f"{encoding!r} is stored dense")
        return INVERTED, {}
    if requested == AUTO:
        density = (int(rows.indptr[-1]) / max(1, n_eligible * rows.dim) if rows.sparse
                   else 1.0)
        factory, params = auto_factory(n_eligible, rows.dim, exact_below, density)
    else:
        factory, params = requested, default_params(requested)
    if split_factory(factory)[1]:
        if not rows.sparse:
            raise StoreError(f"{SPARSE_REFINE} re-scores sparse rows, and encoding "
                             f"{encoding!r} is stored dense: refine it with FAISS's "
                             f"Refine(SQfp16) instead")
        if rows.dim > MAX_DIM:
            raise StoreError(f"{SPARSE_REFINE} takes encodings of at most {MAX_DIM} "
                             f"dimensions; {encoding!r} has {rows.dim}")
        # the refine stage is cheap (a gather per stored value): a long shortlist
        params = {"k_factor": 100, **params}
    return factory, params


def _no_progress(done, total):
    pass


def _build_inverted(plan, given, started, progress, hamming=None, seed=0) -> Path:
    """An inverted file (``features.index.inverted``) over the indexable rows, and with
    ``hamming`` its descriptors' signatures (``features.index.hamming``), written into the
    plan's new generation and switched to as a FAISS index is."""
    if given:
        raise ParameterError(f"an inverted file takes no search parameters, got "
                             f"{', '.join(given)}", next(iter(given)))
    store, rows = plan.store, plan.rows
    if hamming is not None:
        _check_descriptors(store)
    remove_stale_temporaries(store.dir)
    _remove_unused(store.dir, (index_record(store.dir) or {}).get("generation"))
    plan.folder.mkdir()
    path = plan.folder / INVERTED_FILE
    progress(0, len(plan.eligible))

    def blocks():
        for a in range(0, rows.n_rows, plan.block):
            b = min(a + plan.block, rows.n_rows)
            ids = indexable(store, rows, a, b, plan.status)
            yield ids, rows.matrix(a, b)[ids - a]

    try:
        with atomic_file(path) as tmp:
            n_vectors = write_inverted(tmp, blocks, rows.n_rows, rows.dim,
                                       lambda done: progress(done, len(plan.eligible)))
        paths = {INVERTED_FILE: path}
        if hamming is not None:
            paths[HAMMING_FILE] = plan.folder / HAMMING_FILE
            _write_hamming(plan, paths[HAMMING_FILE], hamming, seed, progress)
        Manifest(store.dir).step_done(
            "index", encoding=plan.encoding, requested=plan.requested, factory=INVERTED,
            params={}, kind=INVERTED_KIND, rows=n_vectors, dim=rows.dim,
            bytes=path.stat().st_size, io_flag="none", refine=None, refine_bytes=None,
            source=_fingerprint(store, rows), generation=plan.generation,
            hamming=hamming, files=describe_files(paths),
            seconds=round(time.monotonic() - started, 3))
    except BaseException:
        shutil.rmtree(plan.folder, ignore_errors=True)
        raise
    _remove_unused(store.dir, plan.generation)
    return path


def _check_descriptors(store):
    if "descriptors" not in store.h5 or "words" not in store.h5:
        raise StoreError(f"{store.dir} keeps no SIFT descriptors, which Hamming embedding "
                         f"signs: extract it again with the sift preset and without "
                         f"--no-descriptors")


def _write_hamming(plan, path, bits, seed, progress, max_descriptors=None):
    """The Hamming embedding of the indexed images' descriptors, read from ``store.h5`` in
    blocks of at most ``max_descriptors`` (one image more when a single image has more)."""
    from .hamming import BLOCK_DESCRIPTORS
    store, rows = plan.store, plan.rows
    limit = max_descriptors or BLOCK_DESCRIPTORS
    offsets = store.h5["offsets"][:].astype(np.int64)
    keep = np.zeros(rows.n_rows, bool)
    keep[plan.eligible] = True
    idf = (store.idf.astype(np.float32) if store.config.tfidf and "encodings/idf" in store.h5
           else np.ones(rows.dim, np.float32))

    def blocks():
        a = 0
        while a < rows.n_rows:
            b = int(np.searchsorted(offsets, offsets[a] + limit, side="right")) - 1
            b = min(rows.n_rows, max(b, a + 1))
            ids = np.flatnonzero(keep[a:b]) + a
            if len(ids):
                lo, hi = int(offsets[a]), int(offsets[b])
                take = np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in ids]) - lo
                per = offsets[ids + 1] - offsets[ids]
                yield (ids, per, store.h5["words"][lo:hi][take],
                       store.h5["descriptors"][lo:hi][take])
            a = b

    total = int(offsets[plan.eligible + 1].sum() - offsets[plan.eligible].sum())
    progress(0, len(plan.eligible))
    with atomic_file(path) as tmp:
        write_hamming(tmp, blocks, rows.n_rows, rows.dim, bits, idf, total=total, seed=seed,
                      progress=lambda done: progress(done, len(plan.eligible)))


def _fill(plan, trained, part_rows, run_tasks, progress) -> int:
    """Fill a copy of the trained index with the indexable rows and write ``index.faiss``
    (and a sparse refine stage's ``index.refine``) into the plan's new generation folder,
    through a work folder removed after (the generation's too, on failure); returns the
    number of vectors."""
    # a build killed before its ``finally`` left its work folder, or before its switch a
    # generation folder: removed here (this step holds the store's lock, so the only
    # writers of such folders are dead ones)
    remove_stale_temporaries(plan.store.dir)
    for old in plan.store.dir.glob(".index-parts-*"):     # as versions before 0.2 named them
        shutil.rmtree(old, ignore_errors=True)
    _remove_unused(plan.store.dir, (index_record(plan.store.dir) or {}).get("generation"))
    work = atomic_path(plan.store.dir / "index-parts")
    shutil.rmtree(work, ignore_errors=True)      # this process's own, from an earlier build
    work.mkdir()
    plan.folder.mkdir()
    progress(0, len(plan.eligible))
    try:
        if split_index(trained) is None:
            n_vectors = _fill_whole(plan, trained, work, progress)
        else:
            n_vectors = _fill_by_parts(plan, trained, work, part_rows, run_tasks, progress)
    except BaseException:
        shutil.rmtree(plan.folder, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return n_vectors


def _remove_unused(directory, keep):
    """Remove the index files of other generations than ``keep`` (the recorded one): a
    previous build's folder, or one a killed build left, and, once the record names a
    generation, the files of the store's index made before generations."""
    directory = Path(directory)
    for folder in directory.glob("index-*"):
        if folder.name != keep and is_generation(folder.name) and folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)
    if keep is not None:
        for name in (INDEX_FILE, REFINE_FILE):
            (directory / name).unlink(missing_ok=True)


def _fill_whole(plan, trained, work, progress) -> int:
    """An index that does not split into inverted lists and flat codes: filled in memory
    and written in one piece."""
    rows = plan.rows
    index = faiss.clone_index(trained)
    prefix = work / "part-000000"
    sparse = SparsePart(prefix, 0, rows.n_rows) if plan.refine else None
    try:
        _fill_in_memory(index, plan.store, rows, 0, rows.n_rows, plan.block, plan.status,
                        sparse, lambda added: progress(added, len(plan.eligible)))
    finally:
        if sparse is not None:
            sparse.close()
    if plan.refine:
        write_refine(plan.refine_path, [(0, rows.n_rows, prefix)], rows.n_rows, rows.dim)
    _write_index(index, plan.out)
    return int(index.ntotal)


def _write_index(index, out):
    """``index.faiss`` written (a temporary file, then renamed: the name is never a file
    half written)."""
    with atomic_file(out) as tmp:
        try:
            faiss.write_index(index, str(tmp))
        except RuntimeError as e:
            # FAISS reports a failed write (full disk, read-only folder) as a
            # RuntimeError with the C library's message: give it back its errno.
            raise OSError(errno_in(str(e)), f"cannot write the index: {e}",
                          str(out)) from None


def _write_small_index(index, path):
    """A trained index or one part's lists, serialized in memory and written atomically by
    Python: a full disk is an ``OSError`` (FAISS's own writer only prints a failed close)."""
    data = faiss.serialize_index(index)
    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        f.write(memoryview(data))


def _fill_by_parts(plan, trained, work, part_rows, run_tasks, progress) -> int:
    """An index of inverted lists and flat codes: each task of whole shards fills its part
    (``fill_part``), and the parts are merged on disk into ``index.faiss``."""
    store, rows = plan.store, plan.rows
    trained_path = work / "trained.faiss"
    _write_small_index(trained, trained_path)
    ranges = _part_ranges(store, rows.n_rows, part_rows)
    tasks = [(str(store.dir), plan.encoding, str(trained_path), a, b,
              str(work / f"part-{n:06d}"), n, plan.block, plan.refine)
             for n, (a, b) in enumerate(ranges)]
    prefixes, counts = [], []
    for done in run_tasks(fill_part, tasks):
        prefixes.append(Path(done["prefix"]))
        counts.append(done["rows"])
        progress(sum(counts), len(plan.eligible))
    if plan.refine:
        write_refine(plan.refine_path,
                     [(a, b, p) for (a, b), p in zip(ranges, prefixes)],
                     rows.n_rows, rows.dim)
    merge_on_disk(trained_path, prefixes, counts, work, plan.out)
    return sum(counts)


def _record(plan, trained, n_vectors, started):
    """The manifest's record of the build: what it was built from, which ``is_current``
    compares with the next request, and its generation with the files' sizes and
    checksums. Its atomic rewrite is the switch to the new generation."""
    refine, refine_path = plan.refine, plan.refine_path
    paths = {INDEX_FILE: plan.out, **({REFINE_FILE: refine_path} if refine else {})}
    manifest = Manifest(plan.store.dir)
    manifest.step_done("index", encoding=plan.encoding, requested=plan.requested,
                       factory=plan.factory, params=plan.params,
                       kind=_kind(plan.factory, plan.requested), rows=n_vectors,
                       dim=plan.rows.dim, bytes=plan.out.stat().st_size,
                       # with a sparse refine stage the FAISS part is the small one (PQ codes
                       # and ids, 48 bytes per image): read, since FAISS scans mapped lists
                       # at half the speed (1.6 against 3.0-3.4 ms at 1.28M, nprobe 32);
                       # index.refine, 20 times larger, is mapped
                       io_flag="none" if refine else io_flag(trained),
                       refine="sparse" if refine else None,
                       refine_bytes=refine_path.stat().st_size if refine else None,
                       source=_fingerprint(plan.store, plan.rows),
                       generation=plan.generation, files=describe_files(paths),
                       seconds=round(time.monotonic() - started, 3))


class _SparseStage:
    """Stands for a sparse refine stage (its ``k_factor``) when parameters are checked on
    the trained index, before the stage exists."""

    def __init__(self, base):
        self.base, self.k_factor = base, 100.0


def _with_sparse_stage(index, refine):
    return _SparseStage(index) if refine else index


def _record_params(store, given):
    """New default search parameters for the current index: checked on it, recorded."""
    record = index_record(store.dir)
    index = load_index(store)
    apply_params(index, given, record.get("factory"))
    Manifest(store.dir).step_done("index", **{**record,
                                              "params": {**record.get("params", {}), **given}})


def _run_here(func, tasks):
    for task in tasks:
        yield func(*task)


def _kind(factory, requested):
    if requested != AUTO:
        return "custom"
    return "exact" if factory == "Flat" else "compressed"
