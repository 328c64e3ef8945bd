"""Query by image: encode the query as the collection was encoded, search the index,
optionally re-rank the shortlist by geometric verification."""
from __future__ import annotations

import os
from dataclasses import dataclass

import cv2
import numpy as np

from .assign import Assigner
from .decode import DecodeError, decode_gray
from .encode import encode_words
from .index import load_index, search_vectors
from .sift import extract_image
from .store import OK, Store


class QueryError(ValueError):
    """A query that is neither a readable image nor a key of the store."""


@dataclass
class Query:
    name: str
    vector: np.ndarray      # (1, n_words) float32, L2-normalized
    frames: np.ndarray      # in the original image's pixel coordinates
    words: np.ndarray
    self_index: int | None  # the query's own row when it is a key of the store


class Searcher:
    """Holds an open store, its index and codebook for repeated queries."""

    def __init__(self, store_path):
        self.store = Store(store_path)
        self.index = load_index(self.store)
        self.quantizer = Assigner(self.store.centroids)
        self.idf = self.store.idf
        self.labels = self.store.column("label")
        self.classes = self.store.classes
        self._bovw = None

    def close(self):
        self.store.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _stored_row(self, i):
        if self._bovw is None:
            self._bovw = self.store.encoding("bovw")
        return self._bovw.to_dense(i, i + 1)

    def query_from_key(self, key) -> Query:
        i = self.store.index_of(key)
        if i is None:
            raise QueryError(f"{key}: no such image file, and no such key in {self.store.dir}")
        if self.store.column("status")[i] != OK:
            reason = self.store.h5["images/reason"].asstr()[i]
            raise QueryError(f"{key}: this image has no features in the store ({reason}) "
                             f"and cannot be a query")
        f = self.store.image_features(i)
        return Query(key, self._stored_row(i), f["frames"], f["words"], i)

    def query_from_bytes(self, name, data) -> Query:
        config = self.store.config
        try:
            decoded = decode_gray(data, config.max_side)
        except DecodeError as e:
            raise QueryError(f"{name}: not a usable image ({e})") from None
        frames, descriptors, _ = extract_image(config, decoded)
        if not len(descriptors):
            raise QueryError(f"{name}: no features ({decoded.width}x{decoded.height}, too "
                             f"small for the {config.preset} recipe or blank); nothing to "
                             f"search with")
        words = self.quantizer.assign(descriptors)
        ids, values = encode_words(words, self.quantizer.k, self.idf if config.tfidf else None,
                                   config.power)
        vector = np.zeros((1, self.quantizer.k), np.float32)
        vector[0, ids] = values
        return Query(name, vector, frames, words, None)

    def query(self, q: str) -> Query:
        if os.path.isfile(q):
            try:
                with open(q, "rb") as f:
                    data = f.read()
            except OSError as e:
                raise QueryError(f"{q}: cannot read ({e.strerror})") from None
            return self.query_from_bytes(q, data)
        return self.query_from_key(q)

    def search(self, query: Query, k=10, rerank=False, shortlist=100):
        """Best k images for a query: list of dicts with key, label, score (and inliers)."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k!r}")
        want = k + (query.self_index is not None)
        n = max(want, shortlist) if rerank else want
        scores, ids = search_vectors(self.index, query.vector, n)
        hits = [(float(s), int(i)) for s, i in zip(scores[0], ids[0])
                if i >= 0 and i != query.self_index]
        inliers = {}
        if rerank and len(query.frames):
            for _, i in hits:
                inliers[i] = verify(query, self.store.image_features(i))
            hits.sort(key=lambda h: (-inliers[h[1]], -h[0]))
        keys = self.store.keys
        out = []
        for score, i in hits[:k]:
            label = int(self.labels[i])
            hit = {"key": str(keys[i]), "label": label, "score": round(score, 6), "index": i}
            if self.classes and label >= 0:
                hit["class"] = self.classes[label]
            if rerank:
                hit["inliers"] = inliers.get(i, 0)
            out.append(hit)
        return out


def verify(query: Query, candidate: dict, max_per_word=4, threshold=None) -> int:
    """Inliers of a similarity transform (RANSAC) between features sharing a visual word.

    Words that occur more than ``max_per_word`` times in either image are left out: they
    are texture, and their correspondences are mostly wrong.
    """
    return len(verified_matches(query, candidate, max_per_word, threshold)[0])


def verified_matches(query: Query, candidate: dict, max_per_word=4, threshold=None):
    """The correspondences that :func:`verify` counts as inliers.

    Returns ``(qi, ci)``: int arrays of equal length, rows of ``query.frames`` and of
    ``candidate["frames"]`` that the similarity transform maps onto each other (what a
    viewer draws as lines between the two images).
    """
    none = (np.zeros(0, np.int64), np.zeros(0, np.int64))
    qw, cw = query.words, candidate["words"]
    if len(qw) < 3 or len(cw) < 3:
        return none
    pairs_q, pairs_c = [], []
    order_c = np.argsort(cw, kind="stable")
    sorted_c = cw[order_c]
    for word in np.intersect1d(qw, cw):
        qi = np.flatnonzero(qw == word)
        lo, hi = np.searchsorted(sorted_c, [word, word + 1])
        ci = order_c[lo:hi]
        if len(qi) > max_per_word or len(ci) > max_per_word:
            continue
        pairs_q.append(np.repeat(qi, len(ci)))
        pairs_c.append(np.tile(ci, len(qi)))
    if not pairs_q:
        return none
    qi, ci = np.concatenate(pairs_q), np.concatenate(pairs_c)
    if len(qi) < 3:
        return none
    src = query.frames[qi, :2].astype(np.float32)
    dst = candidate["frames"][ci, :2].astype(np.float32)
    if threshold is None:
        extent = max(float(np.ptp(dst[:, 0])), float(np.ptp(dst[:, 1])), 1.0)
        threshold = 0.015 * extent
    _, mask = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC,
                                          ransacReprojThreshold=threshold, maxIters=500,
                                          confidence=0.99)
    if mask is None:
        return none
    keep = mask.ravel().astype(bool)
    return qi[keep].astype(np.int64), ci[keep].astype(np.int64)
