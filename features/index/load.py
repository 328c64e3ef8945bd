"""Opening a store's index for search: memory-mapped where FAISS allows."""
from __future__ import annotations

import faiss
import numpy as np

from ..exceptions import ParameterError, StoreError
from .factory import IO_FLAGS, faiss_message
from .layout import INDEX_FILE, REFINE_FILE, index_record
from .params import apply_params, query_params
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
    # the recorded defaults, whatever the file holds: `features index --nprobe` changes
    # them without rebuilding
    try:
        apply_params(index, record.get("params") or {}, record.get("factory"))
    except ParameterError as e:
        raise StoreError(f"{store.dir}/manifest.json records a search parameter the index "
                         f"does not take ({e}); run `features index {store.dir} --force`") \
            from None
    return index


def search_vectors(index, queries, k, *, nprobe=None, k_factor=None, what=None):
    """(scores, ids) of the k best rows per query; missing results have id -1. ``nprobe``,
    ``k_factor``: this search's instead of the index's own (ParameterError when the index
    has no such parameter; ``what`` names the index in that message)."""
    q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
    k = max(1, min(int(k), index.ntotal)) if index.ntotal else 1
    params, sparse_k_factor = query_params(index, nprobe, k_factor, what)
    if sparse_k_factor is not None:
        return index.search(q, k, params=params, k_factor=sparse_k_factor)
    if params is not None:
        return index.search(q, k, params=params)
    return index.search(q, k)
