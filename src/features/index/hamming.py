"""Hamming embedding (``index.hamming``): selective matching of the descriptors behind the
words of an inverted file.

With a large vocabulary a word still holds many local patterns that only resemble each
other; two descriptors in the same word are a match only when they are near. Hamming
embedding (Jegou, Douze and Schmid 2008) keeps, for each descriptor of the collection, a
binary signature of where it lies inside its word: the signs of a fixed random orthogonal
projection of the descriptor (``bits`` components, 32 or 64), each against its word's
median of that component over a sample of the collection's descriptors (words with fewer
than ``MIN_PER_WORD`` sampled descriptors take the sample's median). A query descriptor of
word ``w`` and signature ``s`` matches the postings of ``w`` whose signatures lie within
``threshold`` bits of ``s`` (24 of 64, the paper's; 12 of 32), each adding
``idf(w)**2 * exp(-h**2 / sigma**2)`` (``sigma`` a quarter of the bits) to its image; an
image's score is that sum divided by the L2 norms of the query's and the image's tf-idf
histograms (``idf`` times the word counts), so that an image compared with itself scores 1.

The file, little-endian, memory-mapped by readers::

    header      64 bytes: magic b"FEATHAM1", then int64 rows (the store's images), words,
                postings (descriptors indexed), bits, seed (of the projection), threshold
                (the largest Hamming distance that matches), and zeros
    starts      int64 (words + 1): the postings of word w are starts[w]:starts[w + 1]
    signatures  uint64 (postings): bit b is component b of the projection above its word's
                threshold (bits past ``bits`` are zero)
    projection  float32 (bits, 128): the projection's rows, orthonormal
    thresholds  float32 (words, bits): each word's medians
    idf         float32 (words): the weights of the words
    norms       float32 (rows): each image's normalization, 0 for images not indexed
    ids         int32 (postings): image numbers, not decreasing within a list

Memory on disk: 12 bytes per descriptor (an 8-byte signature and a 4-byte image number),
plus ``4 * bits`` bytes per word. Built (:func:`write_hamming`) in two streaming passes
over blocks of at most ``BLOCK_DESCRIPTORS`` descriptors, as ``write_inverted`` builds:
the lengths of the lists, the normalizations and a seeded sample of at most ``SAMPLE``
projected descriptors, then each block's signatures scattered into a file of the final
size, allocated first. Memory: one block, the sample and the list starts.
"""
from __future__ import annotations

import os
import struct
import threading

import numpy as np

from .._ext import load
from ..exceptions import IndexDamaged, ParameterError, StoreError
from .layout import HAMMING_FILE

MAGIC = b"FEATHAM1"
HEADER = 64
BITS = (32, 64)
DESCRIPTOR = 128
SAMPLE = 500_000           # projected descriptors the thresholds are learned from
MIN_PER_WORD = 8           # fewer sampled descriptors in a word: the global medians
BLOCK_DESCRIPTORS = 1 << 18


def check_bits(bits) -> int:
    """``bits`` as an int, or ParameterError naming it."""
    if isinstance(bits, bool) or bits not in BITS:
        raise ParameterError(f"hamming must be one of {', '.join(map(str, BITS))} bits, got "
                             f"{bits!r}", "hamming")
    return int(bits)


def default_threshold(bits) -> int:
    """The largest Hamming distance that matches: 24 of 64 bits (the paper's), 12 of 32."""
    return bits * 3 // 8


