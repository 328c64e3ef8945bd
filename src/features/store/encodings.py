"""The one reader and writer of the encoding layout of ``store.h5``.

An encoding is ``encodings/NAME``, in one of two layouts:

======  =========================================================  ==========================
layout  datasets                                                   written for
======  =========================================================  ==========================
csr     group: ``indptr`` (int64, rows + 1), ``indices`` (int32),  ``bovw``, ``bovw_counts``,
        ``data`` (float32 or int32); attribute ``shape``           ``spm``
        (rows, dim)
dense   a 2-D (rows, dim) dataset, float16 or float32, chunked by  ``vlad``, ``fisher``
        rows
======  =========================================================  ==========================

Either may be an HDF5 virtual dataset over per-shard files (``encodings/NAME/shard-*.h5``,
what ``features aggregate`` writes). Each carries its parameters as attributes: ``method``,
``params`` (JSON), ``dim``, ``dtype``, ``layout`` and the method's own; ``models`` (JSON:
model name -> checksum) names the models it was computed with. ``encodings/idf`` (float32,
one weight per word) is not an encoding but the word weights of ``bovw``.

Failed images and images without features have an all-zero row (an empty CSR row).

Written here, and nowhere else: :func:`write_csr` (a whole small encoding: a shard's word
counts, a shard of ``features aggregate``), :class:`CSRWriter` and :func:`create_dense`
(``store.h5``'s, a block of rows at a time; :mod:`.write` lists them with the other parts
of the layout), :func:`add_encoding` (virtual over the shards of ``features aggregate``).
Read by :class:`EncodingRows` (blocks as dense arrays or SciPy CSR matrices, single rows,
shuffled blocks; ``Store.encoding`` and ``read_encoding`` of :mod:`.reader` read through
it), and :func:`read_csr` for a shard's word counts;
:func:`encoding_attrs` and :func:`encoding_info` read what describes them, not the rows.
"""
from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np

from ..encodings.bovw import CSR
from ..exceptions import ParameterError, StoreError
from .chunks import compress_chunk, filters_handled
from .confined import open_confined
from .layout import COMPRESS, ENCODING_CHUNK, ENCODINGS_DIR, chunked, virtual_concat

# the default chunk of a dense encoding: rows of about 1 MB, read a chunk at a time
DENSE_CHUNK_BYTES = 1 << 20


# ---------------------------------------------------------------------------- writers
def write_csr(group, csr, **attrs):
    """A whole CSR encoding (a shard's word counts or rows: small; a ``CSR`` or a
    ``scipy.sparse`` CSR matrix) as the datasets of ``group``, compressed in chunks of 64k
    values, with ``attrs``."""
    shape = csr.shape if hasattr(csr, "shape") else (csr.n_rows, csr.n_cols)
    group.create_dataset("indptr", data=np.asarray(csr.indptr, np.int64))
    chunked(group, "indices", np.asarray(csr.indices, np.int32), 1 << 16)
    chunked(group, "data", csr.data, 1 << 16)
    group.attrs["shape"] = tuple(int(v) for v in shape)
    for k, v in attrs.items():
        group.attrs[k] = v


