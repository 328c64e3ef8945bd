"""Encodings read from a store block by block, whatever their layout.

An encoding is ``encodings/NAME`` in ``store.h5``: either a CSR group (``indptr``,
``indices``, ``data``, attribute ``shape``; e.g. ``bovw``) or a dense 2-D dataset (images x
dimensions, row-chunked float16/float32; e.g. spatial pyramids, VLAD, Fisher vectors).
Blocks come out as float32 arrays or SciPy CSR matrices; memory is bounded by one block.
"""
from __future__ import annotations

import h5py
import numpy as np

from ..exceptions import StoreError

# about this many bytes of dense float32 rows per block
BLOCK_BYTES = 32 << 20


def list_encodings(h5):
    """Names of the encodings of an open ``store.h5`` (CSR groups and 2-D datasets)."""
    if "encodings" not in h5:
        return []
    out = []
    for name, obj in h5["encodings"].items():
        if isinstance(obj, h5py.Group) and {"indptr", "indices", "data"} <= set(obj.keys()):
            out.append(name)
        elif isinstance(obj, h5py.Dataset) and obj.ndim == 2:
            out.append(name)
    return sorted(out)


class EncodingReader:
    """Row blocks of one encoding of an open ``store.h5``."""

    def __init__(self, h5, name):
        if name not in list_encodings(h5):
            have = ", ".join(list_encodings(h5)) or "none"
            raise StoreError(f"the store has no encoding {name!r} (it has: {have})")
        self.name = name
        obj = h5["encodings/" + name]
        self.sparse = isinstance(obj, h5py.Group)
        if self.sparse:
            self._indptr = obj["indptr"][:]
            self._indices, self._data = obj["indices"], obj["data"]
            n = len(self._indptr) - 1
            shape, dim_attr = obj.attrs.get("shape"), obj.attrs.get("dim")
            if shape is not None:
                dim = int(shape[1])
            elif dim_attr is not None:
                dim = int(dim_attr)
            else:  # no shape attribute: the largest column index seen
                dim = int(self._indices[:].max(initial=-1)) + 1 if len(self._indices) else 0
            self.shape = (n, dim)
        else:
            self._dense = obj
            self.shape = tuple(int(s) for s in obj.shape)
        self.attrs = {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in obj.attrs.items()}
        self.dim = self.shape[1]
        self.block_rows = int(max(64, min(8192, BLOCK_BYTES // max(4 * self.dim, 1))))

    def read(self, a, b):
        """Rows ``a:b`` as float32 (dense array or CSR matrix)."""
        if not self.sparse:
            return np.asarray(self._dense[a:b], dtype=np.float32)
        import scipy.sparse as sp
        lo, hi = int(self._indptr[a]), int(self._indptr[b])
        indptr = self._indptr[a:b + 1] - lo
        return sp.csr_matrix((self._data[lo:hi].astype(np.float32), self._indices[lo:hi],
                              indptr), shape=(b - a, self.dim))

    def rows(self, idx):
        """The rows ``idx`` (sorted, unique), read as one covering slice."""
        idx = np.asarray(idx)
        if len(idx) == 0:
            return self.read(0, 0)
        block = self.read(int(idx[0]), int(idx[-1]) + 1)
        return block[idx - idx[0]]

    def blocks(self, idx, rng=None):
        """Yield ``(positions, X)`` over the rows ``idx`` (sorted), one block at a time.

        ``positions`` index into ``idx``.  With ``rng`` the blocks come in a random order and
        the rows of each block are shuffled (block-local shuffling: memory stays one block).
        """
        idx = np.asarray(idx)
        if len(idx) == 0:
            return
        # one block per aligned window of block_rows store rows (aligned windows also line
        # up with the row chunks of dense encodings)
        window = idx // self.block_rows
        cuts = np.concatenate([[0], np.flatnonzero(np.diff(window)) + 1, [len(idx)]])
        spans = list(zip(cuts[:-1].tolist(), cuts[1:].tolist()))
        if rng is not None:
            spans = [spans[i] for i in rng.permutation(len(spans))]
        for a, b in spans:
            pos = np.arange(a, b)
            X = self.rows(idx[a:b])
            if rng is not None:
                perm = rng.permutation(b - a)
                pos, X = pos[perm], X[perm]
            yield pos, X
