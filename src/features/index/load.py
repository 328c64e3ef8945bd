"""Opening a store's index for search: memory-mapped where FAISS allows, or copied into the
process's memory; each file checked against the manifest's record first
(``features.index.files``).

Mapped, the index costs the process no memory of its own (its pages are the file's, shared
and dropped under pressure), and a file truncated or rewritten in place under it can kill
the process with SIGBUS (``features.index.files`` narrows that to a few microseconds). A
copy costs the files' size in the process's own memory and is read once, from the
descriptors that were checked: nothing done to the files afterwards can fault it. The
Python API maps; ``features serve`` copies when the index fits its bound
(``features.serve.index_memory``).
"""
from __future__ import annotations

import faiss
import numpy as np

from ..exceptions import IndexDamaged, ParameterError, StoreError
from . import files as index_files
from .factory import IO_FLAGS, faiss_message
from .hamming import HammingFile
from .inverted import INVERTED_KIND, InvertedFile
from .layout import HAMMING_FILE, INDEX_FILE, INVERTED_FILE, REFINE_FILE, index_paths, index_record
from .params import apply_params, query_params
from .refine import RefinedIndex, RefineRows


def load_index(store, mmap=True):
    """The store's index, memory-mapped where FAISS allows (``mmap=False``: read into the
    process's memory); its files checked against the manifest's record
    (``features.index.files``: :class:`IndexDamaged` when one is not the recorded one).
    The index's ``files`` (:class:`~features.index.files.OpenIndexFiles`) keep them open;
    ``search_vectors`` checks that none was changed in place."""
    record = index_record(store.dir)
    for _ in range(3):
        try:
            return _load(store, record, mmap)
        except StoreError:
            # a build switched to a new generation, and removed this one, while it was
            # being opened: open the new one
            now = index_record(store.dir)
            if now == record:
                raise
            record = now
    return _load(store, record, mmap)


def _load(store, record, mmap):
    if (record or {}).get("kind") == INVERTED_KIND:
        return _load_inverted(store, record, mmap)
    paths = index_paths(store.dir, record)
    path = paths[INDEX_FILE]
    if not path.exists():
        missing = f" ({path} is missing)" if record else ""
        raise StoreError(f"{store.dir} has no search index{missing}; run "
                         f"`features index {store.dir}`")
    record = record or {}
    opened = index_files.OpenIndexFiles(store.dir, record)
    hint = index_files.rebuild_hint(store.dir)
    flags = [IO_FLAGS[record["io_flag"]]] if record.get("io_flag") in IO_FLAGS \
        else [faiss.IO_FLAG_MMAP_IFC, faiss.IO_FLAG_MMAP]
    if not mmap:
        flags = []
    error = index = None
    for flag in flags + [0]:
        try:
            if flag:
                index = faiss.read_index(str(path), flag)
            else:
                # a copy: read through the descriptor that was checked, not the path
                index = faiss.read_index(faiss.PyCallbackIOReader(opened.reader(INDEX_FILE)),
                                         0)
            break
        except RuntimeError as e:
            error = e
    if index is None:
        opened.check_all()   # IndexChanged: cut short while it was read
        raise IndexDamaged(f"{path} is damaged (FAISS cannot read it: "
                           f"{faiss_message(error)}); {hint}")
    (opened.mapped if flag else opened.copied).add(INDEX_FILE)
    if flag and not opened.is_open(INDEX_FILE):
        raise StoreError(f"{path} was replaced while it was opened")
    for what, value in (("dim", index.d), ("rows", index.ntotal)):
        if isinstance(record.get(what), int) and value != record[what]:
            raise IndexDamaged(f"{path} is damaged (its {what} is {value}, the manifest "
                               f"records {record[what]}); {hint}")
    if record.get("refine") == "sparse":
        rows = RefineRows(paths[REFINE_FILE], hint=hint, copy_from=None if mmap else opened)
        if mmap:
            opened.mapped.add(REFINE_FILE)
            if not opened.is_open(REFINE_FILE):
                raise StoreError(f"{rows.path} was replaced while it was opened")
        else:
            opened.copied.add(REFINE_FILE)
        rows.files = opened
        if rows.n_rows != store.n_images:
            raise IndexDamaged(f"{rows.path} holds {rows.n_rows} rows for {store.n_images} "
                               f"images; {hint}")
        if rows.dim != index.d:
            raise IndexDamaged(f"{rows.path} holds rows of {rows.dim} dimensions for an "
                               f"index of {index.d}; {hint}")
        index = RefinedIndex(index, rows, record.get("params", {}).get("k_factor", 100))
    # a file changed in place while it was read: the copy may hold parts of two files
    opened.check()
    _attach(index, opened)
    # the recorded defaults, whatever the file holds: `features index --nprobe` changes
    # them without rebuilding
    try:
        apply_params(index, record.get("params") or {}, record.get("factory"))
    except ParameterError as e:
        raise StoreError(f"{store.dir}/manifest.json records a search parameter the index "
                         f"does not take ({e}); run `features index {store.dir} --force`") \
            from None
    return index


