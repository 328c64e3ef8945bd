"""Read access to a finished store: :class:`Store`."""
from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import h5py
import numpy as np

from ..encodings.bovw import CSR
from ..exceptions import ParameterError, StoreError, first_line
from ..presets import Config
from .confined import check_confined, open_confined
from .encodings import read_csr
from .keys import KeyTable
from .layout import FORMAT, SHARDS_DIR, STORE_FILE
from .manifest import repair_hint
from .shards import shard_problems


def _reading(method):
    """HDF5 errors while reading a store (a damaged file) become one line with the repair."""
    @functools.wraps(method)
    def read(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except (OSError, RuntimeError, KeyError) as e:
            if isinstance(e, KeyError) and "doesn't exist" in str(e):
                raise                       # an object the store does not have, not damage
            raise StoreError(f"{self.dir} is damaged ({first_line(e, 160)}); "
                             f"{repair_hint(self.dir)}, and `features verify {self.dir}` to "
                             f"check it") from None
    return read


class Store:
    """Read access to a finished store (a directory, or its store.h5).

    Opening checks that every shard the store was merged from is there with its size; a
    store with a missing or changed shard is refused with one line naming the repair, and
    so is one whose HDF5 files would read a file outside the store
    (:mod:`features.store.confined`)."""

    def __init__(self, path, *, check_shards=True, open_shards=False):
        path = Path(path)
        self.dir = path if path.is_dir() else path.parent
        self.path = path / STORE_FILE if path.is_dir() else path
        if not self.path.exists():
            raise StoreError(f"{path} is not a features store (no store.h5 in it)")
        try:
            self.h5 = h5py.File(self.path, "r")
        except OSError:
            raise StoreError(f"{self.path} is not a features store (not an HDF5 file)") from None
        self._shards = {}
        try:
            self._open(check_shards, open_shards)
        except BaseException:
            self.h5.close()
            raise

    @_reading
    def _open(self, check_shards, open_shards):
        check_confined(self.h5, self.dir, self.path)
        if self.h5.attrs.get("format") != FORMAT:
            raise StoreError(f"{self.path} is an HDF5 file but not a features store")
        try:
            self.config = Config.from_json(self.h5.attrs["config"])
            self.versions = json.loads(self.h5.attrs["versions"])
            self.n_images = int(self.h5.attrs["n_images"])
            self.shard_records = json.loads(self.h5.attrs.get("shards", "[]"))
        except (KeyError, ValueError, TypeError) as e:
            raise OSError(f"store.h5 attributes unreadable: {e}") from None
        self._keys = None
        self._starts = None
        self._shards = {}
        if check_shards:
            problems = shard_problems(self.dir, self.shard_records, open_files=open_shards)
            if problems:
                p = problems[0]
                more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
                raise StoreError(f"{self.dir}: shard {p['shard']} is {p['problem']}{more}; "
                                 f"{repair_hint(self.dir)}")
        self._records = None
        self._key_table = None

    def close(self):
        for s in self._shards.values():
            s.close()
        self._shards.clear()
        self.h5.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    @_reading
    def keys(self) -> np.ndarray:
        if self._keys is None:
            self._keys = self.h5["images/key"].asstr()[:]
        return self._keys

    @_reading
    def column(self, name) -> np.ndarray:
        return self.h5["images/" + name][:]

    @property
    def key_table(self) -> KeyTable | None:
        """The memory-mapped key index (None for a store written before it existed)."""
        if self._key_table is None and KeyTable.present(self.h5):
            self._key_table = KeyTable(self.h5, self.path)
        return self._key_table

    def index_of(self, key: str) -> int | None:
        """The row of a key: a binary search of the on-disk key index, never a scan."""
        if self.key_table is not None:
            return self.key_table.row_of(key)
        hits = np.flatnonzero(self.keys == key)
        return int(hits[0]) if len(hits) else None

    def key_of(self, i: int) -> str:
        if self.key_table is not None:
            return self.key_table.key_of(i)
        return self.h5["images/key"].asstr()[i]

    @property
    @_reading
    def classes(self) -> list[str]:
        return list(self.h5["labels/wnid"].asstr()[:]) if "labels" in self.h5 else []

    @property
    @_reading
    def class_names(self) -> list[str]:
        return list(self.h5["labels/name"].asstr()[:]) if "labels" in self.h5 else []

    @property
    @_reading
    def centroids(self) -> np.ndarray:
        return self.h5["codebook/centroids"][:]

    @property
    @_reading
    def idf(self) -> np.ndarray:
        return self.h5["encodings/idf"][:]

    @_reading
    def encoding(self, name="bovw") -> CSR:
        if "encodings/" + name not in self.h5:
            raise StoreError(f"{self.path} has no encoding {name!r}")
        return read_csr(self.h5["encodings/" + name])

    @_reading
    def image_features(self, i: int) -> dict:
        """Frames and words of image ``i``, read from its shard file (not through the virtual
        datasets, which would give zeros for a shard that cannot be read)."""
        if not self.shard_records:
            a, b = self.h5["offsets"][i:i + 2]
            return {"frames": self.h5["frames"][a:b],
                    "words": self.h5["words"][a:b].astype(np.int32), **self._size(i)}
        if self._starts is None:
            self._starts = np.cumsum([0] + [int(r["count"]) for r in self.shard_records])
        k = int(np.searchsorted(self._starts, i, side="right")) - 1
        j = i - int(self._starts[k])
        s = self._shard(k)
        a, b = s["offsets"][j:j + 2]
        return {"frames": s["frames"][a:b], "words": s["words"][a:b].astype(np.int32),
                **self._size(i)}

    def _size(self, i) -> dict:
        return {"width": int(self.h5["images/width"][i]),
                "height": int(self.h5["images/height"][i])}

    @property
    def has_geometry(self) -> bool:
        return "geometry" in self.h5

    def geometry(self, ids) -> tuple[np.ndarray, np.ndarray]:
        """Geometry records (``features.extract.geometry``) of images ``ids``, concatenated, and the
        offsets (len(ids) + 1) that split them; one read per image."""
        if not self.has_geometry:
            raise StoreError(f"{self.path} has no geometry records (made before they existed, "
                             f"or by a dense recipe); re-ranking reads frames and words instead")
        if self._records is None:
            self._records = _RecordReader(self, "geometry")
        return self._records.read(np.asarray(ids, np.int64))

    def _shard(self, k):
        if k not in self._shards:
            name = self.shard_records[k]["file"]
            try:
                self._shards[k] = open_confined(self.dir / SHARDS_DIR / name, self.dir)
            except OSError as e:
                raise StoreError(f"{self.dir}: shard shards/{name} is unreadable "
                                 f"({first_line(e, 160)}); {repair_hint(self.dir)}") from None
        return self._shards[k]

    @_reading
    def failures(self) -> list[tuple[int, str, str]]:
        g = self.h5["failures"]
        return list(zip(g["index"][:].tolist(), g["key"].asstr()[:], g["reason"].asstr()[:]))


class _RecordReader:
    """Rows ``offsets[i]:offsets[i + 1]`` of a virtual dataset whose shard parts are
    contiguous (uncompressed): one ``pread`` per image, straight from the shard file, rather
    than HDF5's virtual-dataset and chunk machinery (which costs milliseconds per read)."""

    def __init__(self, store: Store, name: str):
        ds = store.h5[name]
        self.store, self.name, self.dtype = store, name, ds.dtype
        self.tail = ds.shape[1:]
        self.row_bytes = int(np.prod(self.tail, dtype=np.int64)) * ds.dtype.itemsize
        self.offsets = store.h5["offsets"][:]
        parts = []
        if ds.is_virtual:
            for m in ds.virtual_sources():
                (start, *_), (stop, *_) = m.vspace.get_select_bounds()
                parts.append((start, stop + 1, store.dir / m.file_name, m.dset_name))
        parts.sort(key=lambda p: p[0])
        self.starts = np.array([p[0] for p in parts], np.int64)
        self.parts = parts
        self.base = {}          # part -> byte offset of the dataset in its file (None: not raw)

    def _base(self, k):
        if k not in self.base:
            _, _, path, name = self.parts[k]
            try:
                with open_confined(path, self.store.dir) as f:
                    d = f[name]
                    ok = d.chunks is None and d.compression is None and d.dtype == self.dtype
                    self.base[k] = d.id.get_offset() if ok else None
            except (OSError, KeyError) as e:
                raise StoreError(f"{path}: cannot read {name} ({e})") from None
        return self.base[k]

    def read(self, ids):
        n = self.store.n_images
        if len(ids) and (ids.min() < 0 or ids.max() >= n):
            raise ParameterError(f"image numbers must lie in [0, {n}), got "
                                 f"{ids.min()}..{ids.max()}")
        lo, hi = self.offsets[ids], self.offsets[ids + 1]
        out_offsets = np.zeros(len(ids) + 1, np.int64)
        np.cumsum(hi - lo, out=out_offsets[1:])
        out = np.empty((int(out_offsets[-1]),) + self.tail, self.dtype)
        flat = out.reshape(-1).view(np.uint8)
        part = np.searchsorted(self.starts, lo, side="right") - 1
        for k in np.unique(part[hi > lo]):
            rows = np.flatnonzero((part == k) & (hi > lo))
            base = self._base(int(k)) if k >= 0 else None
            if base is None:
                ds = self.store.h5[self.name]
                for j in rows:
                    out[out_offsets[j]:out_offsets[j + 1]] = ds[lo[j]:hi[j]]
                continue
            path, first = self.parts[k][2], self.parts[k][0]
            fd = os.open(path, os.O_RDONLY)
            try:
                for j in rows:
                    a, b = out_offsets[j] * self.row_bytes, out_offsets[j + 1] * self.row_bytes
                    got = os.preadv(fd, [flat[a:b]], base + (lo[j] - first) * self.row_bytes)
                    if got != b - a:
                        raise StoreError(f"{path}: shard is truncated ({self.name} of image "
                                         f"{ids[j]} is cut short)")
            finally:
                os.close(fd)
        return out, out_offsets
