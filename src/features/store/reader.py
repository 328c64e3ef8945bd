"""Read access to a finished store: :class:`Store` (``open_store(path)``), and
:func:`read_encoding` for one encoding at once.

Everything comes out as NumPy arrays, ``scipy.sparse`` CSR matrices (sparse encodings)
or the models' own classes (:class:`~features.encodings.PCA`,
:class:`~features.encodings.GMM`)::

    with open_store("STORE") as store:
        keys, labels = store.keys, store.labels
        frames, descriptors = store.frames(0), store.descriptors("cat/1.jpg")
        X = store.encoding("fisher")          # (images, dim) float32 ndarray
        B = store.encoding("bovw")            # scipy.sparse.csr_matrix
        gmm = store.model("gmm")
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import threading
from pathlib import Path

import h5py
import numpy as np

from ..codebook.tree import VocabularyTree
from ..encodings.gmm import GMM
from ..encodings.pca import PCA
from ..exceptions import ParameterError, StoreError, first_line
from ..presets import Config
from .confined import check_confined, open_confined
from .encodings import EncodingRows, encoding_attrs, list_encodings
from .keys import KeyTable
from .layout import FORMAT, SHARDS_DIR, STORE_FILE, VERSION
from .manifest import repair_hint
from .models import encoding_models, model_path, read_encoding_models
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
    (:mod:`features.store.confined`).

    A store is one generation: store.h5 is read through the descriptor opened here (its key
    table included), and each shard file, opened when first needed, must be the very file
    that was checked at opening (same device, inode, size and modification time). A shard
    replaced since (a rerun writing a new generation) is refused with one line rather than
    read at this generation's offsets."""

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
        self._identities = {}   # shard path -> (dev, ino, size, mtime_ns) when checked
        self._fds = {}          # shard path -> descriptor kept open (shard_descriptor)
        self._fd_lock = threading.Lock()
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
        version = int(self.h5.attrs.get("version", 1))
        if version > VERSION:
            raise StoreError(f"{self.path} is a features store of format version {version}, "
                             f"newer than this version of features reads ({VERSION}); "
                             f"upgrade features")
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
            paths = [os.path.normpath(self.dir / SHARDS_DIR / str(r.get("file")))
                     for r in self.shard_records]
            self._identities = {p: _identity(os.stat(p)) for p in paths}
        self._records = None
        self._key_table = None

    def close(self):
        for s in self._shards.values():
            s.close()
        self._shards.clear()
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        self.h5.close()

    def _same_shard(self, path, st):
        """Refuse a shard file that is not the one checked when the store was opened."""
        known = self._identities.get(os.path.normpath(path))
        if known is not None and _identity(st) != known:
            raise StoreError(f"{path} was replaced after {self.path} was opened (a newer run "
                             f"wrote it); open the store again to read the new generation")

    @contextlib.contextmanager
    def shard_descriptor(self, path):
        """A descriptor of shard file ``path``, checked to be the file of this generation.

        The first ``_KEPT_SHARDS`` shards read stay open until :meth:`close` (a rerun that
        replaces them leaves them readable); others are opened for the read and closed after,
        so that a store of thousands of shards stays within the descriptor limit."""
        path = os.path.normpath(path)
        fd = self._fds.get(path)
        if fd is not None:
            yield fd
            return
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as e:
            raise StoreError(f"{path}: cannot open ({e.strerror})") from None
        kept = False
        try:
            self._same_shard(path, os.fstat(fd))
            with self._fd_lock:  # never closed while kept: another thread may be reading it
                if path not in self._fds and len(self._fds) < _KEPT_SHARDS:
                    self._fds[path] = fd
                    kept = True
            yield fd
        finally:
            if not kept:
                os.close(fd)

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
        """A column of the image table, ``images/NAME`` (``"label"`` or ``"images/label"``):
        ``key``, ``label``, ``width``, ``height``, ``status``, ``reason``, ``split``."""
        name = name[len("images/"):] if name.startswith("images/") else name
        if not name or name not in self.h5["images"]:
            have = ", ".join(sorted(self.h5["images"]))
            raise ParameterError(f"the store has no column images/{name} (it has: {have})",
                                 "name")
        ds = self.h5["images/" + name]
        return ds.asstr()[:] if ds.dtype.kind in "OS" else ds[:]

    @property
    def labels(self) -> np.ndarray:
        """Each image's class index into :attr:`classes` (int32; -1 without a label)."""
        return self.column("label")

    @property
    def status(self) -> np.ndarray:
        """Each image's status (0 ok; ``features.store.STATUS_NAMES`` names the others)."""
        return self.column("status")

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
    def codebook_tree(self) -> VocabularyTree | None:
        """The vocabulary tree the words were learned as (``codebook/tree``; its leaves are
        :attr:`centroids`), or None for a flat codebook. A tree whose arrays differ from
        their checksum, or do not form a tree, is a :class:`StoreError`."""
        if "codebook/tree" not in self.h5:
            return None
        from .write import tree_checksum
        g = self.h5["codebook/tree"]
        arrays = {name: g[name][:] for name in ("child_start", "child_next", "centers")}
        if tree_checksum(arrays) != g.attrs.get("checksum"):
            raise StoreError(f"{self.path}: codebook/tree differs from its checksum; the "
                             f"store is damaged (rerun the job into a new folder)")
        try:
            return VocabularyTree.from_arrays(
                self.centroids, branching=int(self.h5["codebook"].attrs.get("branching", 0)),
                **arrays)
        except ParameterError as e:
            raise StoreError(f"{self.path}: codebook/tree is not a vocabulary tree: {e}") \
                from None

    @property
    @_reading
    def idf(self) -> np.ndarray:
        return self.h5["encodings/idf"][:]

    @property
    @_reading
    def encodings(self) -> list[str]:
        """The names of the store's encodings, sorted."""
        return list_encodings(self.h5)

    @_reading
    def encoding(self, name="bovw", start=0, stop=None, *, dense=False):
        """Rows ``start:stop`` (all by default) of ``encodings/NAME`` as float32: a NumPy
        array for a dense encoding (``vlad``, ``fisher``), a ``scipy.sparse.csr_matrix``
        for a sparse one (``bovw``, ``spm``; ``dense=True``: a NumPy array). Failed images
        have all-zero rows."""
        rows = self.encoding_rows(name)
        stop = rows.n_rows if stop is None else stop
        return rows.block(start, stop) if dense else rows.matrix(start, stop)

    @_reading
    def encoding_rows(self, name="bovw") -> EncodingRows:
        """Row access to ``encodings/NAME`` (blocks, single rows), reading only what is
        asked (a damaged store.h5: one line, as for every read here)."""
        return EncodingRows(self.h5, name)

    @_reading
    def encoding_attrs(self, name) -> dict:
        """How ``encodings/NAME`` was computed: its attributes as plain values (``method``,
        ``params``, ``models``, ...)."""
        if name not in self.encodings:
            raise StoreError(f"the store has no encoding {name!r} (it has: "
                             f"{', '.join(self.encodings) or 'none'})")
        return encoding_attrs(self.h5, name)

    @_reading
    def models(self, encoding) -> dict:
        """The models ``encodings/ENCODING`` was computed with, as stored: model name ->
        {"arrays", "attrs"}; a missing or replaced one is a :class:`StoreError`."""
        return read_encoding_models(self.h5, encoding, str(self.dir))

    @_reading
    def model(self, name, encoding=None):
        """A model of the store as an object: ``"pca"`` a :class:`~features.encodings.PCA`,
        ``"gmm"`` a :class:`~features.encodings.GMM` (pass it to ``fisher_vector``),
        ``"kmeans-vlad"`` the VLAD centers (float32 (k, d), for ``vlad``), ``"codebook"``
        the visual words (float32 (k, 128)). Models belong to encodings
        (``models/ENCODING/MODEL``): ``encoding`` names whose; it may be left out when
        exactly one encoding has a model of that name."""
        if name == "codebook":
            return self.centroids
        owners = [e for e in self.encodings if name in encoding_models(self.h5, e)]
        if encoding is None:
            if len(owners) != 1:
                raise ParameterError(
                    f"model {name!r} belongs to {len(owners)} encodings of the store "
                    f"({', '.join(owners) or 'none'}); name one with encoding=", "encoding")
            encoding = owners[0]
        elif encoding not in owners:
            raise StoreError(f"encodings/{encoding} of {self.dir} has no model {name!r} "
                             f"(encodings with one: {', '.join(owners) or 'none'})")
        self.models(encoding)                   # present and equal to their checksums
        name_path = model_path(self.h5, encoding, name)
        g = self.h5[name_path]
        a = {k: g[k][:] for k in g}
        if name == "pca":
            return PCA(a["mean"], a["components"], a["explained_variance"],
                       bool(g.attrs.get("whiten", False)), float(g.attrs.get("eps", 0.0)))
        if name == "gmm":
            return GMM(a["means"], a["covariances"], a["priors"],
                       float(g.attrs.get("log_likelihood", np.nan)),
                       int(g.attrs.get("iterations", 0)), ())
        if name == "kmeans-vlad":
            return a["centers"]
        return a

    def _row(self, image) -> int:
        """The row of an image given by its number or its key."""
        if isinstance(image, str):
            i = self.index_of(image)
            if i is None:
                raise ParameterError(f"no image of key {image!r} in {self.dir}", "image")
            return i
        i = int(image)
        if not 0 <= i < self.n_images:
            raise ParameterError(f"image must lie in [0, {self.n_images}), got {image!r}",
                                 "image")
        return i

    @property
    @_reading
    def offsets(self) -> np.ndarray:
        """Image i's features are rows ``offsets[i]:offsets[i + 1]`` of the per-feature
        datasets (int64, images + 1)."""
        return self.h5["offsets"][:]

    def frames(self, image) -> np.ndarray:
        """The frames of one image (its number or key): float32 (n, 4), x, y, size and the
        orientation (sparse SIFT) or contrast norm (dense SIFT)."""
        return self._features_of(image, "frames")

    def words(self, image) -> np.ndarray:
        """The visual word of each of one image's features (int32)."""
        return self._features_of(image, "words").astype(np.int32)

    def descriptors(self, image) -> np.ndarray:
        """One image's SIFT descriptors (uint8 (n, 128)); a store kept without descriptors
        (``phow``, ``sbow``, ``--no-descriptors``) refuses."""
        if "descriptors" not in self.h5:
            raise StoreError(f"{self.dir} was kept without descriptors")
        return self._features_of(image, "descriptors")

    def _features_of(self, image, what):
        """Rows of ``what`` of one image, read from its shard file (not through the
        virtual dataset, which would give zeros for a shard that cannot be read)."""
        i = self._row(image)
        return self._read_features(i, what)

    @_reading
    def _read_features(self, i, what):
        if not self.shard_records:
            a, b = self.h5["offsets"][i:i + 2]
            return self.h5[what][a:b]
        s, j = self._shard_of(i)
        a, b = s["offsets"][j:j + 2]
        return s[what][a:b]

    def _shard_of(self, i):
        if self._starts is None:
            self._starts = np.cumsum([0] + [int(r["count"]) for r in self.shard_records])
        k = int(np.searchsorted(self._starts, i, side="right")) - 1
        return self._shard(k), i - int(self._starts[k])

    @_reading
    def image_features(self, i: int) -> dict:
        """Frames and words of image ``i``, read from its shard file (not through the virtual
        datasets, which would give zeros for a shard that cannot be read)."""
        return {"frames": self._read_features(i, "frames"),
                "words": self._read_features(i, "words").astype(np.int32), **self._size(i)}

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
            path = self.dir / SHARDS_DIR / name
            try:
                f = open_confined(path, self.dir)
            except OSError as e:
                raise StoreError(f"{self.dir}: shard shards/{name} is unreadable "
                                 f"({first_line(e, 160)}); {repair_hint(self.dir)}") from None
            try:
                self._same_shard(path, os.fstat(f.id.get_vfd_handle()))
            except BaseException:
                f.close()
                raise
            self._shards[k] = f
        return self._shards[k]

    @_reading
    def failures(self) -> list[tuple[int, str, str]]:
        g = self.h5["failures"]
        return list(zip(g["index"][:].tolist(), g["key"].asstr()[:], g["reason"].asstr()[:]))


