"""Synthetic labelled stores: class-conditional Gaussian encodings in the store's layout.

For the tests and the benchmark of `features baseline` (and to try it without images): the
file is a regular ``store.h5``, written by the store's own writer (``features.store.write``:
same attributes, image table, labels and codebook as the pipeline writes), whose encodings
are written block by block, so memory stays bounded whatever the number of images.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import h5py
import numpy as np

from .._shared.versions import library_versions
from ..presets import get_preset
from ..store.write import (CSRWriter, create_dense, create_offsets, write_codebook,
                           write_header, write_idf, write_images, write_labels, write_split)


def class_means(n_classes, dims, separation, seed):
    rng = np.random.default_rng(seed)
    m = rng.normal(size=(n_classes, dims)).astype(np.float32)
    m *= separation / np.linalg.norm(m, axis=1, keepdims=True)
    return m


def write_synthetic_store(directory, labels, *, classes=None, names=None, dense=None,
                          sparse=None, split=None, status=None, seed=0, separation=1.0,
                          centroids=None, block=4096):
    """Write ``directory/store.h5`` for images with ``labels`` (-1: unlabelled).

    ``dense``: {name: (dims, dtype)} written as row-chunked 2-D datasets; ``sparse``: {name:
    (dims, nnz per row)} written as CSR groups.  Row i of an encoding is its class mean plus
    unit Gaussian noise (per dimension scaled by 1/sqrt(dims)), L2-normalized.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    labels = np.asarray(labels, dtype=np.int32)
    n = len(labels)
    n_classes = int(labels.max(initial=-1)) + 1
    classes = list(classes) if classes is not None else [f"class{c:03d}" for c in range(n_classes)]
    rng = np.random.default_rng(seed)
    with h5py.File(directory / "store.h5", "w") as f:
        write_header(f, get_preset("sift", words=16), n, versions=library_versions())
        status = np.zeros(n, np.uint8) if status is None else np.asarray(status, np.uint8)
        keys = [f"{classes[c] if c >= 0 else 'none'}/{i:07d}.png" for i, c in enumerate(labels)]
        # each image its own (made-up) file bytes: stores of other seeds share no image
        digests = [hashlib.sha256(f"{seed}/{k}".encode()).hexdigest() for k in keys]
        write_images(f, keys, sha256=digests,
                     label=labels, width=np.full(n, 64, np.int32),
                     height=np.full(n, 64, np.int32), status=status,
                     reason=["" if s == 0 else "broken" for s in status])
        if split is not None:
            write_split(f, split)
        create_offsets(f, n)
        # no model of this store learned from its images
        write_codebook(f, centroids if centroids is not None else np.zeros((16, 128)),
                       sample_splits="none")
        write_labels(f, classes, names or ())
        enc = f.create_group("encodings")
        lab = np.maximum(labels, 0)
        for k, (name, (dims, dtype)) in enumerate((dense or {}).items()):
            means = class_means(max(n_classes, 1), dims, separation, seed + 100 + k)
            rows = max(1, min(n, block, (8 << 20) // (dims * np.dtype(dtype).itemsize)))
            ds = create_dense(enc, name, n, dims, dtype, chunk_rows=rows)
            for a in range(0, n, block):
                b = min(n, a + block)
                x = means[lab[a:b]] + rng.standard_normal((b - a, dims), np.float32) / np.sqrt(dims)
                x /= np.linalg.norm(x, axis=1, keepdims=True)
                ds[a:b] = x.astype(dtype)
        for k, (name, (dims, nnz)) in enumerate((sparse or {}).items()):
            means = class_means(max(n_classes, 1), dims, separation, seed + 200 + k)
            out = CSRWriter(enc, name, n, dims)
            for a in range(0, n, block):
                b = min(n, a + block)
                out.append(*_sparse_rows(means[lab[a:b]], nnz, rng))
            out.close()
        write_idf(f, np.ones(16, np.float32))
    return directory


def _sparse_rows(means, nnz, rng):
    """CSR rows of ``nnz`` words each: each row prefers the words where its class mean is
    largest."""
    m, dims = means.shape
    indptr = np.arange(m + 1, dtype=np.int64) * nnz
    cols = np.empty(m * nnz, np.int32)
    vals = np.empty(m * nnz, np.float32)
    for i in range(m):
        p = np.exp(2 * np.sqrt(dims) * means[i])
        c = np.sort(rng.choice(dims, nnz, replace=False, p=p / p.sum()))
        v = rng.random(nnz).astype(np.float32) + 0.1
        cols[i * nnz:(i + 1) * nnz], vals[i * nnz:(i + 1) * nnz] = c, v / np.linalg.norm(v)
    return indptr, cols, vals
