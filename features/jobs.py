"""Work done per image and per shard, and running it on local worker processes (joblib).

Workers get plain data (items, the configuration, the centroids) and return plain data;
shards are written by the worker that computed them, atomically.
"""
from __future__ import annotations

import heapq
import itertools

from joblib import Parallel, delayed

from .assign import Assigner
from .codebook import sample_priority, subsample_rows
from .decode import DecodeError, decode_gray
from .encode import word_counts
from .sift import extract_image
from .store import (EXTRACT_FAILED, OK, REFUSED, UNDECODABLE, UNREADABLE, ImageResult,
                    write_shard)
from .verify import keeps_geometry, pack_geometry


def _single_threaded_libraries():
    # N worker processes on N cores: library thread pools inside each would oversubscribe.
    import cv2
    import faiss
    cv2.setNumThreads(1)
    faiss.omp_set_num_threads(1)


def features_of(config, item):
    """Decode and extract one item. Returns (ImageResult without words, descriptors)."""
    result = ImageResult(key=item.key, label=item.label)
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
    return result, descriptors


def process_shard(config, centroids, items, shard_path, first, parallel=False) -> dict:
    """Pass 2 for one shard: extract, quantize, count words, write the shard file."""
    if parallel:
        _single_threaded_libraries()
    quantizer = Assigner(centroids)
    geometry = keeps_geometry(config)
    results = []
    for item in items:
        result, descriptors = features_of(config, item)
        if descriptors is not None and len(descriptors):
            result.words = quantizer.assign(descriptors)
            result.word_ids, result.word_counts = word_counts(result.words, quantizer.k)
            if config.store_descriptors:
                result.descriptors = descriptors
            if geometry:
                result.geometry = pack_geometry(result.frames, result.words, result.width,
                                                result.height, units=config.frame_units,
                                                n_words=quantizer.k)
        results.append(result)
    return write_shard(shard_path, results, n_words=quantizer.k, first=first,
                       keep_descriptors=config.store_descriptors, geometry=geometry)


def sample_batch(config, items, parallel=False):
    """Pass 1 for a few images: (key, a seeded subset of its descriptors) per image, and
    failures."""
    if parallel:
        _single_threaded_libraries()
    parts, failed = [], []
    for item in items:
        result, descriptors = features_of(config, item)
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
    """Yield func(*task) for each task in order; ``jobs`` > 1 uses joblib worker processes,
    and a ``cluster.Cluster`` runs the tasks on its Dask workers.

    At most 2 * jobs tasks are in flight, so memory stays bounded by a few shards.
    """
    if hasattr(jobs, "map"):
        yield from jobs.map(func, tasks)
        return
    if jobs <= 1:
        for task in tasks:
            yield func(*task)
        return
    parallel = Parallel(n_jobs=jobs, return_as="generator", pre_dispatch="2*n_jobs")
    yield from parallel(delayed(func)(*task, parallel=True) for task in tasks)
