"""Moved to :mod:`features.codebook.assign`; this path keeps working."""
from .codebook.assign import METHODS, Assigner  # noqa: F401
