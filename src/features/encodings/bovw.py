"""Image encodings from visual words: bag of visual words with tf-idf, as CSR rows.

Counts are computed per image while extracting (one shard at a time); the idf weights
need the whole collection, so weighting happens once all shards are in (see ``store``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class CSR:
    """Compressed sparse rows, the layout the store keeps encodings in."""
    indptr: np.ndarray   # int64 (n + 1)
    indices: np.ndarray  # int32 word ids, sorted within a row
    data: np.ndarray     # float32 or int32 values
    n_cols: int

    @property
    def n_rows(self):
        return len(self.indptr) - 1

    def row(self, i):
        a, b = self.indptr[i], self.indptr[i + 1]
        return self.indices[a:b], self.data[a:b]

    def to_dense(self, start=0, stop=None, dtype=np.float32):
        stop = self.n_rows if stop is None else stop
        out = np.zeros((stop - start, self.n_cols), dtype)
        a, b = self.indptr[start], self.indptr[stop]
        rows = np.repeat(np.arange(stop - start), np.diff(self.indptr[start:stop + 1]))
        out[rows, self.indices[a:b]] = self.data[a:b]
        return out


def word_counts(words, n_words) -> tuple[np.ndarray, np.ndarray]:
    """One image's histogram as sparse (word ids, counts)."""
    counts = np.bincount(np.asarray(words, np.int64), minlength=n_words)
    nz = np.flatnonzero(counts).astype(np.int32)
    return nz, counts[nz].astype(np.int32)


def counts_csr(rows, n_words) -> CSR:
    """Stack per-image (ids, counts) pairs into one CSR without growing arrays in a loop."""
    lengths = np.fromiter((len(ids) for ids, _ in rows), np.int64, count=len(rows))
    indptr = np.zeros(len(rows) + 1, np.int64)
    np.cumsum(lengths, out=indptr[1:])
    indices = np.empty(indptr[-1], np.int32)
    data = np.empty(indptr[-1], np.int32)
    for i, (ids, cnt) in enumerate(rows):
        indices[indptr[i]:indptr[i + 1]] = ids
        data[indptr[i]:indptr[i + 1]] = cnt
    return CSR(indptr, indices, data, n_words)


def document_frequency(indices, n_words) -> np.ndarray:
    return np.bincount(np.asarray(indices, np.int64), minlength=n_words).astype(np.int64)


def idf_weights(df, n_docs) -> np.ndarray:
    """Inverse document frequency log(N / df); words no image uses get 0."""
    df = np.asarray(df, np.float64)
    idf = np.zeros_like(df)
    used = df > 0
    idf[used] = np.log(n_docs / df[used])
    return idf.astype(np.float32)


def weight_rows(indptr, indices, counts, idf=None, power=1.0) -> np.ndarray:
    """tf-idf with optional power-law (sqrt) damping, each row L2-normalized.

    ``power`` < 1 damps bursty words (repeated texture) before idf, which helps retrieval.
    Rows that end up all zero stay zero.
    """
    values = np.asarray(counts, np.float32)
    if power != 1.0:
        values = values ** np.float32(power)
    if idf is not None:
        values = values * np.asarray(idf, np.float32)[indices]
    lengths = np.diff(indptr)
    rows = np.repeat(np.arange(len(lengths)), lengths)
    norms = np.sqrt(np.bincount(rows, weights=values.astype(np.float64) ** 2,
                                minlength=len(lengths))).astype(np.float32)
    norms[norms == 0] = 1.0
    return (values / np.repeat(norms, lengths)).astype(np.float32)


def encode_words(words, n_words, idf=None, power=1.0) -> tuple[np.ndarray, np.ndarray]:
    """One image's weighted, L2-normalized BoVW row: (word ids, values)."""
    ids, cnt = word_counts(words, n_words)
    values = weight_rows(np.array([0, len(ids)]), ids, cnt, idf, power)
    return ids, values
