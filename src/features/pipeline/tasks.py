"""The tasks of the batch steps: work done per image, per batch of images and per shard.

How they run is in :mod:`.runner`. Workers get plain data (items, the configuration, the
centroids) and return plain data; shards are written by the worker that computed them,
atomically. Tasks that decode images run in child processes also for ``--jobs 1`` (see
:mod:`.isolate`): a native crash on an image is a failed item, not the end of the job.
Other tasks (aggregation) run on joblib's worker processes: joblib cannot tell which item
of a task killed its worker, which is the only reason decoding has a pool of its own.
"""
from __future__ import annotations

import functools
import hashlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..codebook import quantizer as quantizer_of, subsample_rows
from ..decode import decode_gray
from ..encodings.positions import centred_positions
from ..exceptions import DecodeError
from ..extract import Extraction, extract_image, pack_geometry
from ..sources.base import items_digest
from ..store import (EXTRACT_FAILED, NO_FEATURES, OK, REFUSED, UNDECODABLE, UNREADABLE,
                     ImageResult, merge, write_shard)
from .._shared.hashing import array_sha256
from .._shared.threads import single_threaded_libraries
from .isolate import inject_fault
from .runner import batched, task


@functools.lru_cache(maxsize=8)
def _extraction(config) -> Extraction:
    return Extraction.of(config)


def features_of(config, item, fault=None):
    """Decode and extract one item. Returns (ImageResult without words, descriptors)."""
    result, decoded = _decoded(config, item, fault)
    if decoded is None:
        return result, None
    return _extracted(config, result, decoded)


def _decoded(config, item, fault=None, data=None):
    """Read and decode one item: (ImageResult, Decoded), or (failed ImageResult, None).
    ``data``: what :func:`_read` gave for the item, if it was read ahead."""
    result = ImageResult(key=item.key, label=item.label)
    inject_fault(item.key, fault)
    if item.error:
        result.status, result.reason = REFUSED, item.error
        return result, None
    if data is None:
        data = _read(item)
    if isinstance(data, OSError):
        result.status, result.reason = UNREADABLE, f"cannot read: {data.strerror or data}"
        return result, None
    # what `features baseline` compares to find the same image in a train and a val store
    result.sha256 = hashlib.sha256(data).hexdigest()
    try:
        decoded = decode_gray(data, config.max_side)
    except DecodeError as e:
        result.status, result.reason = UNDECODABLE, str(e)
        return result, None
    result.width, result.height = decoded.width, decoded.height
    return result, decoded


def _extracted(config, result, decoded):
    """Extract from a decoded image: (result with its frames, descriptors), or (failed
    result, None)."""
    try:
        result.frames, descriptors, result.scale = extract_image(_extraction(config), decoded)
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


def _read(item):
    """The item's bytes, or the OSError that reading them raised."""
    try:
        return item.read()
    except OSError as e:
        return e


def _read_batch(items, batch, skip):
    """:func:`_read` of the items at positions ``batch`` that are to be decoded."""
    return {i: _read(items[i]) for i in batch if i not in skip and not items[i].error}


def _is_blank(gray):
    return gray.size == 0 or int(gray.min()) == int(gray.max())


# the quantizer of the codebook the last shard task of this process used, by its checksum
_quantizers: dict = {}


def _quantizer(codebook):
    """``quantizer_of(codebook)``, kept for the next shard: a worker runs the shards of a
    step one after another with the same centroids, and an exact assigner's setup (an SVD
    of the centroids) cost 15 ms a shard, the checksum that finds it again 0.3 ms."""
    if not isinstance(codebook, np.ndarray):
        return quantizer_of(codebook)           # a vocabulary tree is its own quantizer
    key = array_sha256(codebook)
    if key not in _quantizers:
        _quantizers.clear()
        _quantizers[key] = quantizer_of(codebook)
    return _quantizers[key]


#: Images a shard task takes through each stage (decode, extract, assign) before the next.
STAGE_BATCH = 8


def _no_announce(i):
    pass


def _crashed(item, reason):
    return ImageResult(key=item.key, label=item.label, status=UNDECODABLE, reason=reason)


