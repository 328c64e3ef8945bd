"""Query by image: :class:`Searcher` holds a store, its index and its codebook; it encodes a
query as the collection was encoded (:mod:`.query`), searches the index, and optionally
re-ranks the shortlist by spatial verification (:mod:`.rerank`, :mod:`.spatial`)."""
from __future__ import annotations

import os

import numpy as np

from ..codebook.tree import VocabularyTree
from ..exceptions import ParameterError, QueryError
from ..extract.geometry import frame_geometry, keeps_geometry, unpack_geometry
from ..index import apply_params, index_record, load_index, search_vectors
from ..index.params import query_params
from ..store import OK, Store
from .encoder import Encoder
from .query import Query
from .rerank import SHORTLIST, expansion_images, order_by_inliers
from .spatial import VerifyParams, transform_matrix, verify_many, verify_pair


class Searcher:
    """Holds an open store, its index and codebook for repeated queries: open it once per
    process.

    The index is memory-mapped (``index_memory="copy"``: read into the process's memory, so
    that files truncated or rewritten in place under it cannot fault it, at the cost of
    their size; ``features serve`` copies); keys are found through the store's on-disk key index and
    a key query reads only its own row. Single queries run on ``threads`` threads (1 by
    default: FAISS's and OpenBLAS's thread pools only contend on one query);
    :meth:`search_batch` uses ``batch_threads`` for many queries at once.

    ``params`` (``{"nprobe": 16}`` or ``"nprobe=16,k_factor=4"``): search parameters of
    the index for every query, over the defaults the store records (``self.params`` holds
    those in force); :meth:`search` also takes ``nprobe`` and ``k_factor`` for one query.
    """

    def __init__(self, store_path, *, threads=1, batch_threads=None, params=None,
                 thread_limits=True, index_memory="map"):
        if index_memory not in ("map", "copy"):
            raise ParameterError(f"index_memory must be 'map' or 'copy', got "
                                 f"{index_memory!r}", "index_memory")
        self.store = Store(store_path)
        try:
            self.index = load_index(self.store, mmap=index_memory == "map")
            record = index_record(self.store.dir) or {}
            self.factory = record.get("factory")
            self.params = {**(record.get("params") or {}),
                           **apply_params(self.index, params or {}, self.factory)}
            self.encoding = record.get("encoding", "bovw")
            self.rows = self.store.encoding_rows(self.encoding)
            # queries by image: encoded as the indexed encoding's stored rows were
            self.encoder = Encoder(self.store, self.encoding)
            self.quantizer = self.encoder.quantizer
            self.labels = self.store.column("label")
            self.status = self.store.column("status")
            self.classes = self.store.classes
        except BaseException:
            self.store.close()
            raise
        self.verify_params = VerifyParams()
        self._sizes = None
        self._groups = {}
        self.threads = int(threads)
        self.batch_threads = int(batch_threads or os.cpu_count() or 1)
        # thread_limits=False: leave the process's BLAS threads alone (a server opening a new
        # generation while requests compute: changing them under a running BLAS call is unsafe)
        self._limits = _thread_limits(self.threads) if thread_limits else None

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

    @property
    def image_queries(self) -> str | None:
        """None when images can be queries; else why not (the indexed encoding cannot be
        computed from an image: ``Encoder.problem``)."""
        return self.encoder.problem

    def query_from_bytes(self, name, data) -> Query:
        """An image file's bytes as a query."""
        return self.query_from_image(data, name)

    def query_from_image(self, image, name=None) -> Query:
        """An image as a query: a file's path or bytes, or a decoded array (see
        :class:`~features.search.encoder.Encoder`), encoded as the indexed encoding."""
        if self.encoder.problem:
            raise QueryError(f"{name or 'image'}: images cannot be queries of this index: "
                             f"{self.encoder.problem}")
        f = self.encoder.features(image, name)
        vector = self.encoder.encode_features(f, name)
        return Query(name or "image", vector, f.frames, f.words, None, f.width, f.height,
                     descriptors=f.descriptors, **self._frame_kind())

    def query_from_vector(self, vector, name="vector") -> Query:
        """A row of the indexed encoding as a query ((dim,) or (1, dim)); it cannot be
        re-ranked (it has no features to verify)."""
        v = np.asarray(vector, np.float32)
        if v.ndim == 1:
            v = v[None]
        if v.ndim != 2 or v.shape != (1, self.rows.dim) or not np.all(np.isfinite(v)):
            raise ParameterError(f"a query vector must be {self.rows.dim} finite values (the "
                                 f"width of encodings/{self.encoding}), got shape "
                                 f"{np.shape(vector)}", "vector")
        return Query(name, np.ascontiguousarray(v), None, None, None)

    def _frame_kind(self):
        config = self.store.config
        return {"units": config.frame_units, "oriented": keeps_geometry(config.extractor)}

    def query(self, q) -> Query:
        """A query from what ``q`` is: a :class:`Query` as it is; a path of an image file
        (str or ``os.PathLike``), else a key of the store (str); an image file's bytes; a
        NumPy array: a vector of the indexed encoding when it is 1-D or (1, dim) float,
        else a decoded image."""
        if isinstance(q, Query):
            return q
        if isinstance(q, os.PathLike) or (isinstance(q, str) and os.path.isfile(q)):
            return self.query_from_image(q, os.fspath(q))
        if isinstance(q, str):
            return self.query_from_key(q)
        if isinstance(q, (bytes, bytearray, memoryview)):
            return self.query_from_image(bytes(q), "image")
        if isinstance(q, np.ndarray):
            vector = q.ndim == 1 or (q.ndim == 2 and q.shape == (1, self.rows.dim)
                                     and q.dtype.kind == "f")
            return self.query_from_vector(q) if vector else self.query_from_image(q)
        raise ParameterError(f"a query is a key, a path, image bytes, an image array or a "
                             f"vector, got {type(q).__name__}", "query")

    def search(self, query, k=10, rerank=False, shortlist=SHORTLIST, expand=0, *,
               nprobe=None, k_factor=None):
        """Best k images for a query: list of dicts with key, label, score (and inliers).

        ``query``: anything :meth:`query` takes (a key, an image's path, bytes or array,
        a vector), or a :class:`Query`. A key query leaves the image itself out.

        ``rerank`` verifies the best ``shortlist`` results geometrically (see
        :mod:`features.search.spatial`): those with at least ``MIN_INLIERS`` inliers come
        first, most inliers first, the others keep their order; results past the
        shortlist (when ``k`` is larger) follow unverified, in their order (0 inliers). ``expand`` (with
        ``rerank``) is average query expansion: the query vector plus those of its
        ``expand`` best verified results, normalized, is searched again and its shortlist
        verified too. ``nprobe``, ``k_factor``: the index's search parameters for this
        query (see :mod:`features.index.params`).
        """
        if k < 1:
            raise ParameterError(f"k must be >= 1, got {k!r}", "k")
        if shortlist < 1:
            raise ParameterError(f"shortlist must be >= 1, got {shortlist!r}")
        if expand < 0:
            raise ParameterError(f"expand must be >= 0, got {expand!r}")
        query = self.query(query)
        if rerank and query.self_index is None and query.frames is None:
            raise ParameterError("rerank needs an image or key query (a vector query has no "
                                 "features to verify)", "rerank")
        n = max(k, shortlist) if rerank else k
        tuning = {"nprobe": nprobe, "k_factor": k_factor}
        if self._selective(query):
            query_params(self.index, nprobe, k_factor, self.factory)  # refuses them
            hits = self._search_hamming(query, n)
        else:
            hits = self._search_vector(query.vector, n, query.self_index, **tuning)
        inliers = {}
        if rerank:
            # only the shortlist is verified: with k above it (a benchmark asking for 500
            # results) verifying every result cost more than the rest of the query
            head, tail = hits[:shortlist], hits[shortlist:]
            head = self._rerank(query, head, inliers)
            if expand:
                head = self._expand(query, head, inliers, expand, shortlist, tuning)
            seen = {i for _, i in head}
            hits = head + [h for h in tail if h[1] not in seen]
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

    def search_batch(self, queries, k=10, *, nprobe=None, k_factor=None):
        """Best k images for each of many queries at once (anything :meth:`query` takes),
        on ``batch_threads`` threads (no re-ranking)."""
        if k < 1:
            raise ParameterError(f"k must be >= 1, got {k!r}", "k")
        if not len(queries):
            return []
        queries = [self.query(q) for q in queries]
        if any(self._selective(q) for q in queries):
            query_params(self.index, nprobe, k_factor, self.factory)  # refuses them
            # Hamming embedding scores descriptors, one query at a time
            return [[self._hit(s, i) for s, i in self._search_hamming(q, k)]
                    if self._selective(q) else
                    [self._hit(s, i) for s, i in self._search_vector(q.vector, k,
                                                                     q.self_index)]
                    for q in queries]
        x = np.concatenate([q.vector for q in queries])
        import faiss
        extra = int(any(q.self_index is not None for q in queries))
        limits = _thread_limits(self.batch_threads)
        try:
            scores, ids = search_vectors(self.index, x, k + extra, nprobe=nprobe,
                                         k_factor=k_factor, what=self.factory)
        finally:
            if limits is not None:
                limits.restore_original_limits()
            faiss.omp_set_num_threads(self.threads)
        out = []
        for q, s_row, i_row in zip(queries, scores, ids):
            hits = [(s, i) for s, i in zip(s_row, i_row) if i >= 0 and i != q.self_index]
            out.append([self._hit(s, i) for s, i in hits[:k]])
        return out

    def _selective(self, query) -> bool:
        """Whether the query is scored by the index's Hamming embedding: the index has one
        and the query has descriptors (an image, or a key of the store; a vector query is
        scored by the inverted file's tf-idf rows)."""
        return (getattr(self.index, "hamming", None) is not None
                and (query.self_index is not None or query.descriptors is not None))

    def _search_hamming(self, query, n):
        """The n best (score, image) by Hamming embedding, the query's own image left out."""
        self.index.files.check()
        exclude = query.self_index
        scores, ids = self.index.hamming.search(query.words, query.descriptors,
                                                n + (exclude is not None))
        return [(float(s), int(i)) for s, i in zip(scores[0], ids[0])
                if i >= 0 and i != exclude][:n]

    def _search_vector(self, vector, n, exclude, nprobe=None, k_factor=None):
        import faiss
        # OpenMP's thread count is per thread: a server's worker threads would otherwise
        # search one query on every core, the threads contending
        faiss.omp_set_num_threads(self.threads)
        scores, ids = search_vectors(self.index, vector, n + (exclude is not None),
                                     nprobe=nprobe, k_factor=k_factor, what=self.factory)
        return [(float(s), int(i)) for s, i in zip(scores[0], ids[0])
                if i >= 0 and i != exclude][:n]

    def _rerank(self, query, hits, inliers):
        todo = [i for _, i in hits if i not in inliers]
        if todo:
            counts, _ = self.verify_candidates(query, todo)
            inliers.update(zip(todo, counts.tolist()))
        return order_by_inliers(hits, inliers)

    def _expand(self, query, hits, inliers, expand, n, tuning):
        top = expansion_images(hits, inliers, expand)
        if not top:
            return hits
        vector = query.vector.astype(np.float32).copy()
        for i in top:
            vector += self._stored_row(i)
        vector /= max(float(np.linalg.norm(vector)), 1e-12)
        more = self._search_vector(vector, n, query.self_index, **tuning)
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

    def match_groups(self):
        """What verification matches features by: None (their words), or int32 (words,),
        each word's group at the level of the store's vocabulary tree that holds at most
        ``verify_params.match_words`` groups (see :func:`match_groups`)."""
        limit = self.verify_params.match_words
        if limit not in self._groups:
            self._groups[limit] = match_groups(self.quantizer, limit)
        return self._groups[limit]

    def _grouped(self, words):
        groups = self.match_groups()
        return words if groups is None else groups[words]

    def query_geometry(self, query: Query):
        """The query's (words, features) for verification, computed once."""
        words, geom = self._query_geometry(query)
        return self._grouped(words), geom

    def _query_geometry(self, query: Query):
        if query.geometry is None:
            if query.self_index is not None and self.store.has_geometry:
                records, _ = self.store.geometry([query.self_index])
                query.geometry = unpack_geometry(records, query.width, query.height)
            elif query.width and query.height:
                query.geometry = frame_geometry(query.frames, query.words, query.width,
                                                query.height, units=query.units,
                                                oriented=query.oriented)
            else:
                raise ParameterError(f"{query.name}: the query's image size is unknown")
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
                                    units=config.frame_units,
                                    oriented=keeps_geometry(config.extractor))
                     for j, f in enumerate(self.store.image_features(int(i)) for i in ids)]
            offsets = np.zeros(len(ids) + 1, np.int64)
            np.cumsum([len(p[0]) for p in parts], out=offsets[1:])
            words = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int32)
            geom = (np.concatenate([p[1] for p in parts]) if parts
                    else np.zeros((0, 4), np.float32))
        return self._grouped(words), geom, offsets, np.maximum(w, h).astype(np.float32)

    def verify_candidates(self, query: Query, ids, n_threads=1):
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
            raise ParameterError(f"index must lie in [0, {self.store.n_images}), got {index!r}")
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


