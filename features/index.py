"""FAISS inner-product index over the L2-normalized encodings (cosine similarity).

Row ids of the index are image numbers in the store; failed images are left out.
Rows are densified a block at a time, so building never holds the whole matrix twice.
"""
from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np

from .store import OK, Store, StoreError, atomic_file

INDEX_FILE = "index.faiss"


def build_index(store: Store, encoding="bovw", block=16384) -> Path:
    csr = store.encoding(encoding)
    status = store.column("status")
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(csr.n_cols))
    for start in range(0, csr.n_rows, block):
        stop = min(start + block, csr.n_rows)
        ids = np.flatnonzero(status[start:stop] == OK)
        if len(ids):
            x = csr.to_dense(start, stop)[ids]
            index.add_with_ids(np.ascontiguousarray(x), (ids + start).astype(np.int64))
    out = store.dir / INDEX_FILE
    with atomic_file(out) as tmp:
        try:
            faiss.write_index(index, str(tmp))
        except RuntimeError as e:
            # FAISS reports a failed write (full disk, read-only folder) as a RuntimeError
            # with the C library's message: give it back its errno.
            raise OSError(_errno_in(str(e)), f"cannot write the index: {e}", str(out)) from None
    return out


def _errno_in(text):
    import errno
    import os
    for number in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EIO):
        if os.strerror(number) in text:
            return number
    return errno.EIO


def load_index(store: Store):
    path = store.dir / INDEX_FILE
    if not path.exists():
        raise StoreError(f"{store.dir} has no search index; run `features index {store.dir}`")
    try:
        return faiss.read_index(str(path))
    except RuntimeError:
        raise StoreError(f"{path} is damaged (FAISS cannot read it); run "
                         f"`features index {store.dir}` to rebuild it") from None


def search_vectors(index, queries, k):
    """(scores, ids) of the k best rows per query; missing results have id -1."""
    q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
    k = max(1, min(int(k), index.ntotal)) if index.ntotal else 1
    return index.search(q, k)
