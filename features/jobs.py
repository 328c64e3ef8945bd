"""Work done per image and per shard, and running it on local worker processes.

Workers get plain data (items, the configuration, the centroids) and return plain data;
shards are written by the worker that computed them, atomically. Tasks that decode images
run in child processes also for ``--jobs 1`` (see ``isolate``): a native crash on an image
is a failed item, not the end of the job. Other tasks (aggregation) run on joblib's worker
processes: joblib cannot tell which item of a task killed its worker, which is the only
reason decoding has a pool of its own.
"""
from __future__ import annotations

import heapq
import itertools

from .assign import Assigner
from .codebook import sample_priority, subsample_rows
from .decode import DecodeError, decode_gray
from .encode import word_counts
from .sift import extract_image
from .isolate import WorkerDied, inject_fault, run_isolated
from .store import (EXTRACT_FAILED, NO_FEATURES, OK, REFUSED, UNDECODABLE, UNREADABLE,
                    ImageResult, merge, write_shard)
from .verify import keeps_geometry, pack_geometry


def single_threaded_libraries():
    # N worker processes on N cores: library thread pools inside each would oversubscribe.
    # The BLAS's too: forked workers do not get the OPENBLAS_NUM_THREADS=1 that joblib's and
    # Dask's workers are started with, and with a BLAS thread per core in each worker (the
    # assignment's products) pass 2 on 2 cores ran 6x slower.
    import cv2
    import faiss
    from threadpoolctl import threadpool_limits
    cv2.setNumThreads(1)
    faiss.omp_set_num_threads(1)
    threadpool_limits(1)


def features_of(config, item, fault=None):
    """Decode and extract one item. Returns (ImageResult without words, descriptors)."""
    result = ImageResult(key=item.key, label=item.label)
    inject_fault(item.key, fault)
    if item.error:
        result.status, result.reason = REFUSED, item.error
        return result, None
    try:
        data = item.read()
    except OSError as e:
        result.status, result.reason = UNREADABLE, f"cannot read: {e.strerror or e}"
        return result, None
    try:
        decoded = decode_gray(data, config.max_side)
    except DecodeError as e:
        result.status, result.reason = UNDECODABLE, str(e)
        return result, None
    result.width, result.height = decoded.width, decoded.height
    try:
        result.frames, descriptors, result.scale = extract_image(config, decoded)
    except (ValueError, MemoryError) as e:
        result.status, result.reason = EXTRACT_FAILED, f"{type(e).__name__}: {e}"
        return result, None
    if not len(descriptors):
        result.status = NO_FEATURES
        size = f"{decoded.width}x{decoded.height}"
        if min(decoded.gray.shape) < 16:
            result.reason = f"no features: {size} is too small for the {config.preset} recipe"
        elif _is_blank(decoded.gray):
            result.reason = "no features: blank image"
        else:
            result.reason = f"no features: the {config.preset} recipe finds none in this image"
        return result, None
    return result, descriptors


def _is_blank(gray):
    return gray.size == 0 or int(gray.min()) == int(gray.max())


def _crashed(item, reason):
    return ImageResult(key=item.key, label=item.label, status=UNDECODABLE, reason=reason)


def process_shard(config, centroids, items, shard_path, first, parallel=False, *, skip=None,
                  on_item=None, fault=None) -> dict:
    """Pass 2 for one shard: extract, quantize, count words, write the shard file.

    ``skip`` maps item positions to the reason they are left out (they crashed a worker
    before); ``on_item(i)`` is called before item ``i`` (see ``isolate.run_isolated``);
    ``parallel``: this is one of several worker processes (a cluster's)."""
    if parallel:
        single_threaded_libraries()
    skip = skip or {}
    quantizer = Assigner(centroids)
    geometry = keeps_geometry(config)
    results = []
    for i, item in enumerate(items):
        if on_item is not None:
            on_item(i)
        if i in skip:
            results.append(_crashed(item, skip[i]))
            continue
        result, descriptors = features_of(config, item, fault)
        if descriptors is not None:
            result.words = quantizer.assign(descriptors)
            result.word_ids, result.word_counts = word_counts(result.words, quantizer.k)
            if config.store_descriptors:
                result.descriptors = descriptors
            if geometry:
                result.geometry = pack_geometry(result.frames, result.words, result.width,
                                                result.height, units=config.frame_units,
                                                n_words=quantizer.k)
        results.append(result)
    if on_item is not None:
        on_item(len(items))
    return write_shard(shard_path, results, n_words=quantizer.k, first=first,
                       keep_descriptors=config.store_descriptors, geometry=geometry)


