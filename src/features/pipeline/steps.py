"""The pipeline steps. Each is ``step(config, inputs, out) -> path`` and resumable:
a step whose output is recorded in the store's manifest is skipped, and the encode step
skips the shards already written.

    source --sample_descriptors--> sample.npy --train_codebook--> codebook.npy
           --encode_images--> shards/*.h5 + store.h5 --build_index--> index-GEN/index.faiss
"""
from __future__ import annotations

import csv
import functools
import inspect
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import index
from .._shared.hashing import file_sha256
from .._shared.threads import blas_threads, faiss_threads
from .._shared.versions import library_versions
from ..codebook import KMEANS_ALGORITHM, KMEANS_TOL, bottom_k, kmeans
from ..encodings.methods import METHODS
from ..exceptions import StoreError
from ..sources import open_source
from ..sources.base import items_digest
from ..sources.splits import split_of
from ..store import Manifest, Store, atomic_file, store_lock
from ..store.atomic import remove_stale_temporaries
from ..store.shards import relabel_shard
from ..store.layout import CODEBOOK_FILE, FAILURES_FILE, SAMPLE_FILE, SHARDS_DIR
from ..store.oserrors import storage_errors
from .aggregate import aggregate, restore_encodings
from .isolate import call_isolated
from .like import check_like_models, like_encodings
from .progress import Progress
from .runner import batched, limited, local_threads, n_workers, run_tasks
from .tasks import merge_task, process_shard, sample_batch
from .vocabulary import codebook_attrs, learn_tree, load_codebook, save_tree


def _opened(source):
    """A source given as a path (a folder, a list, an archive) opened as ``features run``
    opens it, its kind recognized by its layout; a source object as it is."""
    if isinstance(source, (str, os.PathLike)):
        return open_source(str(source))
    return source


def _total(source, limit):
    n = source.count()
    return min(n, limit) if (n is not None and limit) else (n if n is not None else limit)


def _save_npy(path, array):
    # Header, then the raw bytes through a Python file: a full disk is then an OSError with
    # its errno (numpy's tofile reports only "N requested and M written").
    array = np.ascontiguousarray(array)
    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        np.lib.format.write_array_header_1_0(f, np.lib.format.header_data_from_array_1_0(array))
        f.write(memoryview(array).cast("B"))


def _writer(step):
    """Run a step holding the store's writer lock, with storage errors as one line."""
    def wrap(func):
        signature = inspect.signature(func)

        @functools.wraps(func)
        def locked(*args, **kwargs):
            out = Path(signature.bind(*args, **kwargs).arguments["out"])
            with storage_errors(out):
                if out.exists() and not out.is_dir():
                    raise StoreError(f"{out}: cannot write the store: exists and is not a folder")
                with store_lock(out, step):
                    return func(*args, **kwargs)
        return locked
    return wrap


def _prepare(config, out) -> Manifest:
    out = Path(out)
    (out / SHARDS_DIR).mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out, out / SHARDS_DIR)
    manifest = Manifest(out)
    manifest.check_config(config)
    return manifest


