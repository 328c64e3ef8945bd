"""The sparse refine stage of a compressed index: re-scoring its shortlist on the rows.

A compressed index (an IVF with PQ codes) finds the shortlist; the refine stage orders it
again by the true inner products with the encoding's own rows, kept in ``index.refine``
beside ``index.faiss``. tf-idf rows are sparse (about a quarter of 1000 words), so a row
stored as (column, value) pairs at half precision takes about 1 KB against 2 KB for
FAISS's half-precision refine codes, and its scores are those of the rows up to half
precision rounding, closer than 8-bit codes get (``features.index`` says why that
matters). Scoring a pair is one gather and one multiply: a shortlist of 1000 rows costs
a fraction of a millisecond (``ext/_refine.pyx``).

``index.refine``: a 64-byte header (magic, version, dimension, rows, stored values), then
``indptr`` (int64, one more than the store's images: row ``i`` is image ``i``, empty when
the image is not in the index), the columns (uint16) and the values (float16), all
little-endian. It is written from the parts of an index build (one part per run of
shards, see ``SparsePart``), streamed, and read memory-mapped.
"""
from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import numpy as np

from .._ext import load
from ..exceptions import IndexDamaged, ParameterError, StoreError
from ..store.atomic import atomic_file, atomic_path

MAX_DIM = 1 << 16         # columns are uint16
_MAGIC = b"FTREFINE"
_VERSION = 1
_HEADER = struct.Struct("<8sIIQQ")   # magic, version, dim, rows, values
_HEADER_BYTES = 64
_HALF_MAX = float(np.finfo(np.float16).max)


def _kernel():
    return load("_refine", "the sparse refine stage")


class SparsePart:
    """The rows of one part of an index build (rows ``start:stop`` of the store), written
    as three files beside ``prefix``: row lengths, columns and values."""

    def __init__(self, prefix, start, stop):
        self.prefix = Path(prefix)
        self.start, self.stop = int(start), int(stop)
        self.lengths = np.zeros(self.stop - self.start, np.int64)
        self._tmp = {s: atomic_path(self.prefix.with_suffix(s)) for s in (".cols", ".vals")}
        self._files = {s: open(p, "wb") for s, p in self._tmp.items()}

    def add(self, ids, x):
        """Rows ``ids`` (image numbers, increasing) with dense values ``x``."""
        if not np.isfinite(x).all():
            raise StoreError("the encoding has values that are not finite (NaN or "
                             "infinite): it cannot be indexed")
        if (np.abs(x) > _HALF_MAX).any():
            raise StoreError(f"the encoding has values up to {float(np.abs(x).max()):g}, "
                             f"beyond half precision: index it with another --index "
                             f"than a sparse refine stage")
        r, c = np.nonzero(x)
        self.lengths[np.asarray(ids) - self.start] = np.bincount(r, minlength=len(ids))
        self._files[".cols"].write(c.astype("<u2").tobytes())
        self._files[".vals"].write(x[r, c].astype("<f2").tobytes())

    def close(self):
        for f in self._files.values():
            f.close()
        np.save(self.prefix.with_suffix(".lengths.npy"), self.lengths)
        for s, tmp in self._tmp.items():
            os.replace(tmp, self.prefix.with_suffix(s))

    def discard(self):
        for f in self._files.values():
            f.close()
        for tmp in self._tmp.values():
            tmp.unlink(missing_ok=True)


