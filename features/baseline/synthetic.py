"""Synthetic labelled stores: class-conditional Gaussian encodings in the store's layout.

For the tests and the benchmark of `features baseline` (and to try it without images): the
file is a regular ``store.h5`` (same attributes, image table, labels and codebook as the
pipeline writes) whose encodings are written block by block, so memory stays bounded
whatever the number of images.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import h5py
import numpy as np

from ..presets import get_preset
from .._shared.versions import library_versions
from ..store import FORMAT, VERSION

_STR = h5py.string_dtype("utf-8")


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
    config = get_preset("sift", words=16)
    rng = np.random.default_rng(seed)
    with h5py.File(directory / "store.h5", "w") as f:
        f.attrs.update(format=FORMAT, version=VERSION, config=config.to_json(),
                       versions=json.dumps(library_versions()), n_images=n,
                       created=time.strftime("%Y-%m-%dT%H:%M:%S"))
        g = f.create_group("images")
        g.create_dataset("key", data=np.array([f"{classes[c] if c >= 0 else 'none'}/{i:07d}.png"
                                               for i, c in enumerate(labels)], dtype=object),
                         dtype=_STR)
        g.create_dataset("label", data=labels)
        for col in ("width", "height"):
            g.create_dataset(col, data=np.full(n, 64, np.int32))
        st = np.zeros(n, np.uint8) if status is None else np.asarray(status, np.uint8)
        g.create_dataset("status", data=st)
        g.create_dataset("reason", data=np.array(["" if s == 0 else "broken" for s in st],
                                                 dtype=object), dtype=_STR)
        if split is not None:
            g.create_dataset("split", data=np.array(list(split), dtype=object), dtype=_STR)
        f.create_dataset("offsets", data=np.zeros(n + 1, np.int64))
        cb = f.create_group("codebook")
        cb.create_dataset("centroids", data=np.asarray(
            centroids if centroids is not None else np.zeros((16, 128)), np.float32))
        if classes:
            lg = f.create_group("labels")
            lg.create_dataset("wnid", data=np.array(classes, dtype=object), dtype=_STR)
            lg.create_dataset("name", data=np.array(list(names or [""] * len(classes)), dtype=object),
                              dtype=_STR)
        enc = f.create_group("encodings")
        lab = np.maximum(labels, 0)
        for k, (name, (dims, dtype)) in enumerate((dense or {}).items()):
            means = class_means(max(n_classes, 1), dims, separation, seed + 100 + k)
            rows = max(1, min(n, block, (8 << 20) // (dims * np.dtype(dtype).itemsize)))
            ds = enc.create_dataset(name, shape=(n, dims), dtype=dtype, chunks=(rows, dims))
            for a in range(0, n, block):
                b = min(n, a + block)
                x = means[lab[a:b]] + rng.standard_normal((b - a, dims), np.float32) / np.sqrt(dims)
                x /= np.linalg.norm(x, axis=1, keepdims=True)
                ds[a:b] = x.astype(dtype)
        for k, (name, (dims, nnz)) in enumerate((sparse or {}).items()):
            means = class_means(max(n_classes, 1), dims, separation, seed + 200 + k)
            grp = enc.create_group(name)
            grp.attrs["shape"] = (n, dims)
            indptr = np.arange(n + 1, dtype=np.int64) * nnz
            cols = np.empty(n * nnz, np.int32)
            vals = np.empty(n * nnz, np.float32)
            for i in range(n):
                # each class prefers the words where its mean is largest
                p = np.exp(2 * np.sqrt(dims) * means[lab[i]])
                c = np.sort(rng.choice(dims, nnz, replace=False, p=p / p.sum()))
                v = rng.random(nnz).astype(np.float32) + 0.1
                cols[i * nnz:(i + 1) * nnz], vals[i * nnz:(i + 1) * nnz] = c, v / np.linalg.norm(v)
            grp.create_dataset("indptr", data=indptr)
            grp.create_dataset("indices", data=cols)
            grp.create_dataset("data", data=vals)
        enc.create_dataset("idf", data=np.ones(16, np.float32))
    return directory