def _load_inverted(store, record, mmap):
    """An inverted-file index (``index.inverted``, and its Hamming embedding
    ``index.hamming`` when it has one: ``index.hamming``), memory-mapped or copied, its
    files checked against the record and held open."""
    opened = index_files.OpenIndexFiles(store.dir, record)
    path = opened.paths[INVERTED_FILE]
    hint = index_files.rebuild_hint(store.dir)
    try:
        index = InvertedFile(path, hint=hint, copy_from=None if mmap else opened)
        if HAMMING_FILE in opened.paths:
            index.hamming = HammingFile(opened.paths[HAMMING_FILE], hint=hint,
                                        copy_from=None if mmap else opened)
    except BaseException:
        opened.close()
        raise
    for name in opened.paths:
        (opened.mapped if mmap else opened.copied).add(name)
    opened.check()
    for name in opened.paths:
        if mmap and not opened.is_open(name):
            raise StoreError(f"{opened.paths[name]} was replaced while it was opened")
    if index.hamming is not None and (index.hamming.n_rows != index.n_rows
                                      or index.hamming.d != index.d):
        raise IndexDamaged(f"{index.hamming.path} holds postings over {index.hamming.n_rows} "
                           f"images and {index.hamming.d} words for an inverted file of "
                           f"{index.n_rows} and {index.d}; {hint}")
    for what, value in (("dim", index.d), ("rows", index.ntotal)):
        if isinstance(record.get(what), int) and value != record[what]:
            raise IndexDamaged(f"{path} is damaged (its {what} is {value}, the manifest "
                               f"records {record[what]}); {hint}")
    if index.n_rows != store.n_images:
        raise IndexDamaged(f"{path} holds lists over {index.n_rows} images for "
                           f"{store.n_images}; {hint}")
    index.files = opened
    return index


def _attach(index, opened):
    """Keep the open files with the index: FAISS's own list of the objects an index
    depends on (its Python wrappers take no other attribute), or a RefinedIndex's."""
    if isinstance(index, RefinedIndex):
        index.files = opened
        return
    held = list(getattr(index, "referenced_objects", None) or [])
    index.referenced_objects = held + [opened]


def open_files(index):
    """The open files of an index ``load_index`` returned, or None."""
    if isinstance(index, (RefinedIndex, InvertedFile)):
        return index.files
    for held in getattr(index, "referenced_objects", None) or []:
        if isinstance(held, index_files.OpenIndexFiles):
            return held
    return None


def index_memory(index) -> str | None:
    """How an index ``load_index`` returned holds its files: "map" when one is mapped,
    "copy" when all were read into memory, None when unknown."""
    files = open_files(index)
    if files is None:
        return None
    return "map" if files.mapped else "copy"


def search_vectors(index, queries, k, *, nprobe=None, k_factor=None, what=None):
    """(scores, ids) of the k best rows per query; missing results have id -1. ``nprobe``,
    ``k_factor``: this search's instead of the index's own (ParameterError when the index
    has no such parameter; ``what`` names the index in that message). IndexChanged when a
    file of the index was changed in place since it was opened."""
    files = open_files(index)
    if files is not None:
        files.check()
    q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
    k = max(1, min(int(k), index.ntotal)) if index.ntotal else 1
    params, sparse_k_factor = query_params(index, nprobe, k_factor, what)
    if sparse_k_factor is not None:
        return index.search(q, k, params=params, k_factor=sparse_k_factor)
    if params is not None:
        return index.search(q, k, params=params)
    return index.search(q, k)