def sample_batch(config, items, parallel=False, *, skip=None, on_item=None, fault=None):
    """Pass 1 for a few images: (key, a seeded subset of its descriptors) per image, and
    failures."""
    if parallel:
        single_threaded_libraries()
    skip = skip or {}
    parts, failed = [], []
    for i, item in enumerate(items):
        if on_item is not None:
            on_item(i)
        if i in skip:
            failed.append((item.key, skip[i]))
            continue
        result, descriptors = features_of(config, item, fault)
        if result.status != OK:
            failed.append((item.key, result.reason))
            continue
        rows = subsample_rows(len(descriptors), config.sample_per_image, item.key, config.seed)
        parts.append((item.key, descriptors[rows]))
    return parts, failed


def bottom_k(items, k, seed):
    """The k items of smallest hash priority, in source order, in one streaming pass.

    A bottom-k sketch: the same images are chosen whatever the order or grouping of the
    stream, and only k items are held at a time.
    """
    heap = []
    for position, item in enumerate(items):
        entry = (-sample_priority(item.key, seed), position, item)
        if len(heap) < k:
            heapq.heappush(heap, entry)
        elif entry[0] > heap[0][0]:
            heapq.heapreplace(heap, entry)
    return [item for _, _, item in sorted(heap, key=lambda e: e[1])]


def batched(iterable, n):
    it = iter(iterable)
    while batch := list(itertools.islice(it, n)):
        yield batch


def n_workers(jobs) -> int:
    """How many tasks run at once: ``jobs`` is a process count or a ``cluster.Cluster``."""
    return jobs.n_workers if hasattr(jobs, "map") else max(1, int(jobs))


def run_tasks(func, tasks, jobs):
    """Yield func(*task) for each task in order, in ``jobs`` worker processes (at least one:
    see ``isolate``). At most 2 * jobs tasks are in flight, so memory stays bounded by a
    few shards. A ``cluster.Cluster`` runs the tasks on its Dask workers instead.

    ``process_shard`` and ``sample_batch`` (decoding: native code) get the crash isolation
    of single items; any other ``func`` runs in this process for ``jobs`` = 1, else as
    ``func(*task, parallel=True)`` in joblib's workers, a worker that dies ending the job
    with one line."""
    if hasattr(jobs, "map"):
        yield from jobs.map(func, tasks)
        return
    if func in _ITEMS_ARGUMENT:
        at = _ITEMS_ARGUMENT[func]
        yield from run_isolated(func, tasks, jobs, n_items=lambda task: len(task[at]),
                                what="writing its results")
    elif jobs <= 1:
        for task in tasks:
            yield func(*task)
    else:
        yield from _run_joblib(func, tasks, jobs)


def decodes_images(func) -> bool:
    """Whether the tasks of ``func`` decode images (and so get crash isolation)."""
    return func in _ITEMS_ARGUMENT


def _run_joblib(func, tasks, jobs):
    from joblib import Parallel, delayed
    from joblib.externals.loky.process_executor import TerminatedWorkerError
    parallel = Parallel(n_jobs=jobs, return_as="generator", pre_dispatch="2*n_jobs")
    try:
        yield from parallel(delayed(func)(*task, parallel=True) for task in tasks)
    except TerminatedWorkerError:
        raise WorkerDied(f"a worker process died while running {func.__name__}; rerun the "
                         f"same command to resume") from None


# where the items are among the arguments of a task
_ITEMS_ARGUMENT = {process_shard: 2, sample_batch: 1}
# the name workers of other modules call
_single_threaded_libraries = single_threaded_libraries


def merge_task(directory, config, shard_files, options, *, skip=None, on_item=None, fault=None):
    """``store.merge`` as a worker task (``isolate.call_isolated``): HDF5 may crash the
    process that fails to write a big file (a full disk), so the merge runs in a worker."""
    return merge(directory, config, shard_files, **options)