class CSRWriter:
    """A CSR encoding ``parent[name]`` of ``n_rows`` x ``dim`` written a block of rows at a
    time, so that memory stays one block: ``indptr`` is sized up front, ``indices`` and
    ``data`` grow in compressed chunks of ``ENCODING_CHUNK`` values (a key query reads one
    row, and small chunks keep that read small). ``attrs`` go on the group.

    ``same_rows_as``: another writer of the same rows (``bovw_counts`` beside ``bovw``):
    its ``indptr`` and ``indices`` are this group's too (hard links, written once), and
    each :meth:`append` here must give the rows the other writer was given last.
    ``threads``: the threads that compress the chunks (see :class:`_ChunkAppender`)."""

    def __init__(self, parent, name, n_rows, dim, dtype=np.float32, *, same_rows_as=None,
                 threads=1, **attrs):
        n_rows, dim = int(n_rows), int(dim)
        if n_rows < 0 or dim < 0:
            raise ParameterError(f"a CSR encoding of {n_rows} x {dim}")
        if same_rows_as is not None and (same_rows_as.n_rows, same_rows_as.dim) != (n_rows,
                                                                                     dim):
            raise ParameterError(f"a CSR encoding of {n_rows} x {dim} cannot share the rows "
                                 f"of one of {same_rows_as.n_rows} x {same_rows_as.dim}")
        g = parent.create_group(name)
        self._pool = ThreadPoolExecutor(threads) if threads > 1 else None
        self.twin = same_rows_as
        if same_rows_as is None:
            g.create_dataset("indptr", data=np.zeros(n_rows + 1, np.int64))
            self._indices = _ChunkAppender(_csr_values(g, "indices", np.int32), self._pool)
        else:
            g["indptr"] = same_rows_as.group["indptr"]
            g["indices"] = same_rows_as.group["indices"]
            self._indices = None
        self._data = _ChunkAppender(_csr_values(g, "data", dtype), self._pool)
        g.attrs["shape"] = (n_rows, dim)
        for k, v in attrs.items():
            g.attrs[k] = v
        self.group, self.n_rows, self.dim = g, n_rows, dim
        self.row = self.nnz = 0
        self.last_rows = None     # (first row, indptr, indices) of the last append, for a twin

    def append(self, indptr, indices, data):
        """The next rows, as CSR arrays of their own: ``indptr`` starts at 0 and has one
        more entry than the rows."""
        indptr = np.asarray(indptr, np.int64)
        indices, data = np.asarray(indices), np.asarray(data)
        m = len(indptr) - 1
        if m < 0 or indptr[0] != 0 or not len(indices) == len(data) == indptr[-1]:
            raise ParameterError(f"not CSR rows: indptr from {indptr[:1]} to {indptr[-1:]}, "
                                 f"{len(indices)} indices, {len(data)} values")
        if self.row + m > self.n_rows:
            raise ParameterError(f"{self.row + m} rows for an encoding of {self.n_rows}")
        if len(indices) and (indices.min() < 0 or indices.max() >= self.dim):
            raise ParameterError(f"columns {indices.min()}..{indices.max()} for an encoding "
                                 f"of {self.dim}")
        if self.twin is None:
            self.group["indptr"][self.row:self.row + m + 1] = indptr + self.nnz
            self._indices.append(indices)
            self.last_rows = (self.row, indptr, indices)
        else:
            last = self.twin.last_rows
            if last is None or last[0] != self.row or not (
                    np.array_equal(last[1], indptr) and np.array_equal(last[2], indices)):
                raise ParameterError(f"{self.group.name} shares the rows of "
                                     f"{self.twin.group.name}: append the same rows to both, "
                                     f"to that one first")
        self._data.append(data)
        self.row += m
        self.nnz += len(indices)

    def close(self):
        """Write the last chunks; check that every row was written."""
        for appender in (self._indices, self._data):
            if appender is not None:
                appender.close()
        if self._pool is not None:
            self._pool.shutdown()
        if self.row != self.n_rows:
            raise StoreError(f"{self.group.name} holds {self.row} of its {self.n_rows} rows")


def _csr_values(group, name, dtype):
    return group.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dtype,
                                chunks=(ENCODING_CHUNK,), **COMPRESS)


class _ChunkAppender:
    """Values appended to a growable 1-D dataset of compressed chunks, the whole chunks
    compressed here and written as they are (HDF5's direct chunk write), the last partial
    one at :meth:`close`.

    HDF5 compresses a dataset's chunks one after another in the writing thread; the merge
    of a big collection spent most of its time there. Here :mod:`.chunks` compresses them
    (the dataset's filters, a faster deflate), by a pool of threads if one is given (the
    deflate releases the GIL): the chunks of a block are written at the next append, so
    the caller reads and weighs the next block while they are compressed. A dataset with
    any other filters is written through HDF5."""

    def __init__(self, dataset, pool=None):
        self.dataset, self.pool = dataset, pool
        self.chunk = dataset.chunks[0]
        self.level = filters_handled(dataset)
        self.size = 0                               # values in whole chunks, or written
        self.tail = np.zeros(0, dataset.dtype)      # values after them
        self.pending = []                           # (offset, compressed chunk or future)

    def append(self, values):
        values = np.asarray(values, self.dataset.dtype)
        if self.level is None:
            self.dataset.resize((self.size + len(values),))
            self.dataset[self.size:] = values
            self.size += len(values)
            return
        # a copy: its chunks are compressed after this returns, and the caller may reuse
        # its array
        values = np.concatenate([self.tail, values])
        whole = len(values) - len(values) % self.chunk
        self._write_pending()
        self._compress_chunks(values[:whole])
        self.tail = values[whole:].copy()

    def close(self):
        if self.level is None:
            return
        if len(self.tail):
            padded = np.zeros(self.chunk, self.dataset.dtype)
            padded[:len(self.tail)] = self.tail
            self._compress_chunks(padded, len(self.tail))
            self.tail = self.tail[:0]
        self._write_pending()

    def _compress_chunks(self, values, count=None):
        """Start compressing the whole chunks of ``values``, which follow the values so far;
        ``count``: how many of them are values (the rest pads the last chunk)."""
        for at in range(0, len(values) - self.chunk + 1, self.chunk):
            block = values[at:at + self.chunk]
            self.pending.append((self.size + at, self.pool.submit(self._compress, block)
                                 if self.pool is not None else self._compress(block)))
        self.size += len(values) if count is None else count

    def _write_pending(self):
        if not self.pending:
            return
        self.dataset.resize((self.size,))
        for offset, chunk in self.pending:
            self.dataset.id.write_direct_chunk(
                (offset,), chunk if isinstance(chunk, bytes) else chunk.result())
        self.pending = []

    def _compress(self, block):
        return compress_chunk(block, self.level)


