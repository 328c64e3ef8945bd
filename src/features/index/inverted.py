"""An inverted file over sparse rows (``index.inverted``): the index of large vocabularies.

A tf-idf row of 100,000 or 1,000,000 words holds a few hundred of them: stored dense, as
FAISS stores vectors, it is 400 KB to 4 MB, and product quantization has nothing to learn
from such widths. An inverted file (Sivic and Zisserman 2003) keeps, for each word, the
list of the images that hold it with their weight, and answers a query by reading only
the lists of the query's words: the score of an image is the sum over the words it shares
with the query of both weights, the inner product of the two rows (the cosine of
L2-normalized tf-idf rows, the score of FAISS's exact inner-product index over the same
rows, to float32 rounding). Images that share no word with the query are not results.

The file, little-endian, memory-mapped by readers::

    header   64 bytes: magic b"FEATINV1", then int64 rows (the store's images), dim (the
             words), postings, indexed (images in the index), and zeros
    starts   int64 (dim + 1): the list of word w is postings starts[w]:starts[w + 1]
    ids      int32 (postings): image numbers, increasing within a list
    weights  float32 (postings): the rows' values
    indexed  int32 (indexed): the image numbers in the index, increasing

Built (:func:`write_inverted`) in two streaming passes over the rows, a block at a time:
the length of every list, then each block's values scattered to their lists in a file of
the final size, allocated first (a full disk is an ``OSError`` then, never a fault on a
mapped page). Memory: one block of rows and the list starts.

A query reads the lists of its words (``ext/_inverted.pyx``: a score per image met, in a
buffer per thread that is reset image by image, so its cost is the postings read, not the
images in the index), then keeps the k best.
"""
from __future__ import annotations

import os
import struct
import threading

import numpy as np

from .._ext import load
from ..exceptions import IndexDamaged, ParameterError
from .layout import INVERTED_FILE

MAGIC = b"FEATINV1"
HEADER = 64
INVERTED_KIND = "inverted"
# the factory name of an inverted file (``features index --index Inverted``), and the
# vocabularies above which the automatic choice takes it for a sparse encoding: FAISS's
# indexes store rows of so many words dense (64 KB an image at 16,384) or quantize them
INVERTED = "Inverted"
INVERTED_WORDS = 16384


def _layout(dim, postings, indexed) -> dict:
    """Byte offset of each section, and the file's size."""
    starts = HEADER
    ids = starts + 8 * (dim + 1)
    weights = ids + 4 * postings
    idx = weights + 4 * postings
    return {"starts": starts, "ids": ids, "weights": weights, "indexed": idx,
            "size": idx + 4 * indexed}


def write_inverted(path, blocks, n_rows, dim, progress=None) -> int:
    """Write the inverted file of the rows ``blocks()`` yields to ``path``; returns the
    number of images indexed.

    ``blocks`` is called twice (two passes) and yields ``(ids, matrix)``: increasing image
    numbers and their rows as a ``scipy.sparse`` CSR matrix (``dim`` columns).
    ``progress(done)``: images added so far, in the second pass."""
    counts = np.zeros(dim, np.int64)
    indexed = 0
    for ids, m in blocks():
        counts += np.bincount(m.indices, minlength=dim)[:dim]
        indexed += len(ids)
    starts = np.zeros(dim + 1, np.int64)
    np.cumsum(counts, out=starts[1:])
    postings = int(starts[-1])
    where = _layout(dim, postings, indexed)
    with open(path, "wb+") as f:
        # the whole file first: a full disk fails here, before any page is mapped
        os.posix_fallocate(f.fileno(), 0, where["size"])
        f.write((MAGIC + struct.pack("<4q", n_rows, dim, postings, indexed)).ljust(HEADER,
                                                                                  b"\0"))
        f.write(starts.tobytes())
        f.flush()
    out_ids = np.memmap(path, np.int32, "r+", where["ids"], (postings,)) if postings else None
    out_w = np.memmap(path, np.float32, "r+", where["weights"], (postings,)) if postings \
        else None
    out_idx = np.memmap(path, np.int32, "r+", where["indexed"], (indexed,)) if indexed \
        else None
    cursor = starts[:-1].copy()
    done = 0
    for ids, m in blocks():
        if not len(ids):
            continue
        out_idx[done:done + len(ids)] = ids
        done += len(ids)
        cols = np.asarray(m.indices, np.int64)
        rows = np.repeat(np.asarray(ids, np.int32), np.diff(m.indptr))
        order = np.argsort(cols, kind="stable")     # by word, images in order within one
        cols, rows, vals = cols[order], rows[order], np.asarray(m.data, np.float32)[order]
        words, first, per = np.unique(cols, return_index=True, return_counts=True)
        rank = np.arange(len(cols)) - np.repeat(first, per)
        dest = cursor[cols] + rank
        out_ids[dest] = rows
        out_w[dest] = vals
        cursor[words] += per
        if progress is not None:
            progress(done)
    for mm in (out_ids, out_w, out_idx):
        if mm is not None:
            mm.flush()
            del mm
    return indexed


