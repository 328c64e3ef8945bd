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
  starts whatever the size;
- ``index.hamming`` (Hamming embedding, beside an inverted file) up to 64 MiB, likewise.

A reader either maps a file or copies it into the process's memory (``load_index``'s
``mmap``). A mapped file's pages are read from the file at each search: truncated or
rewritten in place (``cp`` over it, ``rsync --inplace``), it has pages that no longer exist,
and reading one kills the process with SIGBUS. A copy is read once, from the descriptor
that was checked (:meth:`OpenIndexFiles.read_into`, :meth:`OpenIndexFiles.reader`), and
nothing done to the file afterwards reaches it. Either way the file is held open, and
before each search its size and modification time (of the open file, not of the path) are
compared with those it had, so a file changed in place is refused with
:class:`IndexChanged` (the index no longer being the one on disk). For a mapped file that
check is also what keeps the process alive, except for a change in the microseconds
between the check and the read; for a copy it is only a statement. The project's own
writers never change a file in place: a build writes a new generation and removes the old
one's files, which a process that has them open keeps reading.
"""
from __future__ import annotations

import hashlib
import os

from ..exceptions import IndexChanged, IndexDamaged
from .layout import HAMMING_FILE, INDEX_FILE, INVERTED_FILE, REFINE_FILE, index_paths

HASH_AT_OPEN = {INDEX_FILE: 1 << 30, REFINE_FILE: 64 << 20, INVERTED_FILE: 64 << 20,
                HAMMING_FILE: 64 << 20}
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
        self.mapped = set()            # names of files a reader maps
        self.copied = set()            # names of files read into memory
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

    def file(self, name):
        """The open file ``name`` (binary, read-only)."""
        return self._files[name]

    def read_into(self, name, offset, out):
        """Fill ``out`` (a writable buffer) with the bytes of file ``name`` from ``offset``,
        read from the descriptor that was checked; :class:`IndexChanged` when the file ends
        before (it was cut short in place)."""
        view = memoryview(out).cast("B")
        fd, at = self._files[name].fileno(), 0
        while at < len(view):
            n = os.preadv(fd, [view[at:]], offset + at)
            if n == 0:
                raise self._changed(name)
            at += n

    def reader(self, name):
        """A callback ``read(n) -> bytes`` over file ``name`` from its start, through the
        descriptor that was checked (for ``faiss.PyCallbackIOReader``)."""
        fd, at = self._files[name].fileno(), 0

        def read(n):
            nonlocal at
            data = os.pread(fd, n, at)
            at += len(data)
            return data
        return read

    def check(self):
        """Raise :class:`IndexChanged` when a file the index maps or copied was truncated or
        rewritten in place since it was opened."""
        for name in self.mapped | self.copied:
            st = os.fstat(self._files[name].fileno())
            if (st.st_size, st.st_mtime_ns) != self._stats[name]:
                raise self._changed(name, st.st_size)

    def check_all(self):
        """:meth:`check` over every file held, mapped, copied or neither yet."""
        for name in self._files:
            st = os.fstat(self._files[name].fileno())
            if (st.st_size, st.st_mtime_ns) != self._stats[name]:
                raise self._changed(name, st.st_size)

    def _changed(self, name, size=None):
        if size is None:
            size = os.fstat(self._files[name].fileno()).st_size
        return IndexChanged(f"{self.paths[name]} was truncated or rewritten in place while "
                            f"in use ({size} bytes, was {self._stats[name][0]}); restart "
                            f"after `features index` (which never rewrites a file in use)")

    def close(self):
        for f in self._files.values():
            f.close()
