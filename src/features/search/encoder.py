"""New images encoded as a store encoded its own: :class:`Encoder`.

The store's recipe (decoding, extraction), its codebook, and for the encoding asked for its
method, options and models, read from the store: an image's row comes out as the stored
row of the same image does (``features.encodings.rows``; the encode step's ``bovw`` and
``bovw_counts``: ``features.encodings.bovw``, the weighting of the merge).

An encoding the store cannot compute from an image (one written by other code, without a
method recorded, or computed with models the store no longer holds) gives an
:class:`Encoder` whose :attr:`~Encoder.problem` says why, and whose :meth:`~Encoder.encode`
raises a :class:`~features.exceptions.QueryError` with that reason.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np

from ..codebook import quantizer
from ..decode import Decoded, decode_array, decode_gray
from ..encodings.bovw import encode_words, word_counts
from ..encodings.methods import METHODS
from ..encodings.rows import as_stored, encode_rows
from ..exceptions import DecodeError, QueryError, StoreError, first_line
from ..extract import Extraction, extract_image
from ..store import Store


@dataclass
class ImageFeatures:
    """What the store's recipe finds in one image: ``frames`` (in the store's units),
    ``descriptors`` (uint8 (n, 128)), ``words`` (int32 (n,)), and the size of the original
    image; ``decoded`` is the image the extractor ran on."""
    frames: np.ndarray
    descriptors: np.ndarray
    words: np.ndarray
    width: int
    height: int
    decoded: Decoded


class Encoder:
    """Encodes images as ``store`` encoded its own, into the encoding ``encoding``.

    ``store``: a store's path or an open :class:`~features.store.Store` (left open).
    :meth:`encode` takes an image as a file's path, its bytes, or a decoded array (gray,
    RGB, uint8 or float in [0, 1]; shrunk to the recipe's max side as a file is) and
    returns its (1, dim) float32 row, equal to the stored row of the same image.
    """

    def __init__(self, store, encoding="bovw"):
        self._own = not isinstance(store, Store)
        self.store = Store(store) if self._own else store
        try:
            self.config = self.store.config
            self.extraction = Extraction.of(self.config)
            self.encoding = encoding
            self.dim = self.store.encoding_rows(encoding).dim
            tree = self.store.codebook_tree
            # a vocabulary tree's words are the leaves its descent reaches, not the nearest
            self.quantizer = quantizer(self.store.centroids if tree is None else tree)
            self.problem = None
            self._spec()
        except BaseException:
            self.close()
            raise

    def close(self):
        if self._own:
            self.store.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _spec(self):
        """How the encoding's rows were computed, or the reason it cannot be from an image
        (:attr:`problem`)."""
        attrs = self.store.encoding_attrs(self.encoding)
        method = attrs.get("method")
        self.method, self.params, self.models, self.dtype = None, {}, {}, np.float32
        if method is None and self.encoding in ("bovw", "bovw_counts"):
            # the encode step's rows: tf-idf weighed by the store's idf, and raw counts
            self.method = "tfidf" if self.encoding == "bovw" else "counts"
            self.idf = self.store.idf if self.config.tfidf else None
            return
        where = f"encodings/{self.encoding}"
        if method not in METHODS:
            self.problem = (f"{where} was not computed by a method of features (no method "
                            f"recorded), so an image cannot be encoded as its rows")
            return
        self.method = method
        self.params = json.loads(attrs.get("params") or "{}")
        self.dtype = np.dtype(attrs.get("dtype") or "float32")
        used = json.loads(attrs.get("models") or "{}")
        try:
            stored = self.store.models(self.encoding)
        except StoreError as e:
            self.problem = first_line(e, None)
            return
        for name in METHODS[method].models:
            have = stored.get(name)
            if have is None:
                self.problem = (f"{where} was computed with models/{name}, which the store "
                                f"no longer holds")
                return
            checksum = str(have["attrs"].get("checksum", ""))
            if name in used and used[name] != checksum:
                self.problem = (f"{where} was computed with another models/{name} than the "
                                f"store holds now (rerun `features aggregate --replace`)")
                return
            self.models[name] = have

    def features(self, image, name=None) -> ImageFeatures:
        """Decode and extract one image with the store's recipe, and quantize its
        descriptors. A file that is no usable image, or an image in which the recipe finds
        nothing, is a :class:`QueryError` naming ``name`` (by default the path)."""
        decoded, name = self._decode(image, name)
        frames, descriptors, _ = extract_image(self.extraction, decoded)
        if not len(descriptors):
            raise QueryError(f"{name}: no features ({decoded.width}x{decoded.height}, too "
                             f"small for the {self.config.preset} recipe or blank); nothing "
                             f"to search with")
        words = self.quantizer.assign(descriptors)
        return ImageFeatures(frames, descriptors, words, decoded.width, decoded.height,
                             decoded)

    def _decode(self, image, name):
        if isinstance(image, Decoded):
            return image, name or "image"
        if isinstance(image, np.ndarray):
            return decode_array(image, self.config.max_side), name or "array"
        if isinstance(image, (str, os.PathLike)):
            name = name or str(image)
            try:
                with open(image, "rb") as f:
                    image = f.read()
            except OSError as e:
                raise QueryError(f"{name}: cannot read ({e.strerror})") from None
        try:
            return decode_gray(image, self.config.max_side), name or "image"
        except DecodeError as e:
            raise QueryError(f"{name or 'image'}: not a usable image ({e})") from None

    def encode(self, image, name=None) -> np.ndarray:
        """One image's row of the encoding: float32 (1, dim)."""
        return self.encode_features(self.features(image, name), name)

    def encode_features(self, f: ImageFeatures, name=None) -> np.ndarray:
        """The row of an image whose features :meth:`features` gave."""
        if self.problem:
            raise QueryError(f"{name or 'image'}: {self.problem}")
        if self.method in ("tfidf", "counts"):
            if self.method == "tfidf":
                ids, values = encode_words(f.words, self.quantizer.k, self.idf,
                                           self.config.power)
            else:
                ids, values = word_counts(f.words, self.quantizer.k)
            vector = np.zeros((1, self.quantizer.k), np.float32)
            vector[0, ids] = values
            return vector
        rows = encode_rows(self.method, self.params, offsets=[0, len(f.words)],
                           widths=[f.width], heights=[f.height], words=f.words,
                           frames=f.frames, descriptors=f.descriptors,
                           n_words=self.quantizer.k, models=self.models,
                           units=self.config.frame_units)
        if METHODS[self.method].sparse:
            return rows.toarray().astype(np.float32, copy=False)
        return as_stored(rows, self.dtype)
