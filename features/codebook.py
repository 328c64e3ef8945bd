"""Codebooks: seeded descriptor sampling and k-means (FAISS)."""
from __future__ import annotations

import hashlib

import faiss
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


def kmeans(descriptors, k, *, iters=25, seed=0, redo=1, n_threads=None, verbose=False):
    """Lloyd's k-means with FAISS on float32 rows; returns (k, d) float32 centroids.

    FAISS needs at least k points; fewer distinct points than k is an error the caller
    should see, not a codebook with duplicate words. ``redo`` > 1 keeps the best of several
    seeded restarts (lowest quantization error).
    """
    x = np.ascontiguousarray(descriptors, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"need a non-empty (n, d) array of descriptors, got shape {x.shape}")
    if k < 2:
        raise ValueError(f"k must be >= 2, got {k!r}")
    if redo < 1:
        raise ValueError(f"redo must be >= 1, got {redo!r}")
    if x.shape[0] < k:
        raise ValueError(f"cannot learn {k} words from {x.shape[0]} descriptors; "
                         f"use fewer words or more images")
    if n_threads is not None:
        faiss.omp_set_num_threads(int(n_threads))
    km = faiss.Kmeans(x.shape[1], int(k), niter=int(iters), seed=int(seed), verbose=verbose,
                      nredo=int(redo), spherical=False, max_points_per_centroid=1 << 30,
                      min_points_per_centroid=1)
    km.train(x)
    return np.ascontiguousarray(km.centroids, dtype=np.float32)
