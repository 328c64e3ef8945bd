"""Query by image: encode the query as the collection was encoded, search the index,
optionally re-rank the shortlist by geometric verification."""
from __future__ import annotations

import dataclasses
import os

import numpy as np

from .assign import Assigner
from .decode import DecodeError, decode_gray
from .encode import encode_words
from .index import load_index, search_vectors
from .sift import extract_image
from .store import OK, Store
from .verify import (VerifyParams, frame_geometry, keeps_geometry, transform_matrix,
                     unpack_geometry, verify_many, verify_pair)

# Re-ranking: a candidate is verified when at least this many features agree one to one
# with a similarity transform. Unrelated pairs of the copy-detection set (11,000 of them,
# 1000 words) reach at most 5 by chance; copies have a median of 56.
MIN_INLIERS = 8


class QueryError(ValueError):
    """A query that is neither a readable image nor a key of the store."""


class Query:
    """A query: its row of the indexed encoding, and its frames and words for verification.

    For a key query the frames and words are read from the store on first use only (a plain
    search never needs them; re-ranking from geometry records does not either)."""

    def __init__(self, name, vector, frames, words, self_index, width=0, height=0, *,
                 geometry=None, units="pixels", oriented=True, store=None):
        self.name = name
        self.vector = vector          # (1, dim) float32, as the indexed encoding
        self._frames = frames         # in the original image's pixel coordinates
        self._words = words
        self.self_index = self_index  # the query's own row when it is a key of the store
        self.width = width            # of the original image (0: unknown)
        self.height = height
        self.geometry = geometry      # (words, features) sorted by word, for verification
        self.units = units            # of frames: the store's frame_units
        self.oriented = oriented      # frames[:, 3] is an orientation (sparse SIFT)
        self._store = store

    def _read(self):
        f = self._store.image_features(self.self_index)
        self._frames, self._words = f["frames"], f["words"]

    @property
    def frames(self) -> np.ndarray:
        if self._frames is None and self._store is not None:
            self._read()
        return self._frames

    @frames.setter
    def frames(self, value):
        self._frames = value

    @property
    def words(self) -> np.ndarray:
        if self._words is None and self._store is not None:
            self._read()
        return self._words

    @words.setter
    def words(self, value):
        self._words = value


