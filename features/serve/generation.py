"""The generation of a store that ``features serve`` answers from, and the switch to a newer one.

A rerun of ``features run`` (or ``index``, ``aggregate``) writes a new generation of the store
under the server: new store.h5, shard and index files, each renamed over the old one. The
server never mixes the two. Each :class:`Generation` holds everything a request reads, opened
together: the :class:`~features.search.Searcher` (store.h5 through its descriptor, the key
table mapped from it, the index mapped, each shard file checked to be the one of this
generation), the per-image columns and the caches. :class:`Generations` keeps the one that
new requests get:

- when a request arrives, and at most every ``interval`` seconds, it compares the identity
  (device, inode, size, modification time) of store.h5, the index files and manifest.json on
  disk with those of the generation served: a ``stat`` of four paths;
- a change opens the new generation whole in a background thread, once no job holds the
  store's lock; it is swapped in for new requests only if the files did not change again while
  it was opened, and the lock is still free;
- requests in flight finish on the generation they started on; a retired generation is closed
  when the last of them ends;
- a new generation that cannot be opened (no index yet, a half-written store) leaves the old
  one serving, and is tried again when the files change again; ``pending`` says why.

The old generation stays readable after a rerun as long as its files are open or mapped; a
shard it had not opened yet is gone (replaced), and reading it is refused with a StoreError,
which the server answers with 503 until the new generation is in.
"""
from __future__ import annotations

import os
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..exceptions import FeaturesError, first_line
from ..index import INDEX_FILE, REFINE_FILE, current_index_paths
from ..search import Searcher
from ..store import OK
from ..store.layout import MANIFEST_FILE, STORE_FILE
from ..store.lock import lock_holder
from .thumbs import LRUCache, SourceFiles


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="milliseconds")


def disk_identity(store_file, directory) -> tuple:
    """What identifies the generation on disk now: (dev, ino, size, mtime_ns) of store.h5, the
    index files and manifest.json (None for a file that is not there)."""
    out = []
    try:
        # the index of the generation the manifest names now (index-GEN/), else the old layout
        index = current_index_paths(directory)
    except (FeaturesError, OSError, ValueError):  # an unreadable manifest: seen below
        index = {}
    for path in (store_file, index.get(INDEX_FILE, directory / INDEX_FILE),
                 index.get(REFINE_FILE, directory / REFINE_FILE), directory / MANIFEST_FILE):
        try:
            st = os.stat(path)
        except OSError:
            out.append(None)
            continue
        out.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)