def match_groups(codebook, limit):
    """The groups of words that spatial verification matches features by, for a codebook
    (a :class:`~features.codebook.VocabularyTree`, or anything else with ``k`` words):
    None (the words themselves) when it has at most ``limit`` words or is not a tree;
    else the tree's coarse words (:meth:`VocabularyTree.coarse_words`) at its deepest
    level with at most ``limit`` of them.

    With 100,000 words an edited copy's feature often falls in another word than its
    original's (the descent parts near the leaves): matching by word finds too few
    tentative matches to verify, and re-ranking gained nothing. A coarser level of the
    same tree finds them again, at no cost: the geometry records keep the words, sorted,
    and a subtree's words are contiguous, so the groups stay sorted."""
    if not isinstance(codebook, VocabularyTree) or codebook.k <= limit:
        return None
    best = None
    for level in range(1, codebook.depth):
        groups = codebook.coarse_words(level)
        if len(np.unique(groups)) > limit:
            break
        best = groups
    if best is None or np.any(best[1:] < best[:-1]):
        # a tree numbered otherwise would unsort the features: match by word
        return None
    return best


def _thread_limits(threads):
    """Set the threads of FAISS (OpenMP) and of every BLAS loaded in the process."""
    import faiss
    faiss.omp_set_num_threads(threads)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # then only FAISS's own threads are set
        return None
    return threadpool_limits(limits=threads)