class InvertedFile:
    """An ``index.inverted`` opened for search, memory-mapped (or, with ``copy_from``, the
    held :class:`~features.index.files.OpenIndexFiles` it was opened through, read into
    memory from the checked descriptor): what ``load_index`` returns for an inverted-file
    index. ``search(queries, k)`` answers as a FAISS index does
    (scores and image numbers, best first; -1 where fewer than k images share a word with
    the query); ``ntotal``: images indexed, ``d``: words; ``files``: the open files
    (``features.index.files``), checked before each search by ``search_vectors``."""

    def __init__(self, path, *, hint="run `features index` to rebuild it", copy_from=None):
        self.path = path
        self.files = None
        self.hamming = None      # its Hamming embedding (features.index.hamming), if any
        self._local = threading.local()
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(HEADER)
        if len(head) < HEADER or head[:8] != MAGIC:
            raise IndexDamaged(f"{path} is damaged (not an inverted file); {hint}")
        n_rows, dim, postings, indexed = struct.unpack("<4q", head[8:40])
        if min(n_rows, dim, postings, indexed) < 0 or dim == 0 or indexed > n_rows:
            raise IndexDamaged(f"{path} is damaged (its header); {hint}")
        where = _layout(dim, postings, indexed)
        if size != where["size"]:
            raise IndexDamaged(f"{path} is damaged ({size} bytes, its header says "
                               f"{where['size']}); {hint}")
        self.n_rows, self.d, self.postings, self.ntotal = n_rows, dim, postings, indexed
        self.starts = np.fromfile(path, np.int64, dim + 1, offset=where["starts"])
        if (self.starts[0] != 0 or self.starts[-1] != postings
                or np.any(np.diff(self.starts) < 0)):
            raise IndexDamaged(f"{path} is damaged (its list starts); {hint}")
        self.ids = _array(path, copy_from, np.int32, where["ids"], postings)
        self.weights = _array(path, copy_from, np.float32, where["weights"], postings)
        self.indexed = _array(path, copy_from, np.int32, where["indexed"], indexed)

    def list(self, word):
        """(image numbers, weights) of one word's list."""
        a, b = int(self.starts[word]), int(self.starts[word + 1])
        return self.ids[a:b], self.weights[a:b]

    def scores(self, query) -> tuple[np.ndarray, np.ndarray]:
        """(image numbers, scores) of every image sharing a word with ``query`` (a dense
        float row of ``d`` values), in the order they were met."""
        words = np.flatnonzero(query).astype(np.int64)
        if not len(words) or not self.postings:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        scores, seen, touched = self._buffers()
        m, bad = load("_inverted", "inverted file").accumulate(
            self.ids, self.weights, self.starts, words,
            np.ascontiguousarray(query[words], np.float32), scores, seen, touched)
        hit = touched[:m].astype(np.int64)
        out = scores[hit]
        scores[hit] = 0
        seen[hit] = 0
        if bad:
            raise IndexDamaged(f"{self.path} is damaged (image numbers beyond its "
                               f"{self.n_rows} images); run `features index` to rebuild it")
        return hit, out

    def _buffers(self):
        """This thread's score accumulator, marks and list of images met (one of each per
        image, zero between queries): threads of a server share the index, not these."""
        held = getattr(self._local, "buffers", None)
        if held is None:
            held = (np.zeros(self.n_rows, np.float32), np.zeros(self.n_rows, np.uint8),
                    np.empty(self.n_rows, np.int32))
            self._local.buffers = held
        return held

    def search(self, queries, k, params=None):
        """(scores float32 (n, k), image numbers int64 (n, k)) of the k best images per
        query row, ties by image number; -1 and -inf past the images that share a word."""
        if params is not None:
            raise ParameterError("an inverted file takes no search parameters", "params")
        q = np.atleast_2d(np.asarray(queries, np.float32))
        if q.shape[1] != self.d:
            raise ParameterError(f"queries must have {self.d} values, got {q.shape[1]}")
        k = int(k)
        out_s = np.full((len(q), k), -np.inf, np.float32)
        out_i = np.full((len(q), k), -1, np.int64)
        for r, row in enumerate(q):
            hit, s = self.scores(row)
            if len(hit) > k:
                keep = np.argpartition(-s, k - 1)[:k]
                hit, s = hit[keep], s[keep]
            order = np.lexsort((hit, -s))
            out_s[r, :len(order)] = s[order]
            out_i[r, :len(order)] = hit[order]
        return out_s, out_i

    def check_structure(self, ok_with_features=None, block=1 << 24) -> list[str]:
        """What is wrong inside the file (``features verify``): image numbers out of range
        or not increasing within a list, weights not finite, the indexed images not those
        with features; every value read."""
        problems = []
        for a in range(0, self.postings, block):
            ids = np.asarray(self.ids[a:a + block])
            if len(ids) and (ids.min() < 0 or ids.max() >= self.n_rows):
                problems.append(f"image numbers beyond the {self.n_rows} images")
                break
            if not np.isfinite(np.asarray(self.weights[a:a + block])).all():
                problems.append("weights that are not finite")
                break
        if not problems and self.postings:
            ids = np.asarray(self.ids)
            down = np.flatnonzero(np.diff(ids) <= 0) + 1
            # a step down is allowed only where a list starts
            if not np.isin(down, self.starts).all():
                problems.append("a list whose image numbers do not increase")
        if ok_with_features is not None and not np.array_equal(np.asarray(self.indexed),
                                                               ok_with_features):
            problems.append("its images are not those with features")
        return problems


def _array(path, copy_from, dtype, offset, n):
    """``n`` values from ``offset``: mapped, or copied through the held files' checked
    descriptor (nothing done to the file afterwards can fault a copy)."""
    if n == 0:
        return np.zeros(0, dtype)
    if copy_from is None:
        return np.memmap(path, dtype, "r", offset, (n,))
    out = np.empty(n, dtype)
    copy_from.read_into(INVERTED_FILE, offset, out)
    return out
