"""Moved to :mod:`features.pipeline.aggregate` (and ``read_encoding`` to
:mod:`features.store.encodings`); this path keeps working."""
from .pipeline.aggregate import aggregate, encode_shard, restore_encodings  # noqa: F401
from .store.encodings import read_encoding  # noqa: F401
