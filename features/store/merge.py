"""``store.h5`` built from a job's finished shards: the one writer of the merged view."""
from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

import h5py
import numpy as np

from ..encodings.bovw import document_frequency, idf_weights, weight_rows
from ..exceptions import StoreError
from ..extract.geometry import COLUMNS as GEOMETRY_COLUMNS
from .atomic import atomic_path
from .encodings import read_csr
from .keys import KeyTableWriter
from .layout import (COMPRESS, ENCODING_CHUNK, FORMAT, OK, SHARDS_DIR, STORE_FILE, STR,
                     VERSION, word_dtype)
from .write import centroids_checksum, idf_checksum


def _vds(f, name, parts, dtype, tail_shape):
    """Concatenate same-named datasets of several shard files as one virtual dataset."""
    total = sum(n for _, n in parts)
    layout = h5py.VirtualLayout(shape=(total,) + tail_shape, dtype=dtype)
    at = 0
    for rel, n in parts:
        if n:
            layout[at:at + n] = h5py.VirtualSource(rel, name, shape=(n,) + tail_shape)
        at += n
    f.create_virtual_dataset(name, layout, fillvalue=0)


# HDF5 files whose writes failed: HDF5 cannot close them (closing one can crash the
# process), so they are kept open until the process exits (see _h5_writing).
_abandoned: list = []


@contextlib.contextmanager
def _h5_writing(tmp):
    """An HDF5 file being written to a temporary path, removed if anything fails.

    When a write fails (a full disk), HDF5 can neither flush nor close the file, and
    closing it may crash the process: the handle is then abandoned, not closed. Code that
    writes big HDF5 files to disk therefore runs in a worker process (``features.pipeline.isolate``) that
    leaves right after reporting the error."""
    f = h5py.File(tmp, "w")
    try:
        yield f
        f.close()
    except BaseException as e:
        with contextlib.suppress(OSError):
            Path(tmp).unlink()
        if isinstance(e, (OSError, RuntimeError)):
            _abandoned.append(f)     # a failed write: closing could crash, see above
        else:
            f.close()
        raise


