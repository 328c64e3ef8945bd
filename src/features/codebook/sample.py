"""Seeded sampling for the codebook: which images, and which of their descriptors.

Both are functions of the seed and the image key alone, so the sample is the same whatever
the number of workers, the shard size, the order in which shards finish, or whether the
source is a stream of unknown length (a tar).
"""
from __future__ import annotations

import hashlib
import heapq

import numpy as np


def sample_priority(key: str, seed: int) -> float:
    """A uniform number in [0, 1) from a hash of (seed, key) alone.

    The codebook sample takes the images of smallest priority, so it is the same whatever
    the number of workers, the shard size or the order in which shards finish, and a stream
    of unknown length (a tar) can be sampled in one pass.
    """
    digest = hashlib.blake2b(f"{seed}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2.0**64


def subsample_rows(n_rows: int, k: int, key: str, seed: int) -> np.ndarray:
    """Seeded choice of at most ``k`` of ``n_rows`` rows, sorted, stable per image key."""
    if n_rows <= k:
        return np.arange(n_rows)
    digest = hashlib.blake2b(f"{seed}\1{key}".encode(), digest_size=8).digest()
    rng = np.random.default_rng(int.from_bytes(digest, "little"))
    return np.sort(rng.choice(n_rows, size=k, replace=False))


def bottom_k(items, k, seed):
    """The k items (objects with a ``key``) of smallest :func:`sample_priority`, in source
    order, in one streaming pass.

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
