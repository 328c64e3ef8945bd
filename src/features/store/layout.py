"""The layout of a store: file names, the format tag, image status codes, how datasets are
compressed. One directory::

    store.h5        the merged view that readers open (plain h5py works)
    shards/         one HDF5 file per shard of images, written atomically by the workers
    manifest.json   finished steps and shards, so that a rerun resumes
    manifest.journal  the shards finished since manifest.json was last rewritten
    sample.npy      pass 1's descriptor sample; codebook.npy, the codebook learned from it
                    (its words; codebook-tree.npz, the rest of a vocabulary tree's nodes)
    failures.tsv    the failed images with their reason
    encodings/NAME/ the per-shard files of an encoding added by ``features aggregate``
    index-GEN/      the search index (index.faiss, and index.refine its sparse refine
                    stage) of the build the manifest names, with the files' checksums
                    (``features.index.layout``; stores made before: in this folder)

Ragged per-image data (frames, descriptors, words, scale, geometry) lives in the shards as
one concatenated dataset each plus ``offsets``; ``store.h5`` stitches the shards together as
HDF5 virtual datasets (no copy, paths relative to the store so it can be moved), and keeps
small real copies of the per-image tables, the codebook and the encodings.
"""
from __future__ import annotations

import h5py
import numpy as np

from .chunks import filters_handled, write_chunks

STORE_FILE = "store.h5"
MANIFEST_FILE = "manifest.json"
JOURNAL_FILE = "manifest.journal"
SHARDS_DIR = "shards"
SAMPLE_FILE, CODEBOOK_FILE = "sample.npy", "codebook.npy"
TREE_FILE = "codebook-tree.npz"
FAILURES_FILE = "failures.tsv"
ENCODINGS_DIR = "encodings"

FORMAT = "features-store"

# 2: models per encoding, models/ENCODING/MODEL (1: one of each kind, models/MODEL)
VERSION = 2

# Status codes of images/status; the reason column says more.
# NO_FEATURES: decoded, but the recipe finds nothing in it (too small, or blank); such
# images are left out of the index like the failed ones.
OK, UNREADABLE, UNDECODABLE, REFUSED, EXTRACT_FAILED, NO_FEATURES = 0, 1, 2, 3, 4, 5

STATUS_NAMES = {OK: "ok", UNREADABLE: "unreadable", UNDECODABLE: "undecodable",
                REFUSED: "refused by source", EXTRACT_FAILED: "extraction failed",
                NO_FEATURES: "no features"}

# gzip is the codec every HDF5 reader has (lzf and blosc need plugins outside h5py);
# level 1 with shuffle keeps most of the gain of higher levels at a fraction of the cost.
COMPRESS = dict(compression="gzip", compression_opts=1, shuffle=True)
STR = h5py.string_dtype("utf-8")
# sha256 of an image's file bytes as 64 hex digits ("" where they were not read)
DIGEST = h5py.string_dtype("ascii", 64)
# Encoding rows are read one at a time by key queries: a 32 KB chunk (about 30 rows of
# 1000-word tf-idf) decompresses in a fraction of the time of a 256 KB one.
ENCODING_CHUNK = 1 << 13


def word_dtype(n_words):
    """int16 as the ILSVRC-2010 devkit stored words, while the codebook fits in it."""
    return np.int16 if n_words <= np.iinfo(np.int16).max + 1 else np.int32


def chunked(f, name, data, chunk_rows, *, by_column=False):
    """``data`` as a compressed dataset chunked by ``chunk_rows`` rows (growable; a
    contiguous empty one when ``data`` is empty); ``by_column``: each chunk one column of
    a 2-D ``data`` (the same dataset to a reader). The chunks are compressed by
    :mod:`.chunks` (HDF5's filters, a faster deflate)."""
    data = np.asarray(data)
    if not len(data):
        return f.create_dataset(name, data=data)
    rows = max(1, min(chunk_rows, len(data)))
    chunks = (rows,) + ((1,) * (data.ndim - 1) if by_column else data.shape[1:])
    ds = f.create_dataset(name, shape=data.shape, dtype=data.dtype, chunks=chunks,
                          maxshape=(None,) + data.shape[1:], **COMPRESS)
    level = filters_handled(ds)
    if level is None:
        ds[...] = data
    else:
        write_chunks(ds, data, level)
    return ds


def virtual_concat(parent, name, parts, dtype, tail_shape=(), source=None):
    """The same-named datasets of several files as one virtual dataset ``parent[name]``
    (no copy): ``parts`` are (path, rows) in order, paths relative to the store so that it
    can be moved; ``source`` names the datasets in the files when it is not ``name``."""
    total = sum(n for _, n in parts)
    layout = h5py.VirtualLayout(shape=(total,) + tuple(tail_shape), dtype=dtype)
    at = 0
    for path, n in parts:
        if n:
            layout[at:at + n] = h5py.VirtualSource(path, source or name,
                                                   shape=(n,) + tuple(tail_shape))
        at += n
    return parent.create_virtual_dataset(name, layout, fillvalue=0)
