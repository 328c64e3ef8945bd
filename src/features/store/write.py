"""The one writer of ``store.h5``'s layout: a function for each part.

:func:`.merge.merge` writes ``store.h5`` from a job's shards with these functions, and so
does everything else that makes one (the synthetic stores of ``features baseline``, the
stores of the tests and of the benchmarks), so that every ``store.h5`` has the same
datasets, dtypes, chunks, compression and attributes:

- the root attributes (format, version, config, versions, n_images, created, shards):
  :func:`write_header`;
- ``images/*`` (key, label, width, height, status, reason, sha256) with the on-disk key index
  ``key_index/*``: :class:`ImageTable`, a block of images at a time, or :func:`write_images`
  at once; ``images/split``: :func:`write_split`;
- ``offsets`` (where each image's descriptors start): :func:`create_offsets`;
- ``labels/{wnid,name}``: :func:`write_labels`; ``codebook/centroids``:
  :func:`write_codebook`; ``encodings/idf``: :func:`write_idf`; ``failures/*``:
  :func:`write_failures`;
- ``encodings/NAME``: :class:`CSRWriter` and :func:`create_dense`, from :mod:`.encodings`
  (which reads that layout too);
- the ragged per-image data of the shards (frames, words, ...): :func:`virtual_concat`.
"""
from __future__ import annotations

import json
import time

import numpy as np

from .._shared.hashing import array_sha256, bytes_sha256
from ..exceptions import ParameterError, StoreError
from ..presets import Config
from .encodings import CSRWriter, create_dense, write_csr
from .keys import KeyTableWriter
from .layout import COMPRESS, DIGEST, FORMAT, OK, STATUS_NAMES, STR, VERSION, virtual_concat

__all__ = ["write_header", "ImageTable", "write_images", "write_split", "create_offsets",
           "write_labels", "write_codebook", "write_idf", "write_failures", "CSRWriter",
           "create_dense", "write_csr", "virtual_concat", "idf_checksum",
           "centroids_checksum", "tree_checksum", "IMAGE_COLUMNS"]

# the columns of images/*, and their dtypes
IMAGE_COLUMNS = {"key": STR, "label": np.int32, "width": np.int32, "height": np.int32,
                 "status": np.uint8, "reason": STR, "sha256": DIGEST}
# what the header records of each shard merged (see shards.shard_problems)
SHARD_FIELDS = ("file", "count", "size", "checksum")


def idf_checksum(idf) -> str:
    """sha256 of the little-endian float32 word weights."""
    return bytes_sha256(np.ascontiguousarray(idf, "<f4").tobytes())


def tree_checksum(tree) -> str:
    """sha256 of a vocabulary tree's arrays (``child_start``, ``child_next`` int32,
    ``centers`` float32: dtype, shape, bytes of each, in that order)."""
    return array_sha256(np.asarray(tree["child_start"], np.int32),
                        np.asarray(tree["child_next"], np.int32),
                        np.asarray(tree["centers"], np.float32))


def centroids_checksum(centroids) -> str:
    """sha256 of the float32 centroids (dtype, shape, bytes)."""
    return array_sha256(np.asarray(centroids, dtype=np.float32))


def write_header(f, config: Config, n_images, *, versions=None, shards=None, created=None):
    """The root attributes of an open ``store.h5``.

    ``versions``: library -> version (JSON); ``shards``: the records of the shard files
    merged (file, count, size, checksum), so that readers can refuse a store whose shards
    went missing or changed (None: a store made without shards); ``created``: an ISO
    timestamp (default: now).
    """
    if not isinstance(config, Config):
        raise ParameterError(f"config must be a features.presets.Config, got "
                             f"{type(config).__name__}")
    f.attrs["format"] = FORMAT
    f.attrs["version"] = VERSION
    f.attrs["config"] = config.to_json()
    f.attrs["versions"] = json.dumps(versions or {}, sort_keys=True)
    f.attrs["n_images"] = _count(n_images, "n_images")
    f.attrs["created"] = created or time.strftime("%Y-%m-%dT%H:%M:%S")
    if shards is not None:
        f.attrs["shards"] = json.dumps([{k: r.get(k) for k in SHARD_FIELDS} for r in shards])


class ImageTable:
    """``images/*`` of ``n_images`` images, written a block of images at a time (merge: a
    shard after another), and the key index over their keys (:meth:`close`)."""

    def __init__(self, f, n_images):
        self.n_images = _count(n_images, "n_images")
        self.file = f
        self.group = f.create_group("images")
        # compressed, in chunks of up to 32k rows: the columns are read whole
        self.chunk = min(max(self.n_images, 1), 1 << 15)
        for name, dtype in IMAGE_COLUMNS.items():
            self.group.create_dataset(name, shape=(self.n_images,), dtype=dtype,
                                      chunks=(self.chunk,), **COMPRESS)
        self.keys = KeyTableWriter(self.n_images)
        self.row = 0
        # Rows not yet written, kept until they fill whole chunks: a block of a shard's
        # 1,000 rows written at once into a 32k-row chunk made HDF5 decompress and
        # compress that chunk again for every block (the digests' chunk is 2 MB).
        self.written = 0
        self.pending = {name: [] for name in IMAGE_COLUMNS}

    def append(self, *, key, label, width, height, status, reason, sha256=None) -> int:
        """The next images, a sequence or array of each column (``key`` and ``reason`` as
        str; ``sha256``: the hex digests of their file bytes, "" where unknown, the default);
        returns the row of the first."""
        m = len(key)
        columns = {"key": key, "label": label, "width": width, "height": height,
                   "status": status, "reason": reason,
                   "sha256": [""] * m if sha256 is None else sha256}
        if any(len(v) != m for v in columns.values()):
            raise ParameterError("the image columns differ in length: " + ", ".join(
                f"{name} {len(v)}" for name, v in columns.items()))
        if self.row + m > self.n_images:
            raise ParameterError(f"{self.row + m} images for a table of {self.n_images}")
        start = self.row
        if m:
            for name, values in columns.items():
                # h5py writes variable-length strings from object arrays only
                dtype = IMAGE_COLUMNS[name]
                dtype = object if dtype is STR else "S64" if dtype is DIGEST else dtype
                self.pending[name].append(np.asarray(values, dtype))
            self.keys.add(key)
        self.row += m
        if self.row - self.written >= self.chunk:
            self._flush(whole_chunks=True)
        return start

    def _flush(self, whole_chunks):
        """Write the pending rows: those that fill whole chunks, or all of them."""
        end = self.row
        if whole_chunks:
            end = self.written + (end - self.written) // self.chunk * self.chunk
        if end == self.written:
            return
        for name, parts in self.pending.items():
            values = np.concatenate(parts)
            self.group[name][self.written:end] = values[:end - self.written]
            self.pending[name] = [values[end - self.written:]]
        self.written = end

    def close(self):
        """Write the rows still pending and the key index, once every image is in."""
        if self.row != self.n_images:
            raise StoreError(f"the image table holds {self.row} of its {self.n_images} images")
        self._flush(whole_chunks=False)
        self.keys.write(self.file)


