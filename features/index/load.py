"""Opening a store's index for search: memory-mapped where FAISS allows."""
from __future__ import annotations

import faiss
import numpy as np

from ..exceptions import StoreError
from .builder import index_record
from .factory import IO_FLAGS, faiss_message
from .layout import INDEX_FILE, REFINE_FILE
from .refine import RefinedIndex, RefineRows


def load_index(store, mmap=True):
    """The store's index, memory-mapped where FAISS allows."""
    path = store.dir / INDEX_FILE
    if not path.exists():
        raise StoreError(f"{store.dir} has no search index; run `features index {store.dir}`")
    record = index_record(store.dir) or {}
    flags = [IO_FLAGS[record["io_flag"]]] if record.get("io_flag") in IO_FLAGS \
        else [faiss.IO_FLAG_MMAP_IFC, faiss.IO_FLAG_MMAP]
    if not mmap:
        flags = [0]
    error = index = None
    for flag in flags + [0]:
        try:
            index = faiss.read_index(str(path), flag)
            break
        except RuntimeError as e:
            error = e
    if index is None:
        raise StoreError(f"{path} is damaged (FAISS cannot read it: {faiss_message(error)}); "
                         f"run `features index {store.dir}` to rebuild it")
    if record.get("refine") == "sparse":
        try:
            rows = RefineRows(store.dir / REFINE_FILE)
        except StoreError as e:
            raise StoreError(f"{e}; run `features index {store.dir}` to rebuild it") from None
        if rows.n_rows != store.n_images:
            raise StoreError(f"{rows.path} holds {rows.n_rows} rows for {store.n_images} "
                             f"images; run `features index {store.dir}` to rebuild it")
        index = RefinedIndex(index, rows, record.get("params", {}).get("k_factor", 100))
    return index


def search_vectors(index, queries, k):
    """(scores, ids) of the k best rows per query; missing results have id -1."""
    q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
    k = max(1, min(int(k), index.ntotal)) if index.ntotal else 1
    return index.search(q, k)
