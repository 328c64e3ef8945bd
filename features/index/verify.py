"""The index half of ``features verify``: the index readable (memory-mapped, as a search
opens it), one vector per image that is ok (images without features are left out), ids in
range; its sparse refine stage (``index.refine``) of the recorded size, one row per image,
nonempty exactly for the indexed images, columns within the dimension and values finite."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..exceptions import StoreError, first_line
from .builder import index_record
from .factory import IO_FLAGS
from .layout import INDEX_FILE, REFINE_FILE
from .refine import RefineRows


def check_index(directory, ok_with_features, bad, checked):
    """Check ``index.faiss`` and ``index.refine`` of a store against the images that
    should be in it (``ok_with_features``; None: unknown), reporting to ``bad``."""
    directory = Path(directory)
    path = directory / INDEX_FILE
    if not path.exists():
        return
    try:
        record = index_record(directory) or {}
    except StoreError:       # reported as the manifest's damage
        record = {}
    try:
        import faiss
        # mapped, not read: the codes of a large index would take gigabytes of memory
        index = faiss.read_index(str(path), IO_FLAGS.get(record.get("io_flag"), 0))
    except (RuntimeError, OSError) as e:
        bad(path, f"unreadable ({first_line(e)})")
        return
    if record.get("refine") == "sparse":
        check_refine(directory, record, ok_with_features, bad)
    checked["index_vectors"] = int(index.ntotal)
    if ok_with_features is None:
        return
    if index.ntotal != len(ok_with_features):
        bad(path, f"holds {index.ntotal} vectors, the store {len(ok_with_features)} images "
                  f"with features")
        return
    try:
        ids = faiss.vector_to_array(index.id_map) if hasattr(index, "id_map") else None
    except (RuntimeError, AttributeError):
        ids = None
    if ids is not None and not np.array_equal(np.sort(ids), ok_with_features):
        bad(path, "its ids are not the images with features")


def check_refine(directory, record, ok_with_features, bad, block=1 << 24):
    path = directory / REFINE_FILE
    try:
        rows = RefineRows(path)
    except StoreError as e:
        bad(path, str(e).replace(f"{path} is ", "").replace(f"{path} ", ""))
        return
    size = path.stat().st_size
    if size != record.get("refine_bytes"):
        bad(path, f"{size} bytes, the manifest records {record.get('refine_bytes')}")
    if record.get("dim") is not None and rows.dim != record["dim"]:
        bad(path, f"rows of {rows.dim} dimensions for an index of {record['dim']}")
    if ok_with_features is not None:
        # the row pointers themselves were checked by RefineRows
        stored = np.flatnonzero(np.diff(rows.indptr) > 0)
        if not np.array_equal(stored, ok_with_features):
            bad(path, "its rows are not those of the images with features")
    for a in range(0, rows.nnz, block):
        if int(rows.columns[a:a + block].max()) >= rows.dim:
            bad(path, f"a column beyond the dimension {rows.dim}")
            return
        if not np.isfinite(np.asarray(rows.values[a:a + block]).view(np.float16)).all():
            bad(path, "values that are not finite")
            return
