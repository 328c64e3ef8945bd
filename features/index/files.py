"""The index files of one generation, checked against the manifest's record as they are
opened and held open while they are used.

What is checked when: at every open, each file's size against the record, and its SHA-256
when it is at most ``HASH_AT_OPEN[name]`` bytes (about 0.2 s per 100 MB):

- ``index.faiss`` up to 1 GiB: FAISS's reader trusts its input, and a flipped bit in its
  structure can crash the process (a flipped byte of an IVF's header aborts in malloc), so
  every index the automatic choice makes at 1.28M images is hashed (PQ codes and ids, 61 MB;
  an exact index, at most 200 MB). Larger ones (custom factories, dense encodings refined at
  half precision) are checked for size, dimension and vector count at open;
- ``index.refine`` up to 64 MiB (about 60,000 images): its reader checks its structure
  whatever the size (header, size, row pointers; columns beyond the dimension count as
  zeros), so a damaged larger file is never read out of bounds, but a flipped value can
  change a score until ``features verify``, which hashes every file whole, finds it;
- ``index.inverted`` up to 64 MiB, likewise: its reader checks its header, size and list
  starts whatever the size.

A file a reader maps stays the file it checked: it is held open, and before each search its
size and modification time (of the open file, not of the path) are compared with those it
had, so a file truncated or rewritten in place (``cp`` over it, ``rsync --inplace``) is
refused with :class:`IndexChanged` instead of reading pages that no longer exist, which
kills the process with SIGBUS. The project's own writers never do that: a build writes a
new generation and removes the old one's files, which a process that has them open keeps
reading. A file changed in place between that check and the read is not caught.
"""
from __future__ import annotations

import hashlib
import os

from ..exceptions import IndexChanged, IndexDamaged
from .layout import INDEX_FILE, INVERTED_FILE, REFINE_FILE, index_paths

HASH_AT_OPEN = {INDEX_FILE: 1 << 30, REFINE_FILE: 64 << 20, INVERTED_FILE: 64 << 20}
_BLOCK = 1 << 22


def file_digest(f) -> str:
    """SHA-256 (hex) of an open binary file, read from its start in blocks."""
    h = hashlib.sha256()
    f.seek(0)
    while chunk := f.read(_BLOCK):
        h.update(chunk)
    f.seek(0)
    return h.hexdigest()


def describe_files(paths) -> dict:
    """The record of files ``{name: path}``: ``{name: {"bytes": size, "sha256": hex}}``."""
    out = {}
    for name, path in paths.items():
        with open(path, "rb") as f:
            out[name] = {"bytes": os.fstat(f.fileno()).st_size, "sha256": file_digest(f)}
    return out


def recorded(record, name) -> dict:
    """What the record says of one index file: ``bytes`` and ``sha256`` (records made
    before checksums: only the sizes they kept)."""
    files = (record or {}).get("files")
    if isinstance(files, dict) and isinstance(files.get(name), dict):
        return files[name]
    legacy = {INDEX_FILE: "bytes", REFINE_FILE: "refine_bytes"}.get(name)
    size = (record or {}).get(legacy)
    return {"bytes": size} if isinstance(size, int) else {}


def file_problem(f, expect, hash_limit=None) -> str | None:
    """What is wrong with an open index file against its record ``expect`` (``recorded``):
    its size, or its checksum when it is at most ``hash_limit`` bytes (None: any size);
    None when nothing is."""
    size = os.fstat(f.fileno()).st_size
    if expect.get("bytes") is not None and size != expect["bytes"]:
        return f"{size} bytes, the manifest records {expect['bytes']}"
    digest = expect.get("sha256")
    if digest and (hash_limit is None or size <= hash_limit) and file_digest(f) != digest:
        return "its checksum is not the one the manifest records"
    return None


def rebuild_hint(directory) -> str:
    # a build takes damaged or missing files for not current: no --force needed
    return f"run `features index {directory}` to rebuild it"


class OpenIndexFiles:
    """The index files of ``record`` opened and checked (sizes; checksums of files of at
    most ``hash_limit`` bytes, by default ``HASH_AT_OPEN``'s), held open while the index
    is used. ``paths``: ``{name:
    path}``. Raises :class:`IndexDamaged` for a file that is missing or not the recorded
    one."""

    def __init__(self, directory, record, hash_limit=None):
        self.directory = directory
        self.paths = index_paths(directory, record)
        self.mapped = set()            # names of files a reader maps: checked by check()
        self._files, self._stats = {}, {}
        try:
            for name, path in self.paths.items():
                limit = HASH_AT_OPEN.get(name, 0) if hash_limit is None else hash_limit
                self._open(name, path, recorded(record, name), limit)
        except BaseException:
            self.close()
            raise

    def _open(self, name, path, expect, hash_limit):
        try:
            f = open(path, "rb")
        except FileNotFoundError:
            raise IndexDamaged(f"{path} is missing; {rebuild_hint(self.directory)}") from None
        self._files[name] = f
        st = os.fstat(f.fileno())
        self._stats[name] = (st.st_size, st.st_mtime_ns)
        problem = file_problem(f, expect, hash_limit)
        if problem:
            raise IndexDamaged(f"{path} is damaged ({problem}); {rebuild_hint(self.directory)}")

    def is_open(self, name) -> bool:
        """Whether the path still names the file opened (a reader that opens it by path,
        as FAISS does, read the file that was checked)."""
        try:
            st = os.stat(self.paths[name])
        except OSError:
            return False
        held = os.fstat(self._files[name].fileno())
        return (st.st_dev, st.st_ino) == (held.st_dev, held.st_ino)

    def check(self):
        """Raise :class:`IndexChanged` when a mapped file was truncated or rewritten in
        place since it was opened."""
        for name in self.mapped:
            st = os.fstat(self._files[name].fileno())
            if (st.st_size, st.st_mtime_ns) != self._stats[name]:
                raise IndexChanged(f"{self.paths[name]} was truncated or rewritten in place "
                                   f"while in use ({st.st_size} bytes, was "
                                   f"{self._stats[name][0]}); restart after `features index` "
                                   f"(which never rewrites a file in use)")

    def close(self):
        for f in self._files.values():
            f.close()