def _identity(st) -> tuple:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


# shard descriptors a store keeps open (the others are opened for each read)
_KEPT_SHARDS = 256

# the shard's offset is read from the descriptor already checked, where the system lets a
# path name an open descriptor
_PROC_FD = os.path.isdir("/proc/self/fd")


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
            # this generation's file, or a StoreError
            with self.store.shard_descriptor(path) as fd:
                try:
                    with open_confined(f"/proc/self/fd/{fd}" if _PROC_FD else path,
                                    self.store.dir) as f:
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
                if k >= 0:  # HDF5 resolves virtual sources by path: check the file first
                    with self.store.shard_descriptor(self.parts[k][2]):
                        pass
                ds = self.store.h5[self.name]
                for j in rows:
                    out[out_offsets[j]:out_offsets[j + 1]] = ds[lo[j]:hi[j]]
                continue
            path, first = self.parts[k][2], self.parts[k][0]
            with self.store.shard_descriptor(path) as fd:
                for j in rows:
                    a, b = out_offsets[j] * self.row_bytes, out_offsets[j + 1] * self.row_bytes
                    got = os.preadv(fd, [flat[a:b]], base + (lo[j] - first) * self.row_bytes)
                    if got != b - a:
                        raise StoreError(f"{path}: shard is truncated ({self.name} of image "
                                         f"{ids[j]} is cut short)")
        return out, out_offsets


def open_store(path, **options) -> Store:
    """Open a finished store (its directory, or its ``store.h5``) for reading; close it
    with ``close()`` or use it in a ``with`` block. See :class:`Store`."""
    return Store(path, **options)


def read_encoding(store, name, start=0, stop=None, *, dense=True):
    """Rows ``start:stop`` of ``encodings/NAME`` as a dense float32 array, or with
    ``dense=False`` as :meth:`Store.encoding` gives them (a ``scipy.sparse`` CSR matrix for
    a sparse encoding). ``store``: a store's path, a :class:`Store`, or an open
    ``store.h5``."""
    if isinstance(store, (str, os.PathLike)):
        with Store(store) as s:
            return s.encoding(name, start, stop, dense=dense)
    if isinstance(store, Store):
        return store.encoding(name, start, stop, dense=dense)
    rows = EncodingRows(store, name)
    stop = rows.n_rows if stop is None else stop
    return rows.block(start, stop) if dense else rows.matrix(start, stop)
