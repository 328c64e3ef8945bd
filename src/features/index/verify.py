"""The index half of ``features verify``: each index file the size and SHA-256 the manifest
records (every byte read: ``load_index`` hashes only files of at most
``files.HASH_AT_OPEN`` bytes); the index readable (memory-mapped, as a search opens it),
of the recorded dimension, one vector per image that is ok (images without features are
left out), ids in range; its sparse refine stage (``index.refine``) one row per image,
nonempty exactly for the indexed images, columns within the dimension and values finite."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..exceptions import StoreError, first_line
from .builder import index_record
from .factory import IO_FLAGS
from .files import file_problem, recorded
from .hamming import HammingFile
from .inverted import INVERTED_KIND, InvertedFile
from .layout import HAMMING_FILE, INDEX_FILE, INVERTED_FILE, REFINE_FILE, index_paths
from .refine import RefineRows


def check_index(directory, ok_with_features, bad, checked):
    """Check ``index.faiss`` and ``index.refine`` of a store against the manifest's record
    of them and the images that should be in the index (``ok_with_features``; None:
    unknown), reporting to ``bad``."""
    directory = Path(directory)
    try:
        record = index_record(directory)
    except StoreError:       # reported as the manifest's damage
        record = None
    try:
        paths = index_paths(directory, record)
    except StoreError as e:
        bad(directory / "manifest.json", first_line(e, None))
        return
    if (record or {}).get("kind") == INVERTED_KIND:
        check_inverted(paths[INVERTED_FILE], record, ok_with_features, bad, checked)
        if HAMMING_FILE in paths:
            check_hamming(paths[HAMMING_FILE], record, ok_with_features, bad)
        return
    path = paths[INDEX_FILE]
    if not record and not path.exists():
        return
    record = record or {}
    damaged = set()
    for name, p in paths.items():
        problem = _file_problem(p, record, name)
        if problem:
            bad(p, problem)
            damaged.add(name)
    if INDEX_FILE in damaged:
        return               # not handed to FAISS: a damaged header can crash it
    try:
        import faiss
        # mapped, not read: the codes of a large index would take gigabytes of memory
        index = faiss.read_index(str(path), IO_FLAGS.get(record.get("io_flag"), 0))
    except (RuntimeError, OSError) as e:
        bad(path, f"unreadable ({first_line(e)})")
        return
    # the refine stage's structure is checked however damaged: RefineRows reads nothing
    # its header does not vouch for
    if record.get("refine") == "sparse" and paths[REFINE_FILE].exists():
        check_refine(paths[REFINE_FILE], record, ok_with_features, bad)
    checked["index_vectors"] = int(index.ntotal)
    if isinstance(record.get("dim"), int) and index.d != record["dim"]:
        bad(path, f"vectors of {index.d} dimensions, the manifest records {record['dim']}")
        return
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


def check_inverted(path, record, ok_with_features, bad, checked):
    """An inverted-file index: the size and SHA-256 recorded, then its structure (every
    list's image numbers in range and increasing, finite weights, the images with features
    indexed), unless the file is already known damaged."""
    problem = _file_problem(path, record, INVERTED_FILE)
    if problem:
        bad(path, problem)
        return
    try:
        inverted = InvertedFile(path)
    except StoreError as e:
        bad(path, str(e).replace(f"{path} is ", "").split(";")[0])
        return
    checked["index_vectors"] = int(inverted.ntotal)
    if isinstance(record.get("dim"), int) and inverted.d != record["dim"]:
        bad(path, f"lists of {inverted.d} words, the manifest records {record['dim']}")
    for problem in inverted.check_structure(ok_with_features):
        bad(path, problem)


def check_hamming(path, record, ok_with_features, bad):
    """An inverted file's Hamming embedding: the size and SHA-256 recorded, then its
    structure (image numbers in range and not decreasing within a list, signatures of the
    recorded bits, finite values, the images with features indexed)."""
    problem = _file_problem(path, record, HAMMING_FILE)
    if problem:
        bad(path, problem)
        return
    try:
        hamming = HammingFile(path)
    except StoreError as e:
        bad(path, str(e).replace(f"{path} is ", "").split(";")[0])
        return
    if isinstance(record.get("dim"), int) and hamming.d != record["dim"]:
        bad(path, f"lists of {hamming.d} words, the manifest records {record['dim']}")
    if record.get("hamming") != hamming.bits:
        bad(path, f"signatures of {hamming.bits} bits, the manifest records "
                  f"{record.get('hamming')}")
    for problem in hamming.check_structure(ok_with_features):
        bad(path, problem)


def check_refine(path, record, ok_with_features, bad, block=1 << 22):
    try:
        rows = RefineRows(path)
    except StoreError as e:
        bad(path, str(e).replace(f"{path} is ", "").replace(f"{path} ", ""))
        return
    if record.get("dim") is not None and rows.dim != record["dim"]:
        bad(path, f"rows of {rows.dim} dimensions for an index of {record['dim']}")
    if ok_with_features is not None:
        # the row pointers themselves were checked by RefineRows
        stored = np.flatnonzero(np.diff(rows.indptr) > 0)
        if not np.array_equal(stored, ok_with_features):
            bad(path, "its rows are not those of the images with features")
    if not rows.nnz:
        return
    for columns in _read_blocks(rows.columns, block):
        if int(columns.max()) >= rows.dim:
            bad(path, f"a column beyond the dimension {rows.dim}")
            return
    for values in _read_blocks(rows.values, block):
        if not np.isfinite(values.view(np.float16)).all():
            bad(path, "values that are not finite")
            return


def _read_blocks(mapped, block):
    """A memory-mapped array's values, ``block`` at a time, read from its file: the pages
    of a mapping stay in the process's resident memory once touched (a whole index.refine,
    about 1 KB per image), a read's buffer does not."""
    with open(mapped.filename, "rb") as f:
        for a in range(0, len(mapped), block):
            f.seek(mapped.offset + a * mapped.itemsize)
            yield np.fromfile(f, mapped.dtype, min(block, len(mapped) - a))


def _file_problem(path, record, name):
    """What is wrong with one index file against its record (size, SHA-256), "missing",
    "unreadable (...)", or None."""
    try:
        with open(path, "rb") as f:
            return file_problem(f, recorded(record, name))
    except FileNotFoundError:
        return "missing"
    except OSError as e:
        return f"unreadable ({first_line(e)})"