def write_images(f, keys, *, label=None, width=None, height=None, status=None, reason=None,
                 sha256=None):
    """``images/*`` and the key index at once. Defaults: unlabelled (-1), size 0, status
    ``OK``, the status's name as the reason of the others, no digest ("")."""
    n = len(keys)
    status = np.full(n, OK, np.uint8) if status is None else np.asarray(status, np.uint8)
    if reason is None:
        reason = ["" if s == OK else STATUS_NAMES.get(int(s), "failed") for s in status]
    table = ImageTable(f, n)
    table.append(key=list(keys),
                 label=np.full(n, -1, np.int32) if label is None else label,
                 width=np.zeros(n, np.int32) if width is None else width,
                 height=np.zeros(n, np.int32) if height is None else height,
                 status=status, reason=list(reason), sha256=sha256)
    table.close()
    return table.group


def write_split(f, split):
    """``images/split``: the split of each image (``train``, ``val`` ...)."""
    split = list(split)
    n = len(f["images/key"])
    if len(split) != n:
        raise ParameterError(f"a split of {len(split)} images for a table of {n}")
    return f["images"].create_dataset("split", data=np.array(split, dtype=object), dtype=STR)


def create_offsets(f, n_images):
    """``offsets`` (int64, n_images + 1): image i's descriptors are rows
    ``offsets[i]:offsets[i + 1]`` of the ragged datasets. All zeros until written (a store
    without descriptors keeps them so)."""
    return f.create_dataset("offsets", data=np.zeros(_count(n_images, "n_images") + 1,
                                                     np.int64))


def write_labels(f, classes, names=()):
    """``labels/wnid`` and ``labels/name``: the class ids and their names (label i is class
    i); nothing for an unlabelled store. Returns the group, or None."""
    classes = list(classes)
    names = list(names) or [""] * len(classes)
    if len(names) != len(classes):
        raise ParameterError(f"{len(names)} class names for {len(classes)} classes")
    if not classes:
        return None
    g = f.create_group("labels")
    g.create_dataset("wnid", data=np.array(classes, dtype=object), dtype=STR)
    g.create_dataset("name", data=np.array(names, dtype=object), dtype=STR)
    return g


def write_codebook(f, centroids, tree=None, **attrs):
    """``codebook/centroids`` (float32, words x 128) with its checksum, and ``attrs`` (how
    it was learned) on the group. ``tree``: the arrays of a vocabulary tree whose leaves
    are ``centroids`` (``VocabularyTree.arrays()``), written as ``codebook/tree/*`` with
    their checksum."""
    centroids = np.asarray(centroids, np.float32)
    if centroids.ndim != 2:
        raise ParameterError(f"centroids must be a 2-D array, got shape {centroids.shape}")
    g = f.create_group("codebook")
    ds = g.create_dataset("centroids", data=centroids)
    # stores encoded --like another must share its codebook: compared by this checksum
    ds.attrs["checksum"] = centroids_checksum(centroids)
    if tree is not None:
        t = g.create_group("tree")
        for name in ("child_start", "child_next", "centers"):
            t.create_dataset(name, data=tree[name])
        t.attrs["checksum"] = tree_checksum(tree)
    for k, v in attrs.items():
        g.attrs[k] = v
    return g


def write_idf(f, idf):
    """``encodings/idf``: the word weights of ``bovw`` (float32), with their checksum."""
    idf = np.asarray(idf, np.float32)
    if idf.ndim != 1:
        raise ParameterError(f"idf must be a 1-D array, got shape {idf.shape}")
    ds = f.require_group("encodings").create_dataset("idf", data=idf)
    ds.attrs["checksum"] = idf_checksum(idf)
    return ds


def write_failures(f, failures):
    """``failures/{index,key,reason}`` from (row, key, reason) triples, in row order."""
    failures = list(failures)
    g = f.create_group("failures")
    g.create_dataset("index", data=np.array([i for i, _, _ in failures], np.int64))
    for at, name in ((1, "key"), (2, "reason")):
        g.create_dataset(name, data=np.array([t[at] for t in failures], dtype=object),
                         dtype=STR)
    return g


def _count(n, what) -> int:
    n = int(n)
    if n < 0:
        raise ParameterError(f"{what} must be >= 0, got {n}")
    return n
