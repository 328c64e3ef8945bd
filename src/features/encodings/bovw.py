"""Image encodings from visual words: bag of visual words with tf-idf, as CSR rows.

Counts are computed per image while extracting (one shard at a time); the idf weights
need the whole collection, so weighting happens once all shards are in (see ``store``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..exceptions import ParameterError


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


# Counting by bincount touches every (row, word) bin (about 2.5 ns a bin: zeroed, scanned);
# by sort, every descriptor (about 50 ns). Bincount while the bins are at most this many
# times the descriptors: one image of 1000 words, or a shard of them; a vocabulary tree's
# million words are counted by sort (by bincount: 2.4 ms an image of 786 descriptors).
_BINCOUNT_RATIO = 16


def word_counts(words, n_words) -> tuple[np.ndarray, np.ndarray]:
    """One image's histogram as sparse (word ids, counts): ids sorted, both int32."""
    words = np.asarray(words)
    n_words = int(n_words)
    if 0 < n_words <= _BINCOUNT_RATIO * len(words) and words.dtype.kind in "iu":
        # the common case in few calls: a call costs more than the counting here
        try:
            counts = np.bincount(words, minlength=n_words)
        except ValueError:                                  # a negative word
            counts = None
        if counts is None or len(counts) > n_words:
            raise _out_of_range(words, n_words)
        ids = counts.nonzero()[0]
        return ids.astype(np.int32), counts[ids].astype(np.int32)
    csr = word_counts_csr(words, [0, len(words)], n_words)
    return csr.indices, csr.data


def word_counts_csr(words, offsets, n_words) -> CSR:
    """The histograms of several images at once, as int32 counts in a CSR: image ``i``'s
    words are ``words[offsets[i]:offsets[i + 1]]`` (a shard's concatenated words).

    Row ``i`` is what :func:`word_counts` gives for the image alone."""
    words = np.asarray(words)
    offsets = np.asarray(offsets, np.int64)
    n_words = int(n_words)
    if n_words < 1:
        raise ParameterError(f"n_words must be >= 1, got {n_words}", "n_words")
    if words.ndim != 1 or (len(words) and words.dtype.kind not in "iu"):
        raise ParameterError(f"words must be a 1-D array of integers, got {words.dtype} "
                             f"of shape {words.shape}")
    if (offsets.ndim != 1 or len(offsets) < 1 or offsets[0] != 0
            or offsets[-1] != len(words) or (np.diff(offsets) < 0).any()):
        raise ParameterError(f"offsets must rise from 0 to the {len(words)} words, got "
                             f"{offsets[:3].tolist()}...{offsets[-2:].tolist()}")
    if len(words) and (words.min() < 0 or words.max() >= n_words):
        raise _out_of_range(words, n_words)
    return _count_rows(words, offsets, n_words)


def _out_of_range(words, n_words) -> ParameterError:
    return ParameterError(f"words must lie in [0, {n_words}), got {words.min()}..{words.max()}")


def _count_rows(words, offsets, n_words) -> CSR:
    n = len(offsets) - 1
    keys = words.astype(np.int64)           # row * n_words + word: one count for all rows
    if n > 1:
        keys += np.repeat(np.arange(n, dtype=np.int64) * n_words, np.diff(offsets))
    if n * n_words <= _BINCOUNT_RATIO * max(len(keys), 1):
        counts = np.bincount(keys, minlength=n * n_words)
        used = counts.nonzero()[0]
        counts = counts[used]
    else:
        keys.sort()
        starts = np.flatnonzero(np.diff(keys, prepend=-1))
        used = keys[starts]
        counts = np.diff(starts, append=len(keys))
    indptr = np.searchsorted(used, np.arange(n + 1, dtype=np.int64) * n_words)
    ids = used % n_words if n > 1 else used
    return CSR(indptr.astype(np.int64), ids.astype(np.int32), counts.astype(np.int32), n_words)


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