def merge(directory, config, shard_files: list[str], *, centroids, codebook_attrs: dict,
          classes=(), names=(), splits=False, shard_records=(), idf=None,
          versions=None) -> Path:
    """Build ``store.h5`` from finished shards, one shard in memory at a time.

    Two passes over the shards' word counts: document frequencies first, then the tf-idf
    rows, so the idf is that of the whole collection, unless an ``idf`` is given (a store
    encoded ``--like`` another weighs its words by the other's). ``versions``: the library
    versions recorded with the store.
    """
    directory = Path(directory)
    out = directory / STORE_FILE
    tmp = atomic_path(out)
    n_words = len(centroids)
    paths = [directory / SHARDS_DIR / name for name in shard_files]
    df = np.zeros(n_words, np.int64)
    n_images = n_ok = 0
    sizes = []
    for p in paths:
        with h5py.File(p, "r") as s:
            ok = s["images/status"][:] == OK
            indptr = s["counts/indptr"][:]
            indices = s["counts/indices"][:]
            keep = np.repeat(ok, np.diff(indptr))
            df += document_frequency(indices[keep], n_words)
            n_images += len(ok)
            n_ok += int(ok.sum())
            sizes.append((int(s["offsets"][-1]), "descriptors" in s,
                          s["geometry"].dtype if "geometry" in s else None))
    if idf is not None:
        idf = np.asarray(idf, np.float32)
        if idf.shape != (n_words,):
            raise StoreError(f"an idf of shape {idf.shape} for a codebook of {n_words} words")
    elif config.tfidf:
        idf = idf_weights(df, max(n_ok, 1))
    else:
        idf = np.ones(n_words, np.float32)

    with _h5_writing(tmp) as f:
        f.attrs["format"] = FORMAT
        f.attrs["version"] = VERSION
        f.attrs["config"] = config.to_json()
        f.attrs["versions"] = json.dumps(versions or {}, sort_keys=True)
        f.attrs["n_images"] = n_images
        f.attrs["created"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        # The shard files with their size and checksum, so that readers can refuse a store
        # whose shards went missing or changed (see shard_problems).
        f.attrs["shards"] = json.dumps([{k: r.get(k) for k in ("file", "count", "size",
                                                                "checksum")}
                                        for r in shard_records])
        g = f.create_group("images")
        cols = {"key": STR, "label": np.int32, "width": np.int32, "height": np.int32,
                "status": np.uint8, "reason": STR}
        for name, dt in cols.items():
            g.create_dataset(name, shape=(n_images,), dtype=dt,
                             chunks=(min(max(n_images, 1), 1 << 15),), **COMPRESS)
        offsets = f.create_dataset("offsets", shape=(n_images + 1,), dtype=np.int64)
        enc = f.create_group("encodings")
        bovw = enc.create_group("bovw")
        counts = enc.create_group("bovw_counts")
        for grp, dt in ((bovw, np.float32), (counts, np.int32)):
            grp.create_dataset("indptr", shape=(n_images + 1,), dtype=np.int64)
            grp.create_dataset("indices", shape=(0,), maxshape=(None,), dtype=np.int32,
                               chunks=(ENCODING_CHUNK,), **COMPRESS)
            grp.create_dataset("data", shape=(0,), maxshape=(None,), dtype=dt,
                               chunks=(ENCODING_CHUNK,), **COMPRESS)
            grp.attrs["shape"] = (n_images, n_words)
        bovw.attrs["weighting"] = "tf-idf" if config.tfidf else "tf"
        bovw.attrs["power"] = config.power
        bovw.attrs["normalization"] = "l2"
        enc.create_dataset("idf", data=idf).attrs["checksum"] = idf_checksum(idf)
        # what `features baseline --val` compares (features.store.models.encoding_models)
        bovw.attrs["models"] = json.dumps({"idf": idf_checksum(idf)})

        row = desc_at = nnz = 0
        offsets[0] = 0
        failures = []
        key_table = KeyTableWriter(n_images)
        for p, (n_desc, _, _) in zip(paths, sizes):
            with h5py.File(p, "r") as s:
                m = int(s.attrs["count"])
                for name in cols:
                    g[name][row:row + m] = s["images/" + name][:]
                status = s["images/status"][:]
                reason = s["images/reason"].asstr()[:]
                keys = s["images/key"].asstr()[:]
                key_table.add(keys)
                failures.extend((row + i, keys[i], reason[i]) for i in np.flatnonzero(status))
                offsets[row + 1:row + m + 1] = s["offsets"][1:] + desc_at
                c = read_csr(s["counts"])
                values = weight_rows(c.indptr, c.indices, c.data, idf, config.power)
                for grp, data in ((bovw, values), (counts, c.data)):
                    grp["indptr"][row:row + m + 1] = c.indptr + nnz
                    grp["indices"].resize((nnz + len(c.indices),))
                    grp["indices"][nnz:] = c.indices
                    grp["data"].resize((nnz + len(data),))
                    grp["data"][nnz:] = data
                nnz += len(c.indices)
            row += m
            desc_at += n_desc

        key_table.write(f)
        parts = [(f"{SHARDS_DIR}/{name}", n) for name, (n, _, _) in zip(shard_files, sizes)]
        _vds(f, "frames", parts, np.float32, (4,))
        _vds(f, "words", parts, word_dtype(n_words), ())
        f["frames"].attrs["units"] = config.frame_units
        _vds(f, "scale", parts, np.int8, ())
        if sizes and all(has for _, has, _ in sizes):
            _vds(f, "descriptors", parts, np.uint8, (128,))
        if sizes and all(dt is not None for _, _, dt in sizes):
            _vds(f, "geometry", parts, sizes[0][2], (len(GEOMETRY_COLUMNS),))
            f["geometry"].attrs["columns"] = ",".join(GEOMETRY_COLUMNS)

        fg = f.create_group("failures")
        fg.create_dataset("index", data=np.array([i for i, _, _ in failures], np.int64))
        fg.create_dataset("key", data=np.array([k for _, k, _ in failures], dtype=object), dtype=STR)
        fg.create_dataset("reason", data=np.array([r for _, _, r in failures], dtype=object),
                          dtype=STR)

        cb = f.create_group("codebook")
        cb.create_dataset("centroids", data=np.asarray(centroids, np.float32))
        # stores encoded --like another must share its codebook: compared by this checksum
        cb["centroids"].attrs["checksum"] = centroids_checksum(centroids)
        if splits:  # a train/ val/ source: the split is the first component of the key
            keys = g["key"].asstr()[:]
            g.create_dataset("split", data=np.array([k.split("/", 1)[0] for k in keys],
                                                    dtype=object), dtype=STR)
        for k, v in codebook_attrs.items():
            cb.attrs[k] = v
        if len(classes):
            lg = f.create_group("labels")
            lg.create_dataset("wnid", data=np.array(list(classes), dtype=object), dtype=STR)
            lg.create_dataset("name", data=np.array(list(names) or [""] * len(classes),
                                                    dtype=object), dtype=STR)
    os.replace(tmp, out)
    return out