def write_refine(out, parts, n_rows, dim):
    """Write ``index.refine`` from parts ``[(start, stop, prefix)]`` covering rows
    ``0:n_rows`` in order, streamed: memory holds one part's row lengths. ``dim`` is at
    most ``MAX_DIM`` (``index.build_index`` refuses wider encodings)."""
    parts = sorted(parts)
    at = 0
    for start, stop, _ in parts:
        if start != at:
            raise RuntimeError(f"the refine parts do not cover rows {at}:{start}")
        at = stop
    if at != n_rows:
        raise RuntimeError(f"the refine parts cover {at} rows of {n_rows}")
    nnz = sum(os.path.getsize(Path(p).with_suffix(".cols")) // 2 for _, _, p in parts)
    with atomic_file(out) as tmp, open(tmp, "wb") as f:
        f.write(_HEADER.pack(_MAGIC, _VERSION, dim, n_rows, nnz).ljust(_HEADER_BYTES, b"\0"))
        f.write(struct.pack("<q", 0))
        total = 0
        for _, _, p in parts:
            lengths = np.load(Path(p).with_suffix(".lengths.npy"))
            f.write((total + np.cumsum(lengths)).astype("<i8").tobytes())
            total += int(lengths.sum())
        if total != nnz:
            raise RuntimeError(f"the refine parts hold {nnz} values, their rows {total}")
        for suffix in (".cols", ".vals"):
            for _, _, p in parts:
                with open(Path(p).with_suffix(suffix), "rb") as src:
                    shutil.copyfileobj(src, f, 1 << 22)


class RefineRows:
    """``index.refine`` memory-mapped: ``indptr``, ``columns``, ``values`` (as the uint16
    bits of float16). :class:`IndexDamaged` for a file that is not one (its message ends
    with ``hint`` when one is given). ``files``: the index's open files
    (``features.index.files.OpenIndexFiles``), checked before the rows are read."""

    files = None

    def __init__(self, path, hint=None):
        path = Path(path)
        self.path = path
        damaged = f"{path} is damaged"
        end = f"; {hint}" if hint else ""
        try:
            size = path.stat().st_size
            with open(path, "rb") as f:
                raw = f.read(_HEADER.size)
        except FileNotFoundError:
            raise IndexDamaged(f"{path} is missing{end}") from None
        if len(raw) < _HEADER.size:
            raise IndexDamaged(f"{damaged} (too short){end}")
        magic, version, dim, n_rows, nnz = _HEADER.unpack(raw)
        if magic != _MAGIC or version != _VERSION:
            raise IndexDamaged(f"{damaged} (not a refine file of this version){end}")
        expect = _HEADER_BYTES + 8 * (n_rows + 1) + 4 * nnz
        if size != expect:
            raise IndexDamaged(f"{damaged} ({size} bytes, its header says {expect}){end}")
        self.dim, self.n_rows, self.nnz = int(dim), int(n_rows), int(nnz)
        at = _HEADER_BYTES
        self.indptr = np.memmap(path, "<i8", "r", at, (n_rows + 1,))
        # the kernel reads rows between these pointers: checked once here (10 MB at 1.28M
        # images, a few ms), so a damaged file is refused rather than read out of bounds
        if (self.indptr[0] != 0 or self.indptr[-1] != nnz
                or np.any(np.diff(self.indptr) < 0)):
            raise IndexDamaged(f"{damaged} (its row pointers do not increase from 0 to the "
                               f"{nnz} values){end}")
        at += 8 * (n_rows + 1)
        self.columns = np.memmap(path, "<u2", "r", at, (nnz,)) if nnz else np.zeros(0, "<u2")
        at += 2 * nnz
        self.values = np.memmap(path, "<u2", "r", at, (nnz,)) if nnz else np.zeros(0, "<u2")

    def scores(self, queries, ids, n_threads=1, simd=True) -> np.ndarray:
        """Inner products (float32, n x m) of ``queries`` (n x dim) with rows ``ids``
        (n x m image numbers; -1: none, scored -inf). ``simd``: the vector path where the
        CPU has it (False: one pair at a time)."""
        queries = np.ascontiguousarray(queries, np.float32)
        ids = np.ascontiguousarray(ids, np.int64)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ParameterError(f"queries must be n x {self.dim}, got shape {queries.shape}")
        if ids.ndim != 2 or len(ids) != len(queries):
            raise ParameterError(f"ids must be {len(queries)} x m, got shape {ids.shape}")
        if ids.size and int(ids.max()) >= self.n_rows:
            raise ParameterError(f"ids must be below {self.n_rows}, got {int(ids.max())}")
        if self.files is not None:
            self.files.check()
        out = np.empty(ids.shape, np.float32)
        _kernel().sparse_scores(queries, self.indptr, self.columns, self.values, ids, out,
                                int(n_threads), bool(simd))
        return out

    def row(self, i) -> tuple[np.ndarray, np.ndarray]:
        """(columns, float32 values) of row ``i``."""
        if self.files is not None:
            self.files.check()
        a, b = int(self.indptr[i]), int(self.indptr[i + 1])
        columns = np.asarray(self.columns[a:b], np.int64)
        values = np.asarray(self.values[a:b]).view(np.float16).astype(np.float32)
        keep = columns < self.dim        # as the kernel: columns beyond it count as zeros
        return columns[keep], values[keep]


class RefinedIndex:
    """A FAISS index whose shortlist of ``k_factor`` times k is re-scored on the rows of
    ``index.refine``; answers ``search`` as a FAISS index does. Threads: FAISS's."""

    files = None      # the open files (features.index.files), set by load_index

    def __init__(self, base, rows: RefineRows, k_factor):
        self.base = base
        self.rows = rows
        self.k_factor = float(k_factor)

    @property
    def ntotal(self):
        return self.base.ntotal

    @property
    def d(self):
        return self.base.d

    def search(self, queries, k, params=None, k_factor=None):
        """``params``: FAISS's search parameters of the base index; ``k_factor``: this
        search's instead of the index's own."""
        import faiss
        queries = np.ascontiguousarray(queries, np.float32)
        k = int(k)
        k_factor = self.k_factor if k_factor is None else float(k_factor)
        n_short = max(k, min(int(self.base.ntotal), int(round(k * k_factor))))
        _, ids = self.base.search(queries, n_short, params=params)
        scores = self.rows.scores(queries, ids, faiss.omp_get_max_threads())
        top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        scores = np.take_along_axis(scores, top, 1)
        ids = np.take_along_axis(ids, top, 1)
        ids[~np.isfinite(scores)] = -1
        return scores, ids