@task(items=2)
def process_shard(config, centroids, items, shard_path, first, parallel=False, *, skip=None,
                  on_item=None, fault=None) -> dict:
    """Pass 2 for one shard: extract and quantize each image, write the shard file (which
    counts the words).

    ``skip`` maps item positions to the reason they are left out (they crashed a worker
    before); ``on_item(i)`` is called before each stage's work on item ``i`` (see
    ``isolate.run_isolated``: a worker that dies was working on the item announced last);
    ``parallel``: this is one of several worker processes (a cluster's)."""
    if parallel:
        single_threaded_libraries()
    skip = skip or {}
    quantizer = _quantizer(centroids)   # centroids, or a vocabulary tree
    geometry = _extraction(config).keeps_geometry
    announce = on_item if on_item is not None else _no_announce
    results = [None] * len(items)
    # Each stage runs over a few images before the next stage starts: the stage's code and
    # data (libjpeg's, the dense SIFT kernel's scratch, the centroids) stay in the caches
    # (one image through all stages at a time cost about 9% more per image on a core with
    # 1 MB of L2: 3.13 against 2.85 ms, medians of 14 alternating runs of 1000 sbow images).
    # Every item is announced again before each stage that works on it.
    # The files of the next batch are read by a thread while this one is worked on: a
    # collection larger than the memory is read from the disk (0.3 ms an image here, cold,
    # a tenth of the work), and the worker would wait for every file.
    batches = list(batched(range(len(items)), STAGE_BATCH))
    with ThreadPoolExecutor(1) as reader:
        ahead = reader.submit(_read_batch, items, batches[0], skip) if batches else None
        for k, batch in enumerate(batches):
            data = ahead.result()
            if k + 1 < len(batches):
                ahead = reader.submit(_read_batch, items, batches[k + 1], skip)
            _process_batch(config, quantizer, geometry, items, batch, data, results, skip,
                           announce, fault)
    announce(len(items))
    record = write_shard(shard_path, results, n_words=quantizer.k, first=first,
                         keep_descriptors=config.store_descriptors, geometry=geometry)
    record["items"] = items_digest(items)
    record["content"] = items_digest(items, labels=False)
    return record


def _process_batch(config, quantizer, geometry, items, batch, data, results, skip, announce,
                   fault):
    """Decode, extract and assign the items at positions ``batch`` (their bytes in
    ``data``), each stage over the batch before the next, into ``results``."""
    decoded = {}
    for i in batch:
        announce(i)
        if i in skip:
            results[i] = _crashed(items[i], skip[i])
            continue
        results[i], image = _decoded(config, items[i], fault, data.get(i))
        if image is not None:
            decoded[i] = image
    found = {}
    for i, image in decoded.items():
        announce(i)
        results[i], descriptors = _extracted(config, results[i], image)
        if descriptors is not None:
            found[i] = descriptors
    for i, descriptors in found.items():
        announce(i)
        result = results[i]
        result.words = quantizer.assign(descriptors)
        if config.store_descriptors:
            result.descriptors = descriptors
        if geometry:
            result.geometry = pack_geometry(result.frames, result.words, result.width,
                                            result.height, units=config.frame_units,
                                            n_words=quantizer.k)


@task(items=1)
def sample_batch(config, items, positions=False, parallel=False, *, skip=None, on_item=None,
                 fault=None):
    """Pass 1 for a few images: (key, a seeded subset of its descriptors) per image, and
    failures. ``positions``: (key, descriptors, their centred positions) per image
    (``features.encodings.positions``), what a GMM of descriptors and positions is
    learned from."""
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
        if positions:
            xy = centred_positions(result.frames[rows], [0, len(rows)], [result.width],
                                   [result.height], config.frame_units)
            parts.append((item.key, descriptors[rows], xy))
        else:
            parts.append((item.key, descriptors[rows]))
    return parts, failed


def merge_task(directory, config, shard_files, options, *, skip=None, on_item=None, fault=None):
    """``store.merge`` as a worker task (:func:`.isolate.call_isolated`): HDF5 may crash the
    process that fails to write a big file (a full disk), so the merge runs in a worker."""
    return merge(directory, config, shard_files, **options)
