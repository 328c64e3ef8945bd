"""The HDF5 store: one directory per job (:mod:`.layout` lists its files).

- :mod:`.layout`: file names, the format tag, image status codes, compression;
- :mod:`.atomic`: atomic files and the removal of dead writers' temporaries;
- :mod:`.manifest`: ``manifest.json``, the finished steps and shards;
- :mod:`.shards`: one shard file per shard of images, written by its worker;
- :mod:`.merge`: ``store.h5`` built from the shards;
- :mod:`.write`: the one writer of ``store.h5``'s layout, a function for each part;
- :mod:`.reader`: :class:`Store`, read access to a finished store;
- :mod:`.encodings`: the one reader and writer of the encoding layout
  (:class:`~.encodings.EncodingRows`);
- :mod:`.models`: the models each encoding learns (``models/ENCODING/MODEL``), and their
  checksums;
- :mod:`.keys`: the on-disk key index; :mod:`.lock`: one writer per store;
- :mod:`.oserrors`: a refused write as one line; :mod:`.verify`: the store half of
  ``features verify``.

Below the index: the store knows nothing of FAISS, sources or decoding.
"""
from ..exceptions import StoreError
from .atomic import atomic_file, atomic_path
from .layout import (EXTRACT_FAILED, FORMAT, NO_FEATURES, OK, REFUSED, STATUS_NAMES,
                     UNDECODABLE, UNREADABLE, VERSION, word_dtype)
from .lock import store_lock
from .manifest import Manifest, repair_hint
from .merge import merge
from .reader import Store, open_store, read_encoding
from .shards import ImageResult, write_shard
from .write import centroids_checksum, idf_checksum

__all__ = ["Store", "open_store", "read_encoding", "StoreError", "Manifest", "repair_hint", "store_lock", "merge",
           "write_shard", "ImageResult", "atomic_file", "atomic_path", "idf_checksum",
           "centroids_checksum", "word_dtype", "FORMAT", "VERSION", "OK", "UNREADABLE",
           "UNDECODABLE", "REFUSED", "EXTRACT_FAILED", "NO_FEATURES", "STATUS_NAMES"]
