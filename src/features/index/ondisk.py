"""FAISS's on-disk format, written by us: an index filled part by part and merged on disk.

The parts of an index that are filled shard by shard and merged on disk: the inverted lists
of an IVF (merged with FAISS's ``OnDiskInvertedLists``) and the flat codes of the index that
holds one code per vector (the refine stage, or the whole index when it is flat), streamed
into the index file with the ids: byte for byte the file FAISS writes for the same index
filled in memory. Anything else is filled in memory. Also the header of an index file, read
without FAISS.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import struct
import sys

import faiss
import numpy as np

from ..exceptions import StoreError
from ..store.atomic import atomic_file

PART_SHIFT = 40   # ids in a part's lists: part number << 40 | position in the part
_PLAIN_IVF = ("IndexIVFFlat", "IndexIVFPQ", "IndexIVFScalarQuantizer", "IndexIVF")
_PLAIN_FLAT = ("IndexFlat", "IndexFlatIP", "IndexFlatL2", "IndexScalarQuantizer")


def split_index(index):
    """(ivf, flat) of an ``IndexIDMap`` whose inner index is an IVF, a flat-codes index, or
    an IVF refined by a flat-codes index; None when the index is not of these kinds."""
    outer = faiss.downcast_index(index)
    if not isinstance(outer, faiss.IndexIDMap) or isinstance(outer, faiss.IndexIDMap2):
        return None
    inner = faiss.downcast_index(outer.index)
    ivf = flat = None
    if isinstance(inner, faiss.IndexRefine):
        ivf = faiss.downcast_index(inner.base_index)
        flat = faiss.downcast_index(inner.refine_index)
    elif isinstance(inner, faiss.IndexIVF):
        ivf = inner
    elif isinstance(inner, faiss.IndexFlatCodes):
        flat = inner
    else:
        return None
    if ivf is not None:
        # fast-scan and PQ-refined IVFs keep codes outside plain inverted lists
        if type(ivf).__name__ not in _PLAIN_IVF or not isinstance(
                faiss.downcast_InvertedLists(ivf.invlists), faiss.ArrayInvertedLists):
            return None
    # the flat codes must end the flat index's serialization (an IndexPQ's do not)
    if flat is not None and type(flat).__name__ not in _PLAIN_FLAT:
        return None
    if isinstance(inner, faiss.IndexRefine) and ivf is None:
        return None
    return ivf, flat


def merge_on_disk(trained_path, prefixes, counts, work, out):
    """Write the merged index to ``out``, one self-contained FAISS file, without holding its
    vectors: the parts' inverted lists are merged on disk (FAISS's ``OnDiskInvertedLists``
    over memory-mapped part lists, into ``work``), then streamed list by list into the
    file, followed by the flat codes and the ids streamed from the part files.
    Memory: the trained index and one inverted list."""
    skeleton = faiss.read_index(str(trained_path))
    ivf, flat = split_index(skeleton)
    outer = faiss.downcast_index(skeleton)
    inner = faiss.downcast_index(outer.index)
    refined = isinstance(inner, faiss.IndexRefine)
    n_vectors = sum(counts)
    outer.ntotal = inner.ntotal = n_vectors
    if flat is not None:
        flat.ntotal = n_vectors
    lists = None
    if ivf is not None:
        ivf.ntotal = n_vectors
        empty_ivf = faiss.serialize_index(ivf).tobytes()
        lists = _merged_lists(ivf, prefixes, work / "merged.ivfdata", n_vectors)
    raw = faiss.serialize_index(skeleton).tobytes()
    # The serialized skeleton holds empty vectors where the streams go: the IVF's inverted
    # lists (last in an IVF's serialization), then at the end [flat codes: size 0]
    # [k_factor, if refined] [id_map: size 0].
    tail = b""
    if flat is not None:
        tail = struct.pack("<Q", 0) + (struct.pack("<f", inner.k_factor) if refined else b"")
    tail += struct.pack("<Q", 0)
    if not raw.endswith(tail):
        raise RuntimeError("unexpected layout of a serialized FAISS index")
    head, middle = raw[:len(raw) - len(tail)], b""
    if ivf is not None:
        empty_lists = (b"ilar" + struct.pack("<QQ", ivf.nlist, ivf.code_size) + b"sprs"
                       + struct.pack("<Q", 0))
        at = head.find(empty_ivf)
        if (not empty_ivf.endswith(empty_lists) or at < 0
                or head.find(empty_ivf, at + 1) >= 0):
            raise RuntimeError("unexpected layout of a serialized FAISS IVF index")
        cut = at + len(empty_ivf)
        head, middle = head[:cut - len(empty_lists)], head[cut:]
    with atomic_file(out) as tmp, open(tmp, "wb") as f:
        f.write(head)
        if lists is not None:
            starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
            _write_lists(f, lists, ivf.nlist, ivf.code_size, starts)
            del lists
        f.write(middle)
        if flat is not None:
            # IndexFlat counts its vector in floats (its legacy xb), the others in bytes
            unit = 4 if isinstance(flat, faiss.IndexFlat) else 1
            f.write(struct.pack("<Q", n_vectors * flat.code_size // unit))
            for p in prefixes:
                with open(p.with_suffix(".codes"), "rb") as src:
                    shutil.copyfileobj(src, f, 1 << 22)
            if refined:
                f.write(struct.pack("<f", inner.k_factor))
        f.write(struct.pack("<Q", n_vectors))
        for p in prefixes:
            f.write(np.load(p.with_suffix(".ids.npy")).astype("<i8").tobytes())


def errno_in(text):
    """The errno a FAISS message names (its C library's text), EIO if none."""
    for number in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EIO):
        if os.strerror(number) in text:
            return number
    return errno.EIO