class Searcher:
    """Holds an open store, its index and codebook for repeated queries: open it once per
    process.

    The index is memory-mapped; keys are found through the store's on-disk key index and
    a key query reads only its own row. Single queries run on ``threads`` threads (1 by
    default: FAISS's and OpenBLAS's thread pools only contend on one query);
    :meth:`search_batch` uses ``batch_threads`` for many queries at once.
    """

    def __init__(self, store_path, *, threads=1, batch_threads=None):
        from .index import EncodingRows, index_record
        self.store = Store(store_path)
        try:
            self.index = load_index(self.store)
            record = index_record(self.store.dir) or {}
            self.encoding = record.get("encoding", "bovw")
            self.rows = EncodingRows(self.store.h5, self.encoding)
            self.quantizer = Assigner(self.store.centroids)
            self.idf = self.store.idf
            self.labels = self.store.column("label")
            self.status = self.store.column("status")
            self.classes = self.store.classes
        except BaseException:
            self.store.close()
            raise
        self.verify_params = VerifyParams()
        self._sizes = None
        self.threads = int(threads)
        self.batch_threads = int(batch_threads or os.cpu_count() or 1)
        self._limits = _thread_limits(self.threads)

    def close(self):
        if self._limits is not None:
            self._limits.restore_original_limits()
            self._limits = None
        self.store.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _stored_row(self, i):
        refine = getattr(self.index, "rows", None)
        if refine is not None:
            # the same row from the index's mapped sparse refine stage (to half precision):
            # an HDF5 read of its compressed chunk costs about half a millisecond
            columns, values = refine.row(i)
            vector = np.zeros((1, refine.dim), np.float32)
            vector[0, columns] = values
            return vector
        return self.rows.row(i)

    def query_from_key(self, key) -> Query:
        i = self.store.index_of(key)
        if i is None:
            raise QueryError(f"{key}: no such image file, and no such key in {self.store.dir}")
        if self.status[i] != OK:
            reason = self.store.h5["images/reason"].asstr()[i]
            raise QueryError(f"{key}: this image has no features in the store ({reason}) "
                             f"and cannot be a query")
        width, height = self._image_sizes()
        # frames and words are read only if they are used (drawing matches, verification
        # in a store without geometry records)
        return Query(key, self._stored_row(i), None, None, i, int(width[i]), int(height[i]),
                     store=self.store, **self._frame_kind())

    def query_from_bytes(self, name, data) -> Query:
        if self.encoding != "bovw":
            raise QueryError(f"{name}: the index is over the {self.encoding!r} encoding; only "
                             f"key queries are supported for it")
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
        return Query(name, vector, frames, words, None, decoded.width, decoded.height,
                     **self._frame_kind())

    def _frame_kind(self):
        config = self.store.config
        return {"units": config.frame_units, "oriented": keeps_geometry(config)}

    def query(self, q: str) -> Query:
        if os.path.isfile(q):
            try:
                with open(q, "rb") as f:
                    data = f.read()
            except OSError as e:
                raise QueryError(f"{q}: cannot read ({e.strerror})") from None
            return self.query_from_bytes(q, data)
        return self.query_from_key(q)

    def search(self, query: Query, k=10, rerank=False, shortlist=100, expand=0):
        """Best k images for a query: list of dicts with key, label, score (and inliers).

        ``rerank`` verifies the best ``shortlist`` results geometrically (see
        ``features.verify``): those with at least ``MIN_INLIERS`` inliers come first, most
        inliers first, the others keep their order. ``expand`` (with ``rerank``) is average
        query expansion: the query vector plus those of its ``expand`` best verified
        results, normalized, is searched again and its shortlist verified too.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k!r}")
        if shortlist < 1:
            raise ValueError(f"shortlist must be >= 1, got {shortlist!r}")
        if expand < 0:
            raise ValueError(f"expand must be >= 0, got {expand!r}")
        n = max(k, shortlist) if rerank else k
        hits = self._search_vector(query.vector, n, query.self_index)
        inliers = {}
        if rerank:
            hits = self._rerank(query, hits, inliers)
            if expand:
                hits = self._expand(query, hits, inliers, expand, n)
        out = []
        for score, i in hits[:k]:
            hit = self._hit(score, i)
            if rerank:
                hit["inliers"] = inliers.get(i, 0)
            out.append(hit)
        return out

    def _hit(self, score, i):
        label = int(self.labels[i])
        hit = {"key": self.store.key_of(i), "label": label, "score": round(float(score), 6),
               "index": int(i)}
        if self.classes and label >= 0:
            hit["class"] = self.classes[label]
        return hit

    def search_batch(self, queries, k=10):
        """Best k images for each of many queries at once, on ``batch_threads`` threads
        (no re-ranking)."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k!r}")
        if not len(queries):
            return []
        x = np.concatenate([q.vector for q in queries])
        import faiss
        extra = int(any(q.self_index is not None for q in queries))
        limits = _thread_limits(self.batch_threads)
        try:
            scores, ids = search_vectors(self.index, x, k + extra)
        finally:
            if limits is not None:
                limits.restore_original_limits()
            faiss.omp_set_num_threads(self.threads)
        out = []
        for q, s_row, i_row in zip(queries, scores, ids):
            hits = [(s, i) for s, i in zip(s_row, i_row) if i >= 0 and i != q.self_index]
            out.append([self._hit(s, i) for s, i in hits[:k]])
        return out

    def _search_vector(self, vector, n, exclude):
        import faiss
        # OpenMP's thread count is per thread: a server's worker threads would otherwise
        # search one query on every core, the threads contending
        faiss.omp_set_num_threads(self.threads)
        scores, ids = search_vectors(self.index, vector, n + (exclude is not None))
        return [(float(s), int(i)) for s, i in zip(scores[0], ids[0])
                if i >= 0 and i != exclude][:n]

    def _rerank(self, query, hits, inliers):
        todo = [i for _, i in hits if i not in inliers]
        if todo:
            counts, _ = self.verify(query, todo)
            inliers.update(zip(todo, counts.tolist()))
        verified = sorted((h for h in hits if inliers[h[1]] >= MIN_INLIERS),
                          key=lambda h: (-inliers[h[1]], -h[0]))
        return verified + [h for h in hits if inliers[h[1]] < MIN_INLIERS]

    def _expand(self, query, hits, inliers, expand, n):
        top = [i for _, i in hits if inliers[i] >= MIN_INLIERS][:expand]
        if not top:
            return hits
        vector = query.vector.astype(np.float32).copy()
        for i in top:
            vector += self._stored_row(i)
        vector /= max(float(np.linalg.norm(vector)), 1e-12)
        more = self._search_vector(vector, n, query.self_index)
        seen = {i for _, i in hits}
        # Scores of the first search for the images it found, of the expanded one for new
        # images: verified images rank by inliers anyway.
        merged = hits + [h for h in more if h[1] not in seen]
        return self._rerank(query, merged, inliers)

    # -- geometric verification

    def _image_sizes(self):
        if self._sizes is None:
            self._sizes = self.store.column("width"), self.store.column("height")
        return self._sizes

    def query_geometry(self, query: Query):
        """The query's (words, features) for verification, computed once."""
        if query.geometry is None:
            if query.self_index is not None and self.store.has_geometry:
                records, _ = self.store.geometry([query.self_index])
                query.geometry = unpack_geometry(records, query.width, query.height)
            elif query.width and query.height:
                query.geometry = frame_geometry(query.frames, query.words, query.width,
                                                query.height, units=query.units,
                                                oriented=query.oriented)
            else:
                raise ValueError(f"{query.name}: the query's image size is unknown")
        return query.geometry

    def candidate_geometry(self, ids):
        """(words, features, offsets, larger sides) of images ``ids`` for verification: one
        read per image from the geometry records, or from frames and words in stores made
        without them."""
        ids = np.asarray(ids, np.int64)
        width, height = self._image_sizes()
        w, h = width[ids], height[ids]
        if self.store.has_geometry:
            records, offsets = self.store.geometry(ids)
            words, geom = unpack_geometry(records, w, h, offsets)
        else:
            config = self.store.config
            parts = [frame_geometry(f["frames"], f["words"], int(w[j]), int(h[j]),
                                    units=config.frame_units, oriented=keeps_geometry(config))
                     for j, f in enumerate(self.store.image_features(int(i)) for i in ids)]
            offsets = np.zeros(len(ids) + 1, np.int64)
            np.cumsum([len(p[0]) for p in parts], out=offsets[1:])
            words = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int32)
            geom = (np.concatenate([p[1] for p in parts]) if parts
                    else np.zeros((0, 4), np.float32))
        return words, geom, offsets, np.maximum(w, h).astype(np.float32)

    def verify(self, query: Query, ids, n_threads=1):
        """Inlier counts (int32) and similarity transforms (n x 4: a, b, tx, ty, mapping query
        pixels to candidate pixels) of images ``ids`` against the query."""
        q_words, q_geom = self.query_geometry(query)
        words, geom, offsets, sides = self.candidate_geometry(ids)
        return verify_many(q_words, q_geom, words, geom, offsets, sides, self.verify_params,
                           n_threads)

    def matches(self, query: Query, index: int) -> dict:
        """The verified matches between the query and image ``index``, for drawing:
        ``inliers`` (their count), ``query_points`` and ``result_points`` (lists of [x, y]
        in pixels of each original image, pair by pair), ``transform`` (the 2 x 3 similarity
        mapping query pixels to result pixels, or None when nothing was verified), and
        ``query_size`` / ``result_size`` ([width, height])."""
        if not 0 <= index < self.store.n_images:
            raise ValueError(f"index must lie in [0, {self.store.n_images}), got {index!r}")
        q_words, q_geom = self.query_geometry(query)
        words, geom, _, sides = self.candidate_geometry([index])
        rows_q, rows_c, t = verify_pair(q_words, q_geom, words, geom, sides[0],
                                        self.verify_params)
        width, height = self._image_sizes()
        return {"inliers": int(len(rows_q)),
                "query_points": q_geom[rows_q, :2].round(2).tolist(),
                "result_points": geom[rows_c, :2].round(2).tolist(),
                "transform": transform_matrix(t).round(6).tolist() if len(rows_q) else None,
                "query_size": [int(query.width), int(query.height)],
                "result_size": [int(width[index]), int(height[index])]}


