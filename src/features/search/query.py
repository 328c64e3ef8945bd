"""A query: an image encoded as the collection was (:mod:`.encoder`), an image of the store
by its key, or a vector."""
from __future__ import annotations

import numpy as np


class Query:
    """A query: its row of the indexed encoding, and its frames and words for verification.

    For a key query the frames and words are read from the store on first use only (a plain
    search never needs them; re-ranking from geometry records does not either)."""

    def __init__(self, name, vector, frames, words, self_index, width=0, height=0, *,
                 geometry=None, units="pixels", oriented=True, store=None, descriptors=None):
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
        self._descriptors = descriptors   # uint8 (n, 128) with the words, or None

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
    def descriptors(self) -> np.ndarray | None:
        """The SIFT descriptors behind the words (for Hamming embedding): an image's, or
        read from the store for a key query (None for a vector query)."""
        if self._descriptors is None and self._store is not None:
            self._descriptors = self._store.descriptors(self.self_index)
        return self._descriptors

    @property
    def words(self) -> np.ndarray:
        if self._words is None and self._store is not None:
            self._read()
        return self._words

    @words.setter
    def words(self, value):
        self._words = value
