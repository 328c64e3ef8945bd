"""Whether ``features serve`` copies its index into memory or maps it (``--index-memory``).

A copy (``features.index.load``) is read once from the files that were checked, and nothing
done to them afterwards can fault the server: a ``cp`` or ``rsync --inplace`` over a mapped
file kills a process reading it with SIGBUS. It costs the files' size in the server's own
memory (twice for the moment a new generation is opened beside the one serving), where a
mapped index costs only page cache, shared and reclaimable. ``auto`` (the default) copies
when the index files take at most ``FRACTION`` of the memory the process may use (the
machine's physical memory, or its cgroup's limit when lower), and maps them otherwise.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..exceptions import FeaturesError, ParameterError
from ..index import current_index_paths

CHOICES = ("auto", "copy", "map")
FRACTION = 0.25


def memory_limit() -> int | None:
    """Bytes of memory the process may use: physical memory, or the cgroup's limit when it
    is lower; None when neither is known."""
    try:
        limit = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        limit = None
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and (limit is None or int(text) < limit):
            limit = int(text)
    return limit


def index_bytes(directory) -> int:
    """Bytes of the index files the store's manifest names now (0 when unknown)."""
    try:
        paths = current_index_paths(Path(directory))
    except (FeaturesError, OSError, ValueError):
        return 0
    total = 0
    for path in paths.values():
        try:
            total += os.stat(path).st_size
        except OSError:
            pass
    return total


def choose(directory, option: str = "auto") -> tuple[str, str]:
    """("copy" or "map", why) for the index of the store in ``directory``."""
    if option not in CHOICES:
        raise ParameterError(f"index_memory must be one of {', '.join(CHOICES)}, got "
                             f"{option!r}", "index_memory")
    size = index_bytes(directory)
    if option != "auto":
        return option, f"--index-memory {option}"
    limit = memory_limit()
    bound = None if limit is None else int(limit * FRACTION)
    if bound is not None and size > bound:
        return "map", (f"{size / 2**20:,.0f} MiB, over the copy bound of {bound / 2**20:,.0f} "
                       f"MiB, a quarter of memory")
    return "copy", f"{size / 2**20:,.1f} MiB"
