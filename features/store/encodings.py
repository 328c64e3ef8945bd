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
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import h5py
import numpy as np

from ..encodings.bovw import CSR
from ..exceptions import StoreError
from .layout import ENCODINGS_DIR, chunked


def write_csr(group, csr: CSR, **attrs):
    """``csr`` as the datasets of ``group`` (compressed, chunked), with ``attrs``."""
    group.create_dataset("indptr", data=csr.indptr.astype(np.int64))
    chunked(group, "indices", csr.indices, 1 << 16)
    chunked(group, "data", csr.data, 1 << 16)
    group.attrs["shape"] = (csr.n_rows, csr.n_cols)
    for k, v in attrs.items():
        group.attrs[k] = v


def read_csr(group) -> CSR:
    """A whole CSR group (a shard's word counts: small)."""
    return CSR(group["indptr"][:], group["indices"][:], group["data"][:],
               int(group.attrs["shape"][1]))


def is_encoding(node) -> bool:
    if isinstance(node, h5py.Group):
        return {"indptr", "indices", "data"} <= set(node.keys()) and "shape" in node.attrs
    return isinstance(node, h5py.Dataset) and node.ndim == 2


def list_encodings(h5) -> list[str]:
    """Names of the encodings of an open ``store.h5``, sorted."""
    g = h5.get("encodings")
    if g is None:
        return []
    return sorted(k for k in g if is_encoding(g[k]))


# ---------------------------------------------------------------------------- rows
class EncodingRows:
    """Row access to one stored encoding, whatever its layout: a CSR group
    (``indptr``, ``indices``, ``data``, attribute ``shape``) or a dense row-chunked dataset.

    Reads only what is asked: a block of rows, or one row."""

    def __init__(self, h5, name):
        path = "encodings/" + name
        if not name or path not in h5:
            have = sorted(k for k in h5["encodings"] if is_encoding(h5["encodings/" + k])) \
                if "encodings" in h5 else []
            raise StoreError(f"the store has no encoding {name!r} "
                             f"(it has: {', '.join(have) or 'none'})")
        node = h5[path]
        if not is_encoding(node):
            raise StoreError(f"encodings/{name} is not an encoding (neither CSR rows nor a "
                             f"matrix of rows)")
        self.name = name
        self.node = node
        if isinstance(node, h5py.Group):
            self.sparse = True
            self.indptr = node["indptr"][:]
            self.n_rows, self.dim = (int(v) for v in node.attrs["shape"])
        else:
            self.sparse = False
            self.n_rows, self.dim = (int(v) for v in node.shape)

    def block(self, start, stop) -> np.ndarray:
        """Rows ``start:stop`` as a dense float32 matrix."""
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
        return self.block(i, i + 1)

    def nonempty(self, start, stop) -> np.ndarray:
        if self.sparse:
            return np.diff(self.indptr[start:stop + 1]) > 0
        return np.any(self.block(start, stop) != 0, axis=1)

    def fingerprint(self) -> dict:
        """Cheap identity of the rows: layout, attributes, and a digest of the row
        structure (CSR) or of the first and last rows (dense)."""
        h = hashlib.sha256()
        if self.sparse:
            h.update(np.ascontiguousarray(self.indptr).tobytes())
        else:
            h.update(self.block(0, min(16, self.n_rows)).tobytes())
            h.update(self.block(max(0, self.n_rows - 16), self.n_rows).tobytes())
        attrs = {k: attr_value(v) for k, v in self.node.attrs.items()}
        return {"shape": [self.n_rows, self.dim], "sparse": self.sparse, "attrs": attrs,
                "rows_sha256": h.hexdigest()}