def _merged_lists(ivf, prefixes, path, n_vectors):
    """The parts' inverted lists merged into one ``OnDiskInvertedLists`` file."""
    parts = [faiss.read_index(str(p.with_suffix(".ivf")), faiss.IO_FLAG_MMAP) for p in prefixes]
    sources = faiss.InvertedListsPtrVector()
    for part in parts:
        sources.push_back(faiss.extract_index_ivf(part).invlists)
    merged = faiss.OnDiskInvertedLists(ivf.nlist, ivf.code_size, str(path))
    with _quiet_stdout():  # FAISS prints each resize of the file
        # no shift_ids: FAISS 1.15 shifts each part by the wrong count; the ids carry their
        # part number instead (see fill_part)
        total = merged.merge_from_multiple(sources.data(), sources.size(), False)
    if total != n_vectors:
        raise RuntimeError(f"merged {total} vectors, expected {n_vectors}")
    merged.parts = parts  # the part lists stay mapped while the merged ones are read
    return merged


def _write_lists(f, lists, nlist, code_size, starts):
    """FAISS's serialization of ``ArrayInvertedLists`` ("ilar", all sizes, then each
    list's codes and ids), one list at a time from the on-disk lists; ids become positions
    in the whole index (``starts``: the first position of each part)."""
    sizes = np.array([lists.list_size(i) for i in range(nlist)], "<u8")
    f.write(b"ilar" + struct.pack("<QQ", nlist, code_size) + b"full")
    f.write(struct.pack("<Q", nlist) + sizes.tobytes())
    for i, n in enumerate(sizes.tolist()):
        if n:
            f.write(faiss.rev_swig_ptr(lists.get_codes(i), n * code_size).tobytes())
            ids = faiss.rev_swig_ptr(lists.get_ids(i), n)
            ids = starts[ids >> PART_SHIFT] + (ids & ((1 << PART_SHIFT) - 1))
            f.write(ids.astype("<i8").tobytes())


@contextlib.contextmanager
def _quiet_stdout():
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


_HEADER = struct.Struct("<4sIqqq?I")  # fourcc, d, ntotal, 2 dummies, is_trained, metric


def index_header(path) -> dict:
    """Dimension, vector count and outer type of a FAISS index file, from its first bytes."""
    with open(path, "rb") as f:
        raw = f.read(_HEADER.size + 4)
    if len(raw) < _HEADER.size:
        raise StoreError(f"{path} is not a FAISS index (too short)")
    fourcc, d, ntotal, _, _, trained, metric = _HEADER.unpack_from(raw)
    if not fourcc.isalnum() or ntotal < 0:
        raise StoreError(f"{path} is not a FAISS index")
    info = {"type": fourcc.decode("ascii"), "dim": int(d), "ntotal": int(ntotal),
            "metric": {0: "inner product", 1: "L2"}.get(metric, str(metric))}
    if metric <= 1 and len(raw) >= _HEADER.size + 4:
        info["inner_type"] = raw[_HEADER.size:_HEADER.size + 4].decode("ascii", "replace")
    return info