@_writer("extract")
def sample_descriptors(config, source, out, *, jobs=1, limit=None, progress=True) -> Path:
    """Pass 1: descriptors of a seeded random subset of the images, for the codebook.

    ``config.images_to_sample`` images (those of smallest hash of seed and key: the same
    whatever the order or the worker count), at most ``config.sample_per_image`` seeded
    descriptors of each, then at most ``config.sample_size`` (words x points_per_word)
    of all those, chosen by a seeded draw over their concatenation in key order.

    On a source with splits (``split-tree``) only the ``train`` images are sampled: the
    codebook and every model learned from the sample never see an image that is scored.
    """
    source = _opened(source)
    manifest = _prepare(config, out)
    manifest.check_job(source, limit)
    path = Path(out) / SAMPLE_FILE
    if manifest.is_done("sample") and path.exists():
        return path
    splits = sample_splits(source)
    candidates = limited(source, limit)
    if splits == "train":
        candidates = (item for item in candidates if split_of(item.key) == "train")
    chosen = bottom_k(candidates, config.images_to_sample, config.seed)
    bar = Progress("sample", len(chosen), enabled=progress)
    parts = []
    batch = max(1, min(64, -(-len(chosen) // (n_workers(jobs) * 4))))
    for got, failed in run_tasks(sample_batch, ((config, b) for b in batched(chosen, batch)), jobs):
        parts.extend(got)
        bar.update(len(got) + len(failed), failed=len(failed))
    bar.close()
    # In key order, so that the draw below depends on neither the source order nor the
    # worker count.
    parts = [p for _, p in sorted(parts, key=lambda kp: kp[0])]
    sample = np.concatenate(parts) if parts else np.zeros((0, 128), np.uint8)
    if len(sample) > config.sample_size:
        rng = np.random.default_rng([config.seed, 2])
        sample = sample[np.sort(rng.choice(len(sample), config.sample_size, replace=False))]
    _save_npy(path, sample)
    manifest.step_done("sample", images=len(chosen), descriptors=int(len(sample)),
                       splits=splits)
    return path


def sample_splits(source) -> str:
    """Which images of ``source`` the codebook sample is drawn from: ``train`` (its train
    split) for a source with splits, ``all`` for the others."""
    return "train" if getattr(source, "kind", "") == "split-tree" else "all"


def _sample_splits_attr(manifest) -> dict:
    """The ``sample_splits`` attribute of ``codebook``: the images the codebook and the
    models saw: ``train``, ``all``, or ``none`` of this store's (``--like``: learned from
    another store's). Nothing for a sample taken before it was recorded."""
    steps = manifest.data["steps"]
    if (steps.get("codebook") or {}).get("like"):
        return {"sample_splits": "none"}
    splits = (steps.get("sample") or {}).get("splits")
    return {"sample_splits": splits} if splits else {}


@_writer("codebook")
def train_codebook(config, sample_path, out, *, jobs=1, progress=True) -> Path:
    """k-means on the sampled descriptors (``progress``: a line of iterations on stderr); a
    vocabulary tree of hierarchical k-means for a recipe with ``tree_branching`` (its
    progress: words learned). Its products run on the threads ``jobs`` gives (the words
    of each iteration are exact, so the codebook does not depend on them)."""
    manifest = _prepare(config, out)
    path = Path(out) / CODEBOOK_FILE
    if manifest.is_done("codebook") and path.exists():
        return path
    sample = np.load(sample_path, mmap_mode="r" if config.tree_branching else None)
    n_sample = int(len(sample))
    start = time.monotonic()
    tree = None
    if config.tree_branching:
        bar = Progress("codebook", config.words, unit="words", failures=False,
                       enabled=progress)
    else:
        bar = Progress("codebook", config.kmeans_iters, unit="iterations", enabled=progress)
    try:
        if config.tree_branching:
            tree = learn_tree(config, sample, progress=bar)
            centroids = tree.centroids
        else:
            with blas_threads(local_threads(jobs)):
                centroids = kmeans(sample, config.words, iters=config.kmeans_iters,
                                   seed=config.seed, progress=bar)
    except ValueError as e:
        raise StoreError(f"codebook: {e}") from None
    bar.close()
    if tree is not None:
        save_tree(tree, path)
    _save_npy(path, centroids)
    manifest.step_done("codebook", words=config.words, descriptors=n_sample,
                       seconds=round(time.monotonic() - start, 3))
    return path


@dataclass
class EncodeSummary:
    store: Path
    images: int
    failed: int
    seconds: float

    @property
    def failure_rate(self):
        return self.failed / self.images if self.images else 0.0


@_writer("encode")
def encode_images(config, source, codebook_path, out, *, jobs=1, limit=None,
                  progress=True, idf=None) -> EncodeSummary:
    """Pass 2: extract, quantize and count words shard by shard, then merge into store.h5
    (``idf``: the word weights to use, else the collection's own)."""
    source = _opened(source)
    manifest = _prepare(config, out)
    manifest.check_job(source, limit)
    out = Path(out)
    codebook = load_codebook(config, codebook_path)   # centroids, or a vocabulary tree
    centroids = codebook if isinstance(codebook, np.ndarray) else codebook.centroids
    bar = Progress("encode", _total(source, limit), enabled=progress)
    done = manifest.data["shards"]

    n_shards = 0

    def tasks():
        nonlocal n_shards
        for number, items in enumerate(batched(limited(source, limit), config.shard_size)):
            n_shards = number + 1
            name = f"shard-{number:06d}.h5"
            record = done.get(str(number))
            if _shard_is_current(record, items, out / SHARDS_DIR / name):
                bar.update(len(items), failed=record["failed"])
                continue
            if _only_labels_changed(record, items, out / SHARDS_DIR / name):
                record = dict(record, items=items_digest(items),
                              **relabel_shard(out / SHARDS_DIR / name, [i.label for i in items]))
                manifest.shard_done(number, record)
                bar.update(len(items), failed=record["failed"])
                continue
            yield (config, codebook, items, out / SHARDS_DIR / name, number * config.shard_size)

    for summary in run_tasks(process_shard, tasks(), jobs):
        manifest.shard_done(summary["first"] // config.shard_size, summary)
        bar.update(summary["count"], failed=summary["failed"])
    seconds = bar.close()
    remove_stale_temporaries(out, out / SHARDS_DIR, finished=True)

    if not n_shards:
        raise StoreError(f"{out}: no images were processed")
    # the source shrank since an earlier run: its shards past the end are not the store's
    for stale in manifest.drop_shards_from(n_shards):
        (out / SHARDS_DIR / stale).unlink(missing_ok=True)
    numbers = range(n_shards)
    shard_files = [manifest.data["shards"][str(n)]["file"] for n in numbers]
    sample_info = manifest.data["steps"].get("sample", {})
    options = dict(centroids=centroids,
                   codebook_attrs={"words": len(centroids), "dim": centroids.shape[1],
                                   "algorithm": KMEANS_ALGORITHM, "iters": config.kmeans_iters,
                                   "tol": KMEANS_TOL, "seed": config.seed,
                                   "sample_images": sample_info.get("images", 0),
                                   "sample_descriptors": sample_info.get("descriptors", 0),
                                   **_sample_splits_attr(manifest),
                                   **codebook_attrs(config, codebook)},
                   tree=None if codebook is centroids else codebook.arrays(),
                   classes=getattr(source, "classes", []), names=getattr(source, "names", []),
                   splits=getattr(source, "kind", "") == "split-tree",
                   shard_records=[manifest.data["shards"][str(n)] for n in numbers], idf=idf,
                   versions=library_versions(), threads=local_threads(jobs))
    store = call_isolated(merge_task, out, config, shard_files, options,
                          what="merging the shards into store.h5")
    # store.h5 was rebuilt: encodings added by `features aggregate` come back if their
    # shards are still those of the store.
    restore_encodings(out)
    with Store(store) as s:
        failures = s.failures()
        images = s.n_images
    _write_failure_report(out, failures)
    manifest.step_done("encode", images=images, failed=len(failures))
    return EncodeSummary(store, images, len(failures), seconds)


def _shard_is_current(record, items, path) -> bool:
    """A finished shard is reused only if it was built from exactly these items, each in
    the state it had then (``sources.items_digest``: keys, labels, sizes and modification
    times; a store written before the digest was recorded has its shards recomputed), and
    is intact (size and checksum as when written)."""
    if not (record is not None and record["count"] == len(items)
            and record.get("items") == items_digest(items) and "checksum" in record):
        return False
    return _intact(record, path)


def _only_labels_changed(record, items, path) -> bool:
    """The same images in the same state, other labels (a ground truth given or changed):
    the shard's labels are rewritten, its features kept. Shards recorded before the digest
    without labels (``content``) are recomputed instead."""
    return (record is not None and record["count"] == len(items) and "checksum" in record
            and record.get("content") == items_digest(items, labels=False)
            and _intact(record, path))


def _intact(record, path) -> bool:
    try:
        return (path.stat().st_size == record.get("size")
                and file_sha256(path) == record["checksum"])
    except OSError:
        return False


def _write_failure_report(out, failures):
    """``failures.tsv``: tab-separated, quoted by the csv module wherever a key or a reason
    holds a tab, a newline or a quote, so ``csv.reader(f, delimiter="\\t")`` reads it back."""
    with atomic_file(Path(out) / FAILURES_FILE) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f, delimiter="\t", lineterminator="\n")
            w.writerow(["index", "key", "reason"])
            w.writerows((i, key, reason) for i, key, reason in failures)


@_writer("index")
def build_index(out, encoding="bovw", factory=None, *, force=False,
                exact_below=index.EXACT_BELOW, jobs=1, search_params=None,
                hamming=None, progress=True) -> Path:
    """FAISS index over one of the store's encodings; kept as it is when it is current (built
    from the same rows with the same request), unless ``force``. ``jobs``: worker processes
    or a Dask cluster for the fill tasks (one per run of whole shards). ``search_params``
    (``{"nprobe": 16}`` or ``"nprobe=16"``): the defaults recorded for searches.
    ``hamming`` (32 or 64): an inverted file with Hamming embedding signatures of that
    many bits (``features.index.hamming``). ``progress``: a line of images added on stderr."""
    bar = Progress("index", unit="images", failures=False, enabled=progress)
    with Store(out) as store, faiss_threads(local_threads(jobs)):
        path = index.build(store, encoding, factory, force=force, exact_below=exact_below,
                           run_tasks=lambda func, tasks: run_tasks(func, tasks, jobs),
                           search_params=search_params, hamming=hamming, progress=bar)
    bar.close()
    return path


@_writer("codebook")
def reuse_codebook(like, out) -> tuple:
    """``features run --like STORE``: the recipe and the codebook of another store.

    Writes ``out/codebook.npy`` (the other store's centroids) and records where it came
    from, so the images of ``out`` are encoded exactly as those of ``like`` and never learn
    a codebook of their own.  Returns (config, codebook path).
    """
    with Store(like) as other:
        config, centroids = other.config, other.centroids
        checksum = str(other.h5["codebook/centroids"].attrs.get("checksum", ""))
        tree = other.codebook_tree if config.tree_branching else None
    manifest = _prepare(config, out)
    path = Path(out) / CODEBOOK_FILE
    if manifest.is_done("codebook") and path.exists():
        if not np.array_equal(np.load(path), centroids):
            raise StoreError(f"{out} already holds another codebook than {like}; "
                             f"use a new output directory")
        return config, path
    if tree is not None:
        save_tree(tree, path)   # queries and shards descend the same tree
    _save_npy(path, centroids)
    manifest.step_done("codebook", words=len(centroids), like=str(Path(like).resolve()),
                       checksum=checksum)
    return config, path


@_writer("run")
def run(config, source, out, *, jobs=1, limit=None, progress=True,
        encodings=(), like=None) -> EncodeSummary:
    """All steps, on ``source`` (a path, opened as ``features run`` opens it, or a source
    of ``features.sources``), into the store ``out``: sample, codebook, encode (+ merge), the ``encodings`` (methods of
    ``features.pipeline.aggregate``, with their default options, each named after its
    method), index.
    ``bovw`` is the encode step's own; a store kept without descriptors extracts them again
    from the source for ``vlad`` and ``fisher``.

    With ``like`` (another store) there is no sampling and no k-means: the recipe and the
    codebook are those of ``like`` (``config`` is ignored), and the ``encodings`` use its
    models and options (``features.pipeline.like``); no ``encodings`` means every encoding
    of ``like``.
    """
    source = _opened(source)
    # with --like, the names of the other store's encodings too (`f4`: its fisher of 4
    # components), reproduced with their options and models
    named = like_encodings(like) if like is not None else {}
    if like is not None and not encodings:
        # a store made like another is scored against it: it needs each of its encodings
        encodings = list(named)
    unknown = [m for m in encodings if m not in METHODS and m not in named]
    if unknown:
        raise StoreError(f"unknown encoding(s) {', '.join(unknown)}; choose from "
                         f"{', '.join(list(METHODS) + [n for n in named if n not in METHODS])}")
    idf = None
    if like is not None:
        check_like_models(like, encodings)   # its models are reused, never learned here
        config, codebook = reuse_codebook(like, out)
        with Store(like) as other:
            # the word weights too: a val set must not shape the features it is scored on
            idf = other.idf
    else:
        sample = sample_descriptors(config, source, out, jobs=jobs, limit=limit,
                                    progress=progress)
        codebook = train_codebook(config, sample, out, jobs=jobs, progress=progress)
    summary = encode_images(config, source, codebook, out, jobs=jobs, limit=limit,
                            progress=progress, idf=idf)
    for name in dict.fromkeys(encodings):
        method = name if name in METHODS else named[name]
        if name in ("bovw", "bovw_counts"):
            continue
        needs_source = METHODS[method].reads == "descriptors" and not config.store_descriptors
        aggregate(config, out, method, name, None, jobs, exist_ok=True,
                  source=source if needs_source else None, limit=limit, progress=progress)
    build_index(out, jobs=jobs, progress=progress)
    return summary
