"""Moved to :mod:`features.pipeline.aggregate`; this path keeps working."""
from .pipeline.aggregate import aggregate, encode_shard, restore_encodings  # noqa: F401