def create_dense(parent, name, n_rows, dim, dtype, *, chunk_rows=None, **attrs):
    """A dense encoding ``parent[name]``: an ``n_rows`` x ``dim`` dataset of ``dtype``
    (float16 or float32), uncompressed, chunked by ``chunk_rows`` rows (default: about
    ``DENSE_CHUNK_BYTES``); write it a block of rows at a time (``ds[a:b] = rows``)."""
    n_rows, dim, dtype = int(n_rows), int(dim), np.dtype(dtype)
    if n_rows < 0 or dim < 1:
        raise ParameterError(f"a dense encoding of {n_rows} x {dim}")
    if dtype not in (np.float16, np.float32):
        raise ParameterError(f"dense encodings are float16 or float32, got {dtype}")
    if chunk_rows is None:
        chunk_rows = DENSE_CHUNK_BYTES // (dim * dtype.itemsize)
    chunks = (max(1, min(int(chunk_rows), n_rows)), dim) if n_rows else None
    ds = parent.create_dataset(name, shape=(n_rows, dim), dtype=dtype, chunks=chunks)
    for k, v in attrs.items():
        ds.attrs[k] = v
    return ds


# ---------------------------------------------------------------------------- readers
def read_csr(group) -> CSR:
    """A whole CSR group (a shard's word counts: small)."""
    indptr = group["indptr"][:]
    return CSR(indptr, group["indices"][:], group["data"][:], _csr_shape(group, indptr)[1])


def is_encoding(node) -> bool:
    """Whether an HDF5 object holds an encoding: a CSR group, or a matrix of rows."""
    if isinstance(node, h5py.Group):
        return {"indptr", "indices", "data"} <= set(node.keys())
    return isinstance(node, h5py.Dataset) and node.ndim == 2


def list_encodings(h5) -> list[str]:
    """Names of the encodings of an open ``store.h5``, sorted."""
    g = h5.get("encodings")
    if g is None:
        return []
    return sorted(k for k in g if is_encoding(g[k]))


# ---------------------------------------------------------------------------- rows
# About this many bytes of dense float32 rows in a block of :meth:`EncodingRows.blocks`.
BLOCK_BYTES = 32 << 20


