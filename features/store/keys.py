"""An on-disk index of image keys inside ``store.h5``: key -> row without loading the keys.

The group ``key_index`` holds four contiguous, uncompressed datasets, so that a reader
memory-maps them and touches only the pages it needs:

    hash     uint64  N    64-bit BLAKE2b of each key's bytes, sorted
    row      int64   N    the image row of each sorted hash
    offsets  int64   N+1  key i is ``blob[offsets[i]:offsets[i+1]]``
    blob     uint8   M    the keys' UTF-8 bytes concatenated in row order

The maps are made from the descriptor HDF5 opened (never by path): a store.h5 replaced by a
rerun after the store was opened is a new file at the same path, whose offsets mean nothing
to the file this table describes.

A lookup is a binary search of ``hash`` (about 20 probes at 1.28M keys), then a comparison
of the stored bytes, so hash collisions never give a wrong row. The same bytes give the key
of any row in microseconds, which the search results need.

Keys are encoded as UTF-8 with ``surrogateescape``: a key made from file-system bytes that
are not UTF-8 (``os.fsdecode``) has a well-defined hash and never raises.
"""
from __future__ import annotations

import hashlib
import os

import numpy as np

GROUP = "key_index"


def utf8_key(key: str) -> bytes:
    """The bytes a key is hashed and stored as (not the path's bytes: see
    ``features.sources.key_bytes``)."""
    return key.encode("utf-8", "surrogateescape")


def key_hash(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(utf8_key(key), digest_size=8).digest(), "little")


def key_hashes(keys) -> np.ndarray:
    return np.fromiter((key_hash(k) for k in keys), np.uint64, count=len(keys))


class KeyTableWriter:
    """Collects keys in row order (a block at a time), then writes the ``key_index`` group.

    Memory: 8 bytes of hash and the key bytes per image (about 50 MB at 1.28M images).
    """

    def __init__(self, n_rows: int):
        self.hashes = np.empty(n_rows, np.uint64)
        self.offsets = np.zeros(n_rows + 1, np.int64)
        self.parts = []
        self.at = 0

    def add(self, keys):
        raw = [utf8_key(k) for k in keys]
        n = len(raw)
        self.hashes[self.at:self.at + n] = [
            int.from_bytes(hashlib.blake2b(b, digest_size=8).digest(), "little") for b in raw]
        lengths = np.fromiter(map(len, raw), np.int64, count=n)
        np.cumsum(lengths, out=self.offsets[self.at + 1:self.at + n + 1])
        self.offsets[self.at + 1:self.at + n + 1] += self.offsets[self.at]
        self.parts.append(b"".join(raw))
        self.at += n

    def write(self, h5file):
        if self.at != len(self.hashes):
            raise ValueError(f"key table expected {len(self.hashes)} keys, got {self.at}")
        if GROUP in h5file:
            del h5file[GROUP]
        g = h5file.create_group(GROUP)
        order = np.argsort(self.hashes, kind="stable")
        blob = np.frombuffer(b"".join(self.parts), np.uint8)
        # contiguous and unfiltered: the reader memory-maps them
        g.create_dataset("hash", data=self.hashes[order])
        g.create_dataset("row", data=order.astype(np.int64))
        g.create_dataset("offsets", data=self.offsets)
        g.create_dataset("blob", data=blob)
        g.attrs["hash"] = "blake2b-64, little-endian, of the UTF-8 (surrogateescape) bytes"


def _opened_file(h5file):
    """A file object on the descriptor ``h5file`` reads through (None for a driver without
    one: then the datasets are read rather than mapped)."""
    try:
        fd = h5file.id.get_vfd_handle()
    except (OSError, RuntimeError, ValueError, TypeError):
        return None
    if not isinstance(fd, int) or fd < 0:
        return None
    # a duplicate: HDF5 reads with pread, so the shared file offset numpy seeks is harmless
    return os.fdopen(os.dup(fd), "rb")


def _mapped(path, dataset, dtype):
    """A read-only memory map of a contiguous, unfiltered dataset (None if it cannot be);
    ``path`` is a path or an open file object."""
    if dataset.chunks is not None or dataset.compression is not None:
        return None
    if dataset.shape[0] == 0:
        return np.zeros(0, dtype)
    offset = dataset.id.get_offset()
    if offset is None:
        return None
    return np.memmap(path, dtype=dataset.dtype, mode="r", offset=offset, shape=dataset.shape)


class KeyTable:
    """Key -> row and row -> key over the memory-mapped ``key_index`` group of a store."""

    def __init__(self, h5file, path=None):
        """Maps ``h5file``'s own descriptor; ``path`` only for a file opened by a driver
        without one (or None: then the small datasets are read)."""
        g = h5file[GROUP]
        opened = _opened_file(h5file)
        source = opened if opened is not None else path
        try:
            maps = [None if source is None else _mapped(source, g[name], dtype)
                    for name, dtype in (("hash", np.uint64), ("row", np.int64),
                                        ("offsets", np.int64), ("blob", np.uint8))]
        finally:
            if opened is not None:
                opened.close()  # each map holds its own duplicate of the descriptor
        self.hash, self.row, self.offsets, self.blob = maps
        if any(m is None for m in maps):
            # a copy rewritten by another tool with filters: read it (it is small) instead
            self.hash, self.row = g["hash"][:], g["row"][:]
            self.offsets, self.blob = g["offsets"][:], g["blob"][:]

    def __len__(self):
        return len(self.row)

    @staticmethod
    def present(h5file) -> bool:
        return GROUP in h5file

    def key_of(self, i: int) -> str:
        a, b = self.offsets[i], self.offsets[i + 1]
        return bytes(self.blob[a:b]).decode("utf-8", "surrogateescape")

    def row_of(self, key: str) -> int | None:
        raw = utf8_key(key)
        h = np.uint64(int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "little"))
        lo = int(np.searchsorted(self.hash, h, side="left"))
        n = len(self.hash)
        while lo < n and self.hash[lo] == h:
            i = int(self.row[lo])
            a, b = self.offsets[i], self.offsets[i + 1]
            if bytes(self.blob[a:b]) == raw:
                return i
            lo += 1
        return None