def _thread_limits(threads):
    """Set the threads of FAISS (OpenMP) and of every BLAS loaded in the process."""
    import faiss
    faiss.omp_set_num_threads(threads)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # then only FAISS's own threads are set
        return None
    return threadpool_limits(limits=threads)


def _extent(frames, units, width=None, height=None):
    """Width and height of an image: given, else 1 x 1 for normalized frames, else the
    extent of its frames (a dict from ``Store.image_features`` may not say)."""
    if width and height:
        return int(width), int(height)
    if units == "normalized" or not len(frames):
        return 1, 1
    return (max(int(np.ceil(float(frames[:, 0].max()))), 1),
            max(int(np.ceil(float(frames[:, 1].max()))), 1))


def verified_matches(query: Query, candidate: dict, max_per_word=4, threshold=None):
    """The correspondences that :func:`verify` counts as inliers.

    Returns ``(qi, ci)``: int arrays of equal length, rows of ``query.frames`` and of
    ``candidate["frames"]`` (a dict of ``frames``, ``words`` and optionally ``width`` and
    ``height``) that the verified similarity transform maps onto each other (what a viewer
    draws as lines between the two images). ``threshold``: the inlier distance in pixels
    of the candidate (default: 2% of its larger side). :meth:`Searcher.matches` does the
    same from the store's geometry records, and gives the transform too.
    """
    if max_per_word < 1:
        raise ValueError(f"max_per_word must be >= 1, got {max_per_word!r}")
    cf, cw = np.asarray(candidate["frames"]), np.asarray(candidate["words"])
    qw_, qh_ = _extent(query.frames, query.units, query.width, query.height)
    cw_, ch_ = _extent(cf, query.units, candidate.get("width"), candidate.get("height"))
    order_q = np.argsort(query.words, kind="stable")
    order_c = np.argsort(cw, kind="stable")
    q_words, q_geom = frame_geometry(query.frames[order_q], query.words[order_q], qw_, qh_,
                                     units=query.units, oriented=query.oriented)
    c_words, c_geom = frame_geometry(cf[order_c], cw[order_c], cw_, ch_, units=query.units,
                                     oriented=query.oriented)
    side = max(cw_, ch_)
    params = VerifyParams(max_per_word=int(max_per_word))
    if threshold is not None:
        if not threshold > 0:
            raise ValueError(f"threshold must be > 0, got {threshold!r}")
        params = dataclasses.replace(params, tolerance=float(threshold) / side)
    rows_q, rows_c, _ = verify_pair(q_words, q_geom, c_words, c_geom, side, params)
    return order_q[rows_q].astype(np.int64), order_c[rows_c].astype(np.int64)


def verify(query: Query, candidate: dict, max_per_word=4, threshold=None) -> int:
    """One-to-one inliers of the similarity transform verified between the query and a
    candidate (see :func:`verified_matches`)."""
    return len(verified_matches(query, candidate, max_per_word, threshold)[0])