def encoding_info(h5) -> dict:
    """name -> {method, layout, dim, dtype, bytes} for every encoding in an open store.h5."""
    out = {}
    g = h5.get("encodings")
    if g is None:
        return out
    for name, obj in g.items():
        if isinstance(obj, h5py.Dataset):
            if obj.ndim != 2:
                continue
            out[name] = {"method": attr_value(obj.attrs.get("method", "")), "layout": "dense",
                         "dim": int(obj.shape[1]), "dtype": str(obj.dtype),
                         "bytes": int(obj.shape[0]) * int(obj.shape[1]) * obj.dtype.itemsize}
        elif "indptr" in obj:
            nnz = int(obj["indptr"][-1]) if len(obj["indptr"]) else 0
            out[name] = {"method": attr_value(obj.attrs.get("method", "bovw")), "layout": "csr",
                         "dim": int(obj.attrs["shape"][1]), "dtype": str(obj["data"].dtype),
                         "bytes": nnz * (obj["indices"].dtype.itemsize + obj["data"].dtype.itemsize)
                         + 8 * len(obj["indptr"])}
    return out


def read_encoding(store, name, start=0, stop=None) -> np.ndarray:
    """Rows ``start:stop`` of ``encodings/NAME`` as a dense float32 array (dense or CSR)."""
    h5 = getattr(store, "h5", store)   # a Store or an open store.h5
    obj = h5.get("encodings/" + name)
    if obj is None:
        raise StoreError(f"the store has no encoding {name!r}")
    stop = (obj.shape[0] if isinstance(obj, h5py.Dataset) else len(obj["indptr"]) - 1) \
        if stop is None else stop
    if isinstance(obj, h5py.Dataset):
        return obj[start:stop].astype(np.float32)
    indptr = obj["indptr"][start:stop + 1]
    out = np.zeros((stop - start, int(obj.attrs["shape"][1])), np.float32)
    idx = obj["indices"][indptr[0]:indptr[-1]]
    val = obj["data"][indptr[0]:indptr[-1]]
    rows = np.repeat(np.arange(stop - start), np.diff(indptr))
    out[rows, idx] = val
    return out


def add_encoding(f, name, record, records):
    enc = f.require_group("encodings")
    if name in enc:
        del enc[name]
    files = [record["shards"][str(i)]["file"] for i in range(len(records))]
    counts = [r["count"] for r in records]
    rel = [f"{ENCODINGS_DIR}/{name}/{file}" for file in files]
    n = sum(counts)
    if record["sparse"]:
        g = enc.create_group(name)
        indptr = np.zeros(n + 1, np.int64)
        nnz = []
        row = 0
        for path, m in zip(rel, counts):
            with h5py.File(Path(f.filename).parent / path, "r") as s:
                p = s["indptr"][:]
            indptr[row + 1:row + m + 1] = p[1:] + indptr[row]
            nnz.append(int(p[-1]))
            row += m
        g.create_dataset("indptr", data=indptr)
        for key, dt in (("indices", np.int32), ("data", np.float32)):
            layout = h5py.VirtualLayout(shape=(int(sum(nnz)),), dtype=dt)
            at = 0
            for path, k in zip(rel, nnz):
                if k:
                    layout[at:at + k] = h5py.VirtualSource(path, key, shape=(k,))
                at += k
            g.create_virtual_dataset(key, layout, fillvalue=0)
        g.attrs["shape"] = (n, record["dim"])
        target = g
        target.attrs["layout"] = "csr"
    else:
        layout = h5py.VirtualLayout(shape=(n, record["dim"]), dtype=record["dtype"])
        at = 0
        for path, m in zip(rel, counts):
            if m:
                layout[at:at + m] = h5py.VirtualSource(path, "encoding", shape=(m, record["dim"]))
            at += m
        target = enc.create_virtual_dataset(name, layout, fillvalue=0)
        target.attrs["layout"] = "dense"
    target.attrs["method"] = record["method"]
    target.attrs["params"] = json.dumps(record["params"], sort_keys=True)
    target.attrs["dim"] = record["dim"]
    target.attrs["dtype"] = record["dtype"]
    for k, v in record["params"].items():
        target.attrs[k] = "" if v is None else v
    target.attrs["empty_rows"] = "failed images and images without descriptors: all zeros"


def attr_value(v):
    """An HDF5 attribute as a plain Python value (str, number, list)."""
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    return v