def projection(bits, seed=0) -> np.ndarray:
    """float32 (bits, 128): ``bits`` orthonormal rows, from a seeded Gaussian matrix's QR."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((DESCRIPTOR, DESCRIPTOR)))
    return np.ascontiguousarray(q[:, :bits].T, np.float32)


def project(proj, descriptors) -> np.ndarray:
    return np.asarray(descriptors, np.float32) @ proj.T


def learn_thresholds(projected, words, n_words, min_per_word=MIN_PER_WORD) -> np.ndarray:
    """float32 (n_words, bits): each word's median of each projected component over the
    sample ``projected`` (its descriptors' ``words``); the sample's medians for words with
    fewer than ``min_per_word`` descriptors in it."""
    bits = projected.shape[1]
    out = np.empty((n_words, bits), np.float32)
    out[:] = np.median(projected, axis=0) if len(projected) else 0
    if not len(projected):
        return out
    order = np.argsort(words, kind="stable")
    w = np.asarray(words)[order]
    uniq, first, count = np.unique(w, return_index=True, return_counts=True)
    keep = count >= min_per_word
    uniq, first, count = uniq[keep], first[keep], count[keep]
    lo, hi = first + (count - 1) // 2, first + count // 2
    for b in range(bits):
        v = projected[order, b]
        v = v[np.lexsort((v, w))]          # sorted within each word, words in order
        out[uniq, b] = (v[lo] + v[hi]) / 2
    return out


def signatures(proj, thresholds, words, descriptors) -> np.ndarray:
    """uint64 (n,): the signature of each descriptor (``words``: their words)."""
    above = project(proj, descriptors) > thresholds[np.asarray(words, np.int64)]
    padded = np.zeros((len(above), 64), bool)
    padded[:, :above.shape[1]] = above
    return np.packbits(padded, axis=1, bitorder="little").view("<u8").ravel()


def histogram_norms(image_of, words, idf, n_images) -> np.ndarray:
    """float64 (n_images,): the L2 norm of each image's tf-idf histogram (``idf`` times
    its word counts), its descriptors' images ``image_of`` (0 .. n_images - 1)."""
    if not len(words):
        return np.zeros(n_images)
    pair = np.asarray(image_of, np.int64) * len(idf) + np.asarray(words, np.int64)
    pairs, counts = np.unique(pair, return_counts=True)
    weight = (counts * idf[pairs % len(idf)].astype(np.float64)) ** 2
    return np.sqrt(np.bincount(pairs // len(idf), weight, minlength=n_images))


def _layout(n_rows, n_words, postings, bits) -> dict:
    """Byte offset of each section, and the file's size."""
    at, where = HEADER, {}
    for name, size in (("starts", 8 * (n_words + 1)), ("signatures", 8 * postings),
                       ("projection", 4 * bits * DESCRIPTOR), ("thresholds", 4 * n_words * bits),
                       ("idf", 4 * n_words), ("norms", 4 * n_rows), ("ids", 4 * postings)):
        where[name] = at
        at += size
    where["size"] = at
    return where


def write_hamming(path, blocks, n_rows, n_words, bits, idf, *, total, seed=0,
                  sample=SAMPLE, min_per_word=MIN_PER_WORD, progress=None) -> int:
    """Write the Hamming-embedding postings of the descriptors ``blocks()`` yields to
    ``path``; returns the number of descriptors indexed.

    ``blocks`` is called twice (two passes) and yields ``(ids, counts, words,
    descriptors)``: increasing image numbers, each one's number of descriptors, and their
    words (int, below ``n_words``) and uint8 (n, 128) descriptors, image after image.
    ``total``: about how many descriptors the blocks hold (the sampling rate is
    ``sample / total``). ``idf``: the weight of each word. ``progress(done)``: images
    added so far, in the second pass."""
    bits = check_bits(bits)
    idf = np.asarray(idf, np.float32)
    if idf.shape != (n_words,):
        raise ParameterError(f"idf must hold {n_words} weights, got {idf.shape}", "idf")
    proj = projection(bits, seed)
    rng = np.random.default_rng(seed + 1)
    rate = min(1.0, sample / max(1, total))
    counts = np.zeros(n_words, np.int64)
    norms = np.zeros(n_rows, np.float32)
    kept, kept_words, n_kept = [], [], 0
    for ids, per, words, descriptors in blocks():
        words = _checked_words(words, n_words)
        counts += np.bincount(words, minlength=n_words)
        local = np.repeat(np.arange(len(ids)), per)
        norms[ids] = histogram_norms(local, words, idf, len(ids))
        take = np.flatnonzero(rng.random(len(words)) < rate)[:max(0, sample - n_kept)]
        if len(take):
            kept.append(project(proj, descriptors[take]))
            kept_words.append(words[take])
            n_kept += len(take)
    sample_x = np.concatenate(kept) if kept else np.zeros((0, bits), np.float32)
    sample_w = np.concatenate(kept_words) if kept_words else np.zeros(0, np.int64)
    del kept, kept_words
    thresholds = learn_thresholds(sample_x, sample_w, n_words, min_per_word)
    del sample_x, sample_w
    starts = np.zeros(n_words + 1, np.int64)
    np.cumsum(counts, out=starts[1:])
    postings = int(starts[-1])
    where = _layout(n_rows, n_words, postings, bits)
    with open(path, "wb+") as f:
        # the whole file first: a full disk fails here, before any page is mapped
        os.posix_fallocate(f.fileno(), 0, where["size"])
        f.write((MAGIC + struct.pack("<6q", n_rows, n_words, postings, bits, seed,
                                     default_threshold(bits))).ljust(HEADER, b"\0"))
        f.write(starts.tobytes())
        f.seek(where["projection"])
        for part in (proj, thresholds, idf, norms):
            f.write(np.ascontiguousarray(part, "<f4").tobytes())
        f.flush()
    out_s = np.memmap(path, "<u8", "r+", where["signatures"], (postings,)) if postings \
        else None
    out_i = np.memmap(path, "<i4", "r+", where["ids"], (postings,)) if postings else None
    cursor = starts[:-1].copy()
    done = 0
    for ids, per, words, descriptors in blocks():
        if not len(words):
            continue
        words = _checked_words(words, n_words)
        sig = signatures(proj, thresholds, words, descriptors)
        images = np.repeat(np.asarray(ids, np.int32), per)
        order = np.argsort(words, kind="stable")   # by word, images in order within one
        words, sig, images = words[order], sig[order], images[order]
        uniq, first, per_word = np.unique(words, return_index=True, return_counts=True)
        dest = cursor[words] + np.arange(len(words)) - np.repeat(first, per_word)
        out_s[dest] = sig
        out_i[dest] = images
        cursor[uniq] += per_word
        done += len(ids)
        if progress is not None:
            progress(done)
    for mm in (out_s, out_i):
        if mm is not None:
            mm.flush()
            del mm
    return postings


def _checked_words(words, n_words):
    words = np.asarray(words, np.int64)
    if len(words) and (words.min() < 0 or words.max() >= n_words):
        raise StoreError(f"descriptors assigned to words beyond the {n_words} of the "
                         f"vocabulary; run `features encode` again")
    return words


class HammingFile:
    """An ``index.hamming`` opened for search, memory-mapped (or, with ``copy_from``, read
    into memory through the held :class:`~features.index.files.OpenIndexFiles`). Held
    by the inverted file it goes with (``InvertedFile.hamming``): a query with
    descriptors is answered by :meth:`search`, a query by vector by the inverted file."""

    def __init__(self, path, *, hint="run `features index` to rebuild it", copy_from=None):
        self.path = path
        self._local = threading.local()
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(HEADER)
        if len(head) < HEADER or head[:8] != MAGIC:
            raise IndexDamaged(f"{path} is damaged (not a Hamming embedding file); {hint}")
        n_rows, n_words, postings, bits, seed, threshold = struct.unpack("<6q", head[8:56])
        if (min(n_rows, n_words, postings, seed) < 0 or n_words == 0 or bits not in BITS
                or not 0 <= threshold <= bits):
            raise IndexDamaged(f"{path} is damaged (its header); {hint}")
        where = _layout(n_rows, n_words, postings, bits)
        if size != where["size"]:
            raise IndexDamaged(f"{path} is damaged ({size} bytes, its header says "
                               f"{where['size']}); {hint}")
        self.n_rows, self.d, self.postings, self.bits = n_rows, n_words, postings, bits
        self.seed, self.threshold = seed, threshold
        self.starts = np.fromfile(path, np.int64, n_words + 1, offset=where["starts"])
        if (self.starts[0] != 0 or self.starts[-1] != postings
                or np.any(np.diff(self.starts) < 0)):
            raise IndexDamaged(f"{path} is damaged (its list starts); {hint}")

        def read(dtype, name, n):
            return _array(path, copy_from, dtype, where[name], n)
        self.signatures = read(np.uint64, "signatures", postings)
        self.ids = read(np.int32, "ids", postings)
        # the small sections, read whole: every query uses them
        self.projection = np.array(read(np.float32, "projection", bits * DESCRIPTOR)
                                   ).reshape(bits, DESCRIPTOR)
        self.thresholds = np.array(read(np.float32, "thresholds", n_words * bits)
                                   ).reshape(n_words, bits)
        self.idf = np.array(read(np.float32, "idf", n_words))
        self.norms = np.array(read(np.float32, "norms", n_rows))
        self.ntotal = int(np.count_nonzero(self.norms))
        sigma = bits / 4
        h = np.arange(threshold + 1, dtype=np.float64)
        self.by_distance = np.exp(-h ** 2 / sigma ** 2).astype(np.float32)

    def signatures_of(self, words, descriptors) -> np.ndarray:
        """The signatures of a query's descriptors (their ``words``), as the file's were
        computed."""
        return signatures(self.projection, self.thresholds, _checked_words(words, self.d),
                          descriptors)

    def scores(self, words, descriptors) -> tuple[np.ndarray, np.ndarray]:
        """(image numbers, scores) of every image with a descriptor matching one of the
        query's (``words``, uint8 ``descriptors``), in the order they were met."""
        words = _checked_words(words, self.d)
        descriptors = np.asarray(descriptors)
        if descriptors.shape != (len(words), DESCRIPTOR):
            raise ParameterError(f"descriptors must be ({len(words)}, {DESCRIPTOR}), one per "
                                 f"word, got {descriptors.shape}", "descriptors")
        if not len(words) or not self.postings:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        sig = self.signatures_of(words, descriptors)
        q_norm = float(histogram_norms(np.zeros(len(words), np.int64), words, self.idf, 1)[0])
        scores, seen, touched = self._buffers()
        m, bad = load("_hamming", "Hamming embedding").accumulate(
            self.starts, self.signatures, self.ids, words, sig,
            np.ascontiguousarray(self.idf[words] ** 2, np.float32), self.by_distance,
            scores, seen, touched)
        hit = touched[:m].astype(np.int64)
        out = scores[hit]
        scores[hit] = 0
        seen[hit] = 0
        if bad:
            raise IndexDamaged(f"{self.path} is damaged (image numbers beyond its "
                               f"{self.n_rows} images); run `features index` to rebuild it")
        norm = self.norms[hit] * max(q_norm, 1e-12)
        return hit, (out / np.where(norm > 0, norm, 1)).astype(np.float32)

    def _buffers(self):
        """This thread's score accumulator, marks and list of images met (zero between
        queries): threads of a server share the file, not these."""
        held = getattr(self._local, "buffers", None)
        if held is None:
            held = (np.zeros(self.n_rows, np.float32), np.zeros(self.n_rows, np.uint8),
                    np.empty(self.n_rows, np.int32))
            self._local.buffers = held
        return held

    def search(self, words, descriptors, k) -> tuple[np.ndarray, np.ndarray]:
        """(scores float32 (1, k), image numbers int64 (1, k)) of the k best images for
        one query's descriptors, ties by image number; -1 and -inf past the images that
        match."""
        k = int(k)
        if k < 1:
            raise ParameterError(f"k must be >= 1, got {k}", "k")
        hit, s = self.scores(words, descriptors)
        if len(hit) > k:
            keep = np.argpartition(-s, k - 1)[:k]
            hit, s = hit[keep], s[keep]
        order = np.lexsort((hit, -s))
        out_s = np.full((1, k), -np.inf, np.float32)
        out_i = np.full((1, k), -1, np.int64)
        out_s[0, :len(order)] = s[order]
        out_i[0, :len(order)] = hit[order]
        return out_s, out_i

    def check_structure(self, ok_with_features=None, block=1 << 24) -> list[str]:
        """What is wrong inside the file (``features verify``): image numbers out of range
        or decreasing within a list, signature bits past ``bits``, thresholds, weights or
        norms not finite, the indexed images not those with features; every value read."""
        problems = []
        spare = np.uint64(0) if self.bits == 64 else ~np.uint64((1 << self.bits) - 1)
        for a in range(0, self.postings, block):
            ids = np.asarray(self.ids[a:a + block])
            if len(ids) and (ids.min() < 0 or ids.max() >= self.n_rows):
                problems.append(f"image numbers beyond the {self.n_rows} images")
                break
            if spare and np.any(np.asarray(self.signatures[a:a + block]) & spare):
                problems.append(f"signatures of more than {self.bits} bits")
                break
        if not problems and self.postings:
            down = np.flatnonzero(np.diff(np.asarray(self.ids)) < 0) + 1
            if not np.isin(down, self.starts).all():
                problems.append("a list whose image numbers decrease")
        for name in ("projection", "thresholds", "idf", "norms"):
            if not np.isfinite(getattr(self, name)).all():
                problems.append(f"{name} that are not finite")
        if ok_with_features is not None and not np.array_equal(
                np.flatnonzero(self.norms > 0), ok_with_features):
            problems.append("its images are not those with features")
        return problems


def _array(path, copy_from, dtype, offset, n):
    """``n`` values from ``offset``: mapped, or copied through the held files' checked
    descriptor."""
    if n == 0:
        return np.zeros(0, dtype)
    if copy_from is None:
        return np.memmap(path, dtype, "r", offset, (n,))
    out = np.empty(n, dtype)
    copy_from.read_into(HAMMING_FILE, offset, out)
    return out