class EncodingRows:
    """Row access to one stored encoding, whatever its layout: a CSR group or a dense
    row-chunked dataset. Reads only what is asked: a block of rows, one row, or the rows of
    a list of images, a block at a time.

    Parameters
    ----------
    h5 : h5py.File
        An open ``store.h5``.
    name : str
        The encoding, ``encodings/NAME``.

    Attributes
    ----------
    name, node : the encoding's name and its HDF5 group or dataset
    sparse : bool, whether it is a CSR group
    indptr : the row pointers of a CSR group (read whole: 8 bytes a row)
    n_rows, dim : its shape
    block_rows : rows in one block of :meth:`blocks`, about ``BLOCK_BYTES`` of float32
    """

    def __init__(self, h5, name):
        path = "encodings/" + name
        if not name or path not in h5:
            have = ", ".join(list_encodings(h5)) or "none"
            raise StoreError(f"the store has no encoding {name!r} (it has: {have})")
        node = h5[path]
        if not is_encoding(node):
            raise StoreError(f"encodings/{name} is not an encoding (neither CSR rows nor a "
                             f"matrix of rows)")
        self.name = name
        self.node = node
        self.sparse = isinstance(node, h5py.Group)
        if self.sparse:
            self.indptr = node["indptr"][:]
            self.n_rows, self.dim = _csr_shape(node, self.indptr)
        else:
            self.n_rows, self.dim = (int(v) for v in node.shape)
        self.block_rows = int(max(64, min(8192, BLOCK_BYTES // max(4 * self.dim, 1))))

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, dim)."""
        return self.n_rows, self.dim

    @property
    def attrs(self) -> dict:
        """The encoding's attributes as plain Python values."""
        return _plain(self.node.attrs)

    def block(self, start, stop) -> np.ndarray:
        """Rows ``start:stop`` as a dense float32 matrix."""
        self._check_span(start, stop)
        if not self.sparse:
            return np.asarray(self.node[start:stop], np.float32)
        out = np.zeros((stop - start, self.dim), np.float32)
        a, b = int(self.indptr[start]), int(self.indptr[stop])
        if b > a:
            lengths = np.diff(self.indptr[start:stop + 1])
            rows = np.repeat(np.arange(stop - start), lengths)
            out[rows, self.node["indices"][a:b]] = self.node["data"][a:b]
        return out

    def row(self, i) -> np.ndarray:
        """Row ``i`` as a (1, dim) float32 matrix."""
        return self.block(i, i + 1)

    def nonempty(self, start, stop) -> np.ndarray:
        """Which of the rows ``start:stop`` hold a value (empty rows: failed images, or
        images without features). A dense encoding is read :attr:`block_rows` rows at a
        time: the index build asks this of every row of the store at once."""
        self._check_span(start, stop)
        if self.sparse:
            return np.diff(self.indptr[start:stop + 1]) > 0
        out = np.empty(stop - start, bool)
        for a in range(start, stop, self.block_rows):
            b = min(a + self.block_rows, stop)
            out[a - start:b - start] = np.any(self.node[a:b] != 0, axis=1)
        return out

    def matrix(self, start, stop):
        """Rows ``start:stop`` as float32 in the encoding's own layout: a dense array, or a
        ``scipy.sparse`` CSR matrix (never densified)."""
        self._check_span(start, stop)
        if not self.sparse:
            return np.asarray(self.node[start:stop], np.float32)
        import scipy.sparse as sp   # only readers of sparse blocks pay for SciPy
        a, b = int(self.indptr[start]), int(self.indptr[stop])
        return sp.csr_matrix((self.node["data"][a:b].astype(np.float32),
                              self.node["indices"][a:b], self.indptr[start:stop + 1] - a),
                             shape=(stop - start, self.dim))

    def rows(self, idx):
        """The rows ``idx`` (sorted, unique) as :meth:`matrix` gives them, read as one
        covering slice."""
        idx = np.asarray(idx)
        if len(idx) == 0:
            return self.matrix(0, 0)
        return self.matrix(int(idx[0]), int(idx[-1]) + 1)[idx - idx[0]]

    def blocks(self, idx, rng=None):
        """Yield ``(positions, X)`` over the rows ``idx`` (sorted), one block at a time.

        ``positions`` index into ``idx``; ``X`` is as :meth:`matrix` gives it. With ``rng``
        (a NumPy ``Generator``) the blocks come in a random order and the rows of each block
        are shuffled: block-local shuffling, so memory stays one block.
        """
        idx = np.asarray(idx)
        if len(idx) == 0:
            return
        # one block per aligned window of block_rows rows: aligned windows also line up
        # with the row chunks of dense encodings
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

    def fingerprint(self) -> dict:
        """Cheap identity of the rows: layout, attributes, and a digest of the row
        structure (CSR) or of the first and last rows (dense)."""
        h = hashlib.sha256()
        if self.sparse:
            h.update(np.ascontiguousarray(self.indptr).tobytes())
        else:
            h.update(self.block(0, min(16, self.n_rows)).tobytes())
            h.update(self.block(max(0, self.n_rows - 16), self.n_rows).tobytes())
        return {"shape": [self.n_rows, self.dim], "sparse": self.sparse, "attrs": self.attrs,
                "rows_sha256": h.hexdigest()}

    def _check_span(self, start, stop):
        if not 0 <= start <= stop <= self.n_rows:
            raise ParameterError(f"rows {start}:{stop} of encodings/{self.name}, which has "
                                 f"{self.n_rows}")


def _csr_shape(group, indptr) -> tuple[int, int]:
    """(rows, columns) of a CSR group: its ``shape`` attribute. Groups written without one
    give their ``dim`` attribute, else the largest column + 1 (a read of every column)."""
    shape = group.attrs.get("shape")
    if shape is not None:
        return int(shape[0]), int(shape[1])
    n = len(indptr) - 1
    if group.attrs.get("dim") is not None:
        return n, int(group.attrs["dim"])
    return n, int(group["indices"][:].max(initial=-1)) + 1


def encoding_info(h5) -> dict:
    """name -> {method, layout, dim, dtype, bytes} for every encoding in an open store.h5
    (reads attributes and one row pointer, not the rows)."""
    out = {}
    for name in list_encodings(h5):
        obj = h5["encodings/" + name]
        if isinstance(obj, h5py.Dataset):
            out[name] = {"method": attr_value(obj.attrs.get("method", "")), "layout": "dense",
                         "dim": int(obj.shape[1]), "dtype": str(obj.dtype),
                         "bytes": int(obj.shape[0]) * int(obj.shape[1]) * obj.dtype.itemsize}
        else:
            indptr = obj["indptr"]
            nnz = int(indptr[-1]) if len(indptr) else 0
            dim = _csr_shape(obj, indptr)[1]
            out[name] = {"method": attr_value(obj.attrs.get("method", "bovw")), "layout": "csr",
                         "dim": dim, "dtype": str(obj["data"].dtype),
                         "bytes": nnz * (obj["indices"].dtype.itemsize + obj["data"].dtype.itemsize)
                         + 8 * len(indptr)}
    return out


def encoding_attrs(h5, name) -> dict:
    """The attributes of ``encodings/NAME`` of an open ``store.h5`` as plain Python values
    (its method, params, models ...; {} when there is no such encoding). Reads no rows."""
    obj = h5.get("encodings/" + name)
    return {} if obj is None else _plain(obj.attrs)


def add_encoding(f, name, record, records):
    """``encodings/NAME`` in an open ``store.h5``, as virtual datasets over the per-shard
    files of ``features aggregate`` (``encodings/NAME/shard-*.h5``, listed in ``record``,
    of ``records[i]["count"]`` rows each), with its parameters as attributes. A CSR
    encoding gets a real ``indptr`` (its rows are found without opening every shard)."""
    enc = f.require_group("encodings")
    if name in enc:
        del enc[name]
    files = [record["shards"][str(i)]["file"] for i in range(len(records))]
    counts = [r["count"] for r in records]
    rel = [f"{ENCODINGS_DIR}/{name}/{file}" for file in files]
    if record["sparse"]:
        target = enc.create_group(name)
        indptr, nnz = _joined_indptr(Path(f.filename).parent, rel, counts)
        target.create_dataset("indptr", data=indptr)
        for key, dt in (("indices", np.int32), ("data", np.float32)):
            virtual_concat(target, key, list(zip(rel, nnz)), dt)
        target.attrs["shape"] = (sum(counts), record["dim"])
        target.attrs["layout"] = "csr"
    else:
        target = virtual_concat(enc, name, list(zip(rel, counts)), record["dtype"],
                                (record["dim"],), source="encoding")
        target.attrs["layout"] = "dense"
    target.attrs["method"] = record["method"]
    target.attrs["params"] = json.dumps(record["params"], sort_keys=True)
    target.attrs["dim"] = record["dim"]
    target.attrs["dtype"] = record["dtype"]
    for k, v in record["params"].items():
        target.attrs[k] = "" if v is None else v
    target.attrs["empty_rows"] = "failed images and images without descriptors: all zeros"


def _joined_indptr(root, rel, counts):
    """The row pointers of per-shard CSR files laid end to end, and each file's values."""
    indptr = np.zeros(sum(counts) + 1, np.int64)
    nnz = []
    row = 0
    for path, m in zip(rel, counts):
        with open_confined(root / path, root) as s:
            p = s["indptr"][:]
        indptr[row + 1:row + m + 1] = p[1:] + indptr[row]
        nnz.append(int(p[-1]))
        row += m
    return indptr, nnz


def _plain(attrs) -> dict:
    return {k: attr_value(v) for k, v in attrs.items()}


def attr_value(v):
    """An HDF5 attribute as a plain Python value (str, number, list)."""
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    return v