def _opened_is(generation, identity) -> bool:
    """Whether the store.h5 the generation opened is the file ``identity`` describes."""
    try:
        st = os.fstat(generation.store.h5.id.get_vfd_handle())
    except (OSError, RuntimeError, ValueError, TypeError):
        return False
    return identity[0] == (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class Generation:
    """One opened generation: its searcher, per-image columns, source files and caches.

    ``users`` counts the requests and pool calls using it; once retired, it is closed when
    that count falls to zero."""

    def __init__(self, store_path, options, number: int, identity: tuple):
        # the process's thread limits are set by the first generation, before any request
        # runs; set again from another thread while requests compute in BLAS, they crash it
        self.searcher = Searcher(store_path, params=options.search_params,
                                 thread_limits=number == 1)
        self.store = self.searcher.store
        try:
            self.classes = list(self.store.classes)
            self.names = list(self.store.class_names)
            # the small per-image columns, read once (13 bytes an image: 17 MB at 1.28M
            # images); a lookup of an HDF5 dataset by path costs about a millisecond
            h5 = self.store.h5
            self.columns = {name: h5["images/" + name][:]
                            for name in ("label", "width", "height", "status")}
            # one image's file is looked for at start, so that /api/health tells whether
            # thumbnails will really come
            ok = np.flatnonzero(self.columns["status"] == OK)
            self.files = SourceFiles(self.store.dir,
                                     probe=self.store.key_of(int(ok[0])) if len(ok) else None)
        except BaseException:
            self.searcher.close()
            raise
        self.thumbs = LRUCache(options.thumb_cache)
        self.queries = LRUCache(options.query_cache)
        self.number, self.identity = number, identity
        self.opened = time.time()
        self.switched = None
        self._users, self._retired, self._closed = 0, False, False
        self._lock = threading.Lock()

    def enter(self) -> Generation:
        with self._lock:
            self._users += 1
        return self

    def leave(self, *_):
        with self._lock:
            self._users -= 1
            last = self._retired and self._users == 0
        if last:
            self.close()

    def retire(self):
        with self._lock:
            self._retired = True
            last = self._users == 0
        if last:
            self.close()

    def close(self):
        with self._lock:
            if self._closed:
                return
            self._closed = True
        # the store's files only: the searcher's thread limits are the process's, and the
        # next generation set them too
        self.store.close()

    def describe(self) -> dict:
        store_file = self.identity[0]
        return {"number": self.number,
                "store_mtime": _iso(store_file[3] / 1e9) if store_file else None,
                "store_size": store_file[2] if store_file else None,
                "opened": _iso(self.opened),
                "switched": _iso(self.switched) if self.switched else None}


class Generations:
    """The generation new requests get, and the watch for a newer one (see the module)."""

    def __init__(self, store_path, options, interval: float = 0.5):
        self.store_path, self.options, self.interval = store_path, options, interval
        first = None
        # a store being rewritten while the server starts: open it again until store.h5 and
        # the files around it are those that were opened
        for attempt in range(3):
            before = self._on_disk_of(store_path)
            first = Generation(store_path, options, 1, before)
            if attempt == 2 or (_opened_is(first, before)
                                and self._on_disk_of(store_path) == before):
                break
            first.close()
        self.current = first
        self._checked = time.monotonic()
        self._failed = None             # the identity a failed attempt was made on
        self.pending = None             # why the newer generation on disk is not served
        self._opening = False
        self._lock = threading.Lock()

    @staticmethod
    def _on_disk_of(store_path):
        path = Path(store_path)
        store_file = path / STORE_FILE if path.is_dir() else path
        return disk_identity(store_file, store_file.parent)

    def _on_disk(self) -> tuple:
        store = self.current.store
        return disk_identity(store.path, store.dir)

    def poll(self, now: float | None = None, force: bool = False):
        """Start opening a newer generation if the files on disk changed (cheap: at most one
        ``stat`` of four files every ``interval`` seconds)."""
        now = time.monotonic() if now is None else now
        if self._opening or (not force and now - self._checked < self.interval):
            return
        self._checked = now
        on_disk = self._on_disk()
        if on_disk == self.current.identity:
            self.pending = None
            return
        if on_disk == self._failed:
            return
        with self._lock:
            if self._opening:
                return
            self._opening = True
        threading.Thread(target=self._open_next, args=(on_disk,), daemon=True,
                         name="features-serve-generation").start()

    def _open_next(self, on_disk):
        try:
            holder = lock_holder(self.current.store.dir)
            if holder is not None:
                self.pending = (f"a job holds the store's lock (pid {holder.get('pid', '?')}, "
                                f"{holder.get('command', '?')}): serving the generation opened "
                                f"before it")
                return
            try:
                nxt = Generation(self.store_path, self.options, self.current.number + 1,
                                 on_disk)
            except (FeaturesError, OSError) as e:
                self._failed = on_disk
                self.pending = f"the new generation cannot be opened: {first_line(e, 200)}"
                return
            if (not _opened_is(nxt, on_disk) or self._on_disk() != on_disk
                    or lock_holder(self.current.store.dir) is not None):
                nxt.close()  # it changed again while it was opened: the next poll retries
                self.pending = "the store changed while its new generation was opened"
                return
            nxt.switched = time.time()
            with self._lock:
                old, self.current = self.current, nxt
            self.pending = None
            old.retire()
        finally:
            self._opening = False
            self._checked = time.monotonic()

    def acquire(self) -> Generation:
        """The current generation, counted as used until its ``leave()``."""
        with self._lock:  # not retired between being read and being entered
            return self.current.enter()

    def close(self):
        self.current.searcher.close()
