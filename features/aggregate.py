"""Moved to :mod:`features.pipeline.aggregate` (and ``read_encoding`` to
:mod:`features.store.reader`); this path keeps working."""
from .pipeline.aggregate import aggregate, encode_shard, restore_encodings  # noqa: F401
from .store.reader import read_encoding  # noqa: F401
