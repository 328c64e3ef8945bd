"""``store.h5`` built from a job's finished shards (its parts written by :mod:`.write`)."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..encodings.bovw import document_frequency, idf_weights, weight_rows
from ..exceptions import StoreError
from ..extract.geometry import COLUMNS as GEOMETRY_COLUMNS
from .atomic import atomic_path
from .confined import open_confined
from .encodings import read_csr
from .h5files import h5_writing
from .layout import OK, SHARDS_DIR, STORE_FILE, word_dtype
from .write import (CSRWriter, ImageTable, create_offsets, idf_checksum, virtual_concat,
                    write_codebook, write_failures, write_header, write_idf, write_labels,
                    write_split)


def merge(directory, config, shard_files: list[str], *, centroids, codebook_attrs: dict,
          classes=(), names=(), splits=False, shard_records=(), idf=None,
          versions=None, tree=None, threads=1) -> Path:
    """Build ``store.h5`` from finished shards, one shard in memory at a time.

    Two passes over the shards' word counts: document frequencies first, then the tf-idf
    rows, so the idf is that of the whole collection, unless an ``idf`` is given (a store
    encoded ``--like`` another weighs its words by the other's). ``versions``: the library
    versions recorded with the store; ``tree``: the arrays of the vocabulary tree whose
    leaves are ``centroids``, if the words were learned as one; ``threads``: the threads
    that compress the encodings' chunks.
    """
    directory = Path(directory)
    out = directory / STORE_FILE
    tmp = atomic_path(out)
    paths = [directory / SHARDS_DIR / name for name in shard_files]
    census = _census(paths, len(centroids), directory)
    idf = _word_weights(census, config.tfidf, idf)
    with h5_writing(tmp) as f:
        write_header(f, config, census.n_images, versions=versions, shards=shard_records)
        failures = _copy_shards(f, paths, census, idf, config, directory, threads)
        _link_shards(f, shard_files, census, config.frame_units)
        write_failures(f, failures)
        write_codebook(f, centroids, tree=tree, **codebook_attrs)
        if splits:  # a train/ val/ source: the split is the first component of the key
            write_split(f, [k.split("/", 1)[0] for k in f["images/key"].asstr()[:]])
        write_labels(f, classes, names)
    os.replace(tmp, out)
    return out


@dataclass
class _Shard:
    """What the first pass learns of a shard."""
    images: int
    descriptors: int          # rows of its ragged datasets
    has_descriptors: bool     # SIFT descriptors kept
    geometry: np.dtype | None  # the dtype of its geometry records, if any


@dataclass
class _Census:
    """What the first pass learns of the shards."""
    n_words: int
    df: np.ndarray            # document frequency of each word, over the ok images
    n_ok: int
    shards: list

    @property
    def n_images(self) -> int:
        return sum(s.images for s in self.shards)


def _census(paths, n_words, root) -> _Census:
    """The first pass: document frequencies of the words over the ok images, and the
    sizes of each shard (files of the store ``root``)."""
    df = np.zeros(n_words, np.int64)
    n_ok = 0
    shards = []
    for p in paths:
        with open_confined(p, root) as s:
            ok = s["images/status"][:] == OK
            indptr = s["counts/indptr"][:]
            keep = np.repeat(ok, np.diff(indptr))
            df += document_frequency(s["counts/indices"][:][keep], n_words)
            n_ok += int(ok.sum())
            shards.append(_Shard(len(ok), int(s["offsets"][-1]), "descriptors" in s,
                                 s["geometry"].dtype if "geometry" in s else None))
    return _Census(n_words, df, n_ok, shards)


def _word_weights(census, tfidf, idf=None) -> np.ndarray:
    """The idf of ``bovw``: the given one (another store's), this collection's, or ones
    (plain term frequencies)."""
    if idf is not None:
        idf = np.asarray(idf, np.float32)
        if idf.shape != (census.n_words,):
            raise StoreError(f"an idf of shape {idf.shape} for a codebook of "
                             f"{census.n_words} words")
        return idf
    if tfidf:
        return idf_weights(census.df, max(census.n_ok, 1))
    return np.ones(census.n_words, np.float32)


def _copy_shards(f, paths, census, idf, config, root, threads=1) -> list:
    """The second pass: each shard's image table, descriptor offsets and ``bovw`` rows
    (with the raw counts ``bovw_counts``) appended, one shard at a time. Returns the
    failed images as (row, key, reason)."""
    n = census.n_images
    table = ImageTable(f, n)
    offsets = create_offsets(f, n)
    enc = f.create_group("encodings")
    bovw = CSRWriter(enc, "bovw", n, census.n_words, np.float32,
                     weighting="tf-idf" if config.tfidf else "tf", power=config.power,
                     normalization="l2",
                     # what `features baseline --val` compares (store.models.encoding_models)
                     models=json.dumps({"idf": idf_checksum(idf)}), threads=threads)
    # the same rows as bovw: its indptr and indices, stored once
    counts = CSRWriter(enc, "bovw_counts", n, census.n_words, np.int32, same_rows_as=bovw,
                       threads=threads)
    write_idf(f, idf)
    failures = []
    at = 0                    # descriptors of the shards before
    for p, shard in zip(paths, census.shards):
        with open_confined(p, root) as s:
            failures += _copy_images(s, table, offsets, at)
            _copy_rows(s, bovw, counts, idf, config.power)
        at += shard.descriptors
    for writer in (table, bovw, counts):
        writer.close()
    return failures


def _copy_images(s, table, offsets, at) -> list:
    """One shard's images (and where their descriptors start); its failures."""
    keys = s["images/key"].asstr()[:]
    status = s["images/status"][:]
    reason = s["images/reason"].asstr()[:]
    # shards written before the digests were recorded have none ("")
    sha256 = s["images/sha256"][:] if "images/sha256" in s else None
    row = table.append(key=keys, label=s["images/label"][:], width=s["images/width"][:],
                       height=s["images/height"][:], status=status, reason=reason,
                       sha256=sha256)
    offsets[row + 1:row + len(keys) + 1] = s["offsets"][1:] + at
    return [(row + i, keys[i], reason[i]) for i in np.flatnonzero(status)]


def _copy_rows(s, bovw, counts, idf, power):
    """One shard's word counts, as they are and as weighted rows."""
    c = read_csr(s["counts"])
    bovw.append(c.indptr, c.indices, weight_rows(c.indptr, c.indices, c.data, idf, power))
    counts.append(c.indptr, c.indices, c.data)


def _link_shards(f, shard_files, census, frame_units):
    """The ragged per-image datasets of the shards as virtual datasets (no copy);
    descriptors and geometry only when every shard has them."""
    shards = census.shards
    parts = [(f"{SHARDS_DIR}/{name}", s.descriptors) for name, s in zip(shard_files, shards)]
    virtual_concat(f, "frames", parts, np.float32, (4,)).attrs["units"] = frame_units
    virtual_concat(f, "words", parts, word_dtype(census.n_words))
    virtual_concat(f, "scale", parts, np.int8)
    if shards and all(s.has_descriptors for s in shards):
        virtual_concat(f, "descriptors", parts, np.uint8, (128,))
    if shards and all(s.geometry is not None for s in shards):
        geometry = virtual_concat(f, "geometry", parts, shards[0].geometry,
                                  (len(GEOMETRY_COLUMNS),))
        geometry.attrs["columns"] = ",".join(GEOMETRY_COLUMNS)
