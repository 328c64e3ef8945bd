"""Giving freed memory back to the system.

A long-running process (``features serve``) that frees a large upload frees it to the C
allocator, not necessarily to the system: glibc returns a freed block only when it was
mapped on its own or lies at the top of the heap; the many small buffers a socket reads
into stay in the heap, and the process's resident size keeps the high-water mark of its
busiest moment. :func:`return_free_memory` asks the allocator to give back every free page
(``malloc_trim(0)``, glibc); elsewhere it does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools

__all__ = ["return_free_memory"]


@functools.cache
def _malloc_trim():
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):   # not glibc
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def return_free_memory() -> bool:
    """Return the allocator's free pages to the system; False where that is not possible."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
