"""The HDF5 store: one directory holding

    store.h5        the merged view that readers open (plain h5py works)
    shards/         one HDF5 file per shard of images, written atomically by the workers
    manifest.json   finished steps and shards, so that a rerun resumes
    index.faiss     the search index (see ``index``)

Ragged per-image data (frames, descriptors, words, scale) lives in the shards as one
concatenated dataset each plus ``offsets``; ``store.h5`` stitches the shards together as
HDF5 virtual datasets (no copy, paths relative to the store so it can be moved), and keeps
small real copies of the per-image tables, the codebook and the encodings.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from .encode import CSR, counts_csr, document_frequency, idf_weights, weight_rows
from .keys import KeyTable, KeyTableWriter
from .presets import Config
from .verify import COLUMNS as GEOMETRY_COLUMNS
from .verify import record_dtype

FORMAT = "features-store"
VERSION = 1

# Status codes of images/status; the reason column says more.
# NO_FEATURES: decoded, but the recipe finds nothing in it (too small, or blank); such
# images are left out of the index like the failed ones.
OK, UNREADABLE, UNDECODABLE, REFUSED, EXTRACT_FAILED, NO_FEATURES = 0, 1, 2, 3, 4, 5
STATUS_NAMES = {OK: "ok", UNREADABLE: "unreadable", UNDECODABLE: "undecodable",
                REFUSED: "refused by source", EXTRACT_FAILED: "extraction failed",
                NO_FEATURES: "no features"}

# gzip is the codec every HDF5 reader has (lzf and blosc need plugins outside h5py);
# level 1 with shuffle keeps most of the gain of higher levels at a fraction of the cost.
_COMPRESS = dict(compression="gzip", compression_opts=1, shuffle=True)
_STR = h5py.string_dtype("utf-8")
# Encoding rows are read one at a time by key queries: a 32 KB chunk (about 30 rows of
# 1000-word tf-idf) decompresses in a fraction of the time of a 256 KB one.
ENCODING_CHUNK = 1 << 13


class StoreError(ValueError):
    """A path that is not a store, or a store that does not hold what was asked."""


@dataclass
class ImageResult:
    key: str
    label: int
    width: int = 0
    height: int = 0
    status: int = OK
    reason: str = ""
    frames: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    descriptors: np.ndarray | None = None
    words: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    scale: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))
    word_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    word_counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    geometry: np.ndarray | None = None     # packed record for verification (features.verify)


def word_dtype(n_words):
    """int16 as the ILSVRC-2010 devkit stored words, while the codebook fits in it."""
    return np.int16 if n_words <= np.iinfo(np.int16).max + 1 else np.int32


def library_versions() -> dict:
    import cv2
    import faiss
    import joblib

    from . import __version__
    return {"features": __version__, "python": platform.python_version(),
            "numpy": np.__version__, "opencv": cv2.__version__, "faiss": faiss.__version__,
            "h5py": h5py.__version__, "hdf5": h5py.version.hdf5_version,
            "joblib": joblib.__version__}


def _chunked(f, name, data, chunk_rows):
    data = np.asarray(data)
    rows = max(1, min(chunk_rows, len(data)))
    chunks = (rows,) + data.shape[1:]
    return f.create_dataset(name, data=data, chunks=chunks if len(data) else None,
                            maxshape=(None,) + data.shape[1:] if len(data) else None,
                            **(_COMPRESS if len(data) else {}))


def _write_csr(group, csr: CSR, **attrs):
    group.create_dataset("indptr", data=csr.indptr.astype(np.int64))
    _chunked(group, "indices", csr.indices, 1 << 16)
    _chunked(group, "data", csr.data, 1 << 16)
    group.attrs["shape"] = (csr.n_rows, csr.n_cols)
    for k, v in attrs.items():
        group.attrs[k] = v


def read_csr(group) -> CSR:
    return CSR(group["indptr"][:], group["indices"][:], group["data"][:],
               int(group.attrs["shape"][1]))


def atomic_path(path) -> Path:
    """The temporary a writer fills before renaming it to ``path``: named by host and pid,
    so writers on different hosts of a cluster never share one."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{_HOST}-{os.getpid()}")


_HOST = socket.gethostname().replace("-", "_")


@contextlib.contextmanager
def atomic_file(path):
    """Yield a temporary path beside ``path``; on success rename it onto ``path`` (atomic on
    POSIX: readers see the old file or the new one, never half of one), on any error remove it.

    Whatever writes the temporary file (h5py, numpy, open) must have closed it before the
    block ends. ``store.h5`` is always replaced this way; to add to it, copy it to the
    temporary path, open that with h5py in "r+" mode, write, close, and let this rename it.
    """
    path = Path(path)
    tmp = atomic_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _shard_image(results: list[ImageResult], *, n_words, first, keep_descriptors,
                 geometry=False) -> bytes:
    """The bytes of one shard file, built in memory (HDF5's core driver).

    HDF5 never writes to the disk here, so a full disk or a read-only folder gives a plain
    OSError when the bytes are written, instead of an HDF5 handle that fails to close
    (which crashes the process on exit)."""
    n = len(results)
    lengths = np.array([len(r.frames) for r in results], np.int64)
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])

    def cat(attr, empty):
        parts = [getattr(r, attr) for r in results if len(r.frames)]
        return np.concatenate(parts) if parts else empty

    counts = counts_csr([(r.word_ids, r.word_counts) for r in results], n_words)
    with h5py.File(f"shard-{first}", "w", driver="core", backing_store=False) as f:
        f.attrs["format"] = FORMAT + "-shard"
        f.attrs["first"] = first
        f.attrs["count"] = n
        g = f.create_group("images")
        g.create_dataset("key", data=np.array([r.key for r in results], dtype=object), dtype=_STR)
        g.create_dataset("label", data=np.array([r.label for r in results], np.int32))
        g.create_dataset("width", data=np.array([r.width for r in results], np.int32))
        g.create_dataset("height", data=np.array([r.height for r in results], np.int32))
        g.create_dataset("status", data=np.array([r.status for r in results], np.uint8))
        g.create_dataset("reason", data=np.array([r.reason for r in results], dtype=object),
                         dtype=_STR)
        f.create_dataset("offsets", data=offsets)
        _chunked(f, "frames", cat("frames", np.zeros((0, 4), np.float32)).astype(np.float32), 8192)
        _chunked(f, "words", cat("words", np.zeros(0, np.int32)).astype(word_dtype(n_words)),
                 1 << 16)
        _chunked(f, "scale", cat("scale", np.zeros(0, np.int8)).astype(np.int8), 1 << 16)
        if keep_descriptors:
            _chunked(f, "descriptors",
                     cat("descriptors", np.zeros((0, 128), np.uint8)).astype(np.uint8), 4096)
        if geometry:
            f.create_dataset("geometry", data=cat("geometry", np.zeros(
                (0, len(GEOMETRY_COLUMNS)), record_dtype(n_words))))
        _write_csr(f.create_group("counts"), counts)
        f.flush()
        return f.id.get_file_image()


def idf_checksum(idf) -> str:
    return checksum(np.ascontiguousarray(idf, "<f4").tobytes())


def checksum(data) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def file_checksum(path, block=1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def write_shard(path, results: list[ImageResult], *, n_words, first, keep_descriptors,
                geometry=False) -> dict:
    """Write one shard to a temporary file, then rename it into place (atomic on POSIX).

    With ``geometry``, the images' geometry records (``ImageResult.geometry``) go to an
    uncompressed, contiguous dataset: a reader gets one image's record with one read.

    Returns its manifest record, with the file's size and checksum (``features verify``
    and reruns check them)."""
    path = Path(path)
    image = _shard_image(results, n_words=n_words, first=first,
                         keep_descriptors=keep_descriptors, geometry=geometry)
    with atomic_file(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(image)
    n = len(results)
    return {"file": path.name, "first": int(first), "count": n,
            "failed": int(sum(r.status != OK for r in results)),
            "descriptors": int(sum(len(r.frames) for r in results)),
            "first_key": results[0].key if n else "", "last_key": results[-1].key if n else "",
            "size": len(image), "checksum": checksum(image)}


class Manifest:
    """Finished steps and shards of one store, rewritten atomically after each change."""

    def __init__(self, directory):
        self.path = Path(directory) / "manifest.json"
        self.data = {"format": FORMAT, "version": VERSION, "config": None, "steps": {},
                     "shards": {}}
        if self.path.exists():
            fix = (f"move it away (or delete it) and rerun the same command: the store is then "
                   f"rebuilt from the start")
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                cause = getattr(e, "strerror", None) or type(e).__name__
                raise StoreError(f"{self.path}: unreadable manifest ({cause}); {fix}") from None
            problem = _manifest_problem(data)
            if problem:
                raise StoreError(f"{self.path}: not a features manifest ({problem}); {fix}")
            self.data = data

    def check_config(self, config: Config):
        saved = self.data.get("config")
        new = json.loads(config.to_json())
        if saved == new:
            return
        if saved is not None and not self.data["shards"] and "codebook" not in self.data["steps"]:
            # Nothing was built from the old configuration but perhaps the descriptor sample
            # (for example a first run that stopped on a bad --words): the store takes the new
            # configuration, and keeps the sample only if it would come out the same.
            changed = {k for k in set(saved) | set(new) if saved.get(k) != new.get(k)}
            if not changed <= _NOT_IN_SAMPLE:
                self.data["steps"] = {}
            saved = None
        if saved is None:
            self.data["config"] = new
            self.save()
        else:
            changed = sorted(k for k in set(saved) | set(new) if saved.get(k) != new.get(k))
            raise StoreError(f"{self.path.parent} was started with another configuration "
                             f"(differs in: {', '.join(changed)}); use a new output directory")

    def check_job(self, source, limit):
        """A store is one job over one source: resuming it with another source or limit would
        mix images of two jobs, so it is refused."""
        job = {"source": str(getattr(source, "root", "")), "kind": getattr(source, "kind", ""),
               "limit": limit}
        saved = self.data.get("job")
        if saved is None:
            self.data["job"] = job
            self.save()
        elif saved != job:
            was = f"{saved['source']} ({saved['kind']}" + (
                f", --limit {saved['limit']})" if saved["limit"] else ")")
            raise StoreError(f"{self.path.parent} was started on {was}; rerun with the same "
                             f"source and limit to resume, or use a new output directory")

    def save(self):
        with atomic_file(self.path) as tmp:
            tmp.write_text(json.dumps(self.data, indent=1, sort_keys=True), encoding="utf-8")

    def shard_done(self, number: int, summary: dict):
        self.data["shards"][str(number)] = summary
        self.save()

    def step_done(self, step: str, **info):
        self.data["steps"][step] = dict(info, finished=time.strftime("%Y-%m-%dT%H:%M:%S"))
        self.save()

    def is_done(self, step: str) -> bool:
        return step in self.data["steps"]


# Options that do not change pass 1's descriptor sample.
_NOT_IN_SAMPLE = {"words", "kmeans_iters", "tfidf", "power", "store_descriptors", "shard_size",
                  "failure_budget"}

_SHARD_FIELDS = {"file": str, "first": int, "count": int, "failed": int}


def _manifest_problem(data) -> str | None:
    """What is wrong with the shape of a manifest, or None."""
    if not isinstance(data, dict):
        return "not a JSON object"
    if data.get("format") != FORMAT:
        return f"format is {data.get('format')!r}"
    if not isinstance(data.get("config"), (dict, type(None))):
        return "config is not an object"
    for part in ("steps", "shards"):
        if not isinstance(data.get(part), dict):
            return f"{part} is not an object"
    for number, record in data["shards"].items():
        if not number.isdigit() or not isinstance(record, dict):
            return f"shard {number!r} is not a shard record"
        for k, t in _SHARD_FIELDS.items():
            if not isinstance(record.get(k), t):
                return f"shard {number} has no valid {k!r}"
    return None


def _vds(f, name, parts, dtype, tail_shape):
    """Concatenate same-named datasets of several shard files as one virtual dataset."""
    total = sum(n for _, n in parts)
    layout = h5py.VirtualLayout(shape=(total,) + tail_shape, dtype=dtype)
    at = 0
    for rel, n in parts:
        if n:
            layout[at:at + n] = h5py.VirtualSource(rel, name, shape=(n,) + tail_shape)
        at += n
    f.create_virtual_dataset(name, layout, fillvalue=0)


def centroids_checksum(centroids) -> str:
    """sha256 of the float32 centroids (dtype, shape, bytes)."""
    import hashlib
    a = np.ascontiguousarray(centroids, dtype=np.float32)
    h = hashlib.sha256(f"{a.dtype}{a.shape}".encode())
    h.update(a.tobytes())
    return h.hexdigest()


# HDF5 files whose writes failed: HDF5 cannot close them (closing one can crash the
# process), so they are kept open until the process exits (see _h5_writing).
_abandoned: list = []


@contextlib.contextmanager
def _h5_writing(tmp):
    """An HDF5 file being written to a temporary path, removed if anything fails.

    When a write fails (a full disk), HDF5 can neither flush nor close the file, and
    closing it may crash the process: the handle is then abandoned, not closed. Code that
    writes big HDF5 files to disk therefore runs in a worker process (``isolate``) that
    leaves right after reporting the error."""
    f = h5py.File(tmp, "w")
    try:
        yield f
        f.close()
    except BaseException as e:
        with contextlib.suppress(OSError):
            Path(tmp).unlink()
        if isinstance(e, (OSError, RuntimeError)):
            _abandoned.append(f)     # a failed write: closing could crash, see above
        else:
            f.close()
        raise


def merge(directory, config: Config, shard_files: list[str], *, centroids, codebook_attrs: dict,
          classes=(), names=(), splits=False, shard_records=(), idf=None) -> Path:
    """Build ``store.h5`` from finished shards, one shard in memory at a time.

    Two passes over the shards' word counts: document frequencies first, then the tf-idf
    rows, so the idf is that of the whole collection, unless an ``idf`` is given (a store
    encoded ``--like`` another weighs its words by the other's).
    """
    directory = Path(directory)
    out = directory / "store.h5"
    tmp = atomic_path(out)
    n_words = len(centroids)
    paths = [directory / "shards" / name for name in shard_files]
    df = np.zeros(n_words, np.int64)
    n_images = n_ok = 0
    sizes = []
    for p in paths:
        with h5py.File(p, "r") as s:
            ok = s["images/status"][:] == OK
            indptr = s["counts/indptr"][:]
            indices = s["counts/indices"][:]
            keep = np.repeat(ok, np.diff(indptr))
            df += document_frequency(indices[keep], n_words)
            n_images += len(ok)
            n_ok += int(ok.sum())
            sizes.append((int(s["offsets"][-1]), "descriptors" in s,
                          s["geometry"].dtype if "geometry" in s else None))
    if idf is not None:
        idf = np.asarray(idf, np.float32)
        if idf.shape != (n_words,):
            raise StoreError(f"an idf of shape {idf.shape} for a codebook of {n_words} words")
    elif config.tfidf:
        idf = idf_weights(df, max(n_ok, 1))
    else:
        idf = np.ones(n_words, np.float32)

    with _h5_writing(tmp) as f:
        f.attrs["format"] = FORMAT
        f.attrs["version"] = VERSION
        f.attrs["config"] = config.to_json()
        f.attrs["versions"] = json.dumps(library_versions(), sort_keys=True)
        f.attrs["n_images"] = n_images
        f.attrs["created"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        # The shard files with their size and checksum, so that readers can refuse a store
        # whose shards went missing or changed (see shard_problems).
        f.attrs["shards"] = json.dumps([{k: r.get(k) for k in ("file", "count", "size",
                                                                "checksum")}
                                        for r in shard_records])
        g = f.create_group("images")
        cols = {"key": _STR, "label": np.int32, "width": np.int32, "height": np.int32,
                "status": np.uint8, "reason": _STR}
        for name, dt in cols.items():
            g.create_dataset(name, shape=(n_images,), dtype=dt,
                             chunks=(min(max(n_images, 1), 1 << 15),), **_COMPRESS)
        offsets = f.create_dataset("offsets", shape=(n_images + 1,), dtype=np.int64)
        enc = f.create_group("encodings")
        bovw = enc.create_group("bovw")
        counts = enc.create_group("bovw_counts")
        for grp, dt in ((bovw, np.float32), (counts, np.int32)):
            grp.create_dataset("indptr", shape=(n_images + 1,), dtype=np.int64)
            grp.create_dataset("indices", shape=(0,), maxshape=(None,), dtype=np.int32,
                               chunks=(ENCODING_CHUNK,), **_COMPRESS)
            grp.create_dataset("data", shape=(0,), maxshape=(None,), dtype=dt,
                               chunks=(ENCODING_CHUNK,), **_COMPRESS)
            grp.attrs["shape"] = (n_images, n_words)
        bovw.attrs["weighting"] = "tf-idf" if config.tfidf else "tf"
        bovw.attrs["power"] = config.power
        bovw.attrs["normalization"] = "l2"
        enc.create_dataset("idf", data=idf).attrs["checksum"] = idf_checksum(idf)
        # what `features baseline --val` compares (features.like.encoding_models)
        bovw.attrs["models"] = json.dumps({"idf": idf_checksum(idf)})

        row = desc_at = nnz = 0
        offsets[0] = 0
        failures = []
        key_table = KeyTableWriter(n_images)
        for p, (n_desc, _, _) in zip(paths, sizes):
            with h5py.File(p, "r") as s:
                m = int(s.attrs["count"])
                for name in cols:
                    g[name][row:row + m] = s["images/" + name][:]
                status = s["images/status"][:]
                reason = s["images/reason"].asstr()[:]
                keys = s["images/key"].asstr()[:]
                key_table.add(keys)
                failures.extend((row + i, keys[i], reason[i]) for i in np.flatnonzero(status))
                offsets[row + 1:row + m + 1] = s["offsets"][1:] + desc_at
                c = read_csr(s["counts"])
                values = weight_rows(c.indptr, c.indices, c.data, idf, config.power)
                for grp, data in ((bovw, values), (counts, c.data)):
                    grp["indptr"][row:row + m + 1] = c.indptr + nnz
                    grp["indices"].resize((nnz + len(c.indices),))
                    grp["indices"][nnz:] = c.indices
                    grp["data"].resize((nnz + len(data),))
                    grp["data"][nnz:] = data
                nnz += len(c.indices)
            row += m
            desc_at += n_desc

        key_table.write(f)
        parts = [(f"shards/{name}", n) for name, (n, _, _) in zip(shard_files, sizes)]
        _vds(f, "frames", parts, np.float32, (4,))
        _vds(f, "words", parts, word_dtype(n_words), ())
        f["frames"].attrs["units"] = config.frame_units
        _vds(f, "scale", parts, np.int8, ())
        if sizes and all(has for _, has, _ in sizes):
            _vds(f, "descriptors", parts, np.uint8, (128,))
        if sizes and all(dt is not None for _, _, dt in sizes):
            _vds(f, "geometry", parts, sizes[0][2], (len(GEOMETRY_COLUMNS),))
            f["geometry"].attrs["columns"] = ",".join(GEOMETRY_COLUMNS)

        fg = f.create_group("failures")
        fg.create_dataset("index", data=np.array([i for i, _, _ in failures], np.int64))
        fg.create_dataset("key", data=np.array([k for _, k, _ in failures], dtype=object), dtype=_STR)
        fg.create_dataset("reason", data=np.array([r for _, _, r in failures], dtype=object),
                          dtype=_STR)

        cb = f.create_group("codebook")
        cb.create_dataset("centroids", data=np.asarray(centroids, np.float32))
        # stores encoded --like another must share its codebook: compared by this checksum
        cb["centroids"].attrs["checksum"] = centroids_checksum(centroids)
        if splits:  # a train/ val/ source: the split is the first component of the key
            keys = g["key"].asstr()[:]
            g.create_dataset("split", data=np.array([k.split("/", 1)[0] for k in keys],
                                                    dtype=object), dtype=_STR)
        for k, v in codebook_attrs.items():
            cb.attrs[k] = v
        if len(classes):
            lg = f.create_group("labels")
            lg.create_dataset("wnid", data=np.array(list(classes), dtype=object), dtype=_STR)
            lg.create_dataset("name", data=np.array(list(names) or [""] * len(classes),
                                                    dtype=object), dtype=_STR)
    os.replace(tmp, out)
    return out


def repair_hint(directory) -> str:
    """The commands that rebuild a store's damaged or missing files, from its manifest."""
    directory = Path(directory)
    job = {}
    try:
        job = json.loads((directory / "manifest.json").read_text(encoding="utf-8")).get("job") or {}
    except (OSError, ValueError, AttributeError):
        pass
    source = job.get("source") or "SOURCE"
    extra = (f" --kind {job['kind']}" if job.get("kind") else "") + (
        f" --limit {job['limit']}" if job.get("limit") else "")
    return (f"rerun `features encode {source} -o {directory}{extra}` and "
            f"`features index {directory}` to recompute it")


def shard_problems(directory, records, *, checksums=False, open_files=False) -> list[dict]:
    """Shards that are missing or differ from their record: size; if asked, whether HDF5
    opens them and finds their image count, and their checksum."""
    problems = []
    for r in records:
        path = Path(directory) / "shards" / str(r.get("file"))
        try:
            size = path.stat().st_size
        except OSError:
            problems.append({"shard": str(path), "problem": "missing"})
            continue
        if r.get("size") is not None and size != r["size"]:
            problems.append({"shard": str(path),
                             "problem": f"size {size} bytes, {r['size']} when written"})
        elif checksums and r.get("checksum") and file_checksum(path) != r["checksum"]:
            problems.append({"shard": str(path), "problem": "checksum differs from when written"})
        elif open_files:
            try:
                with h5py.File(path, "r") as s:
                    if r.get("count") is not None and int(s.attrs["count"]) != r["count"]:
                        raise OSError("another image count")
            except (OSError, KeyError, RuntimeError) as e:
                problems.append({"shard": str(path), "problem": f"unreadable ({_short(e)})"})
    return problems


def _reading(method):
    """HDF5 errors while reading a store (a damaged file) become one line with the repair."""
    import functools

    @functools.wraps(method)
    def read(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except (OSError, RuntimeError, KeyError) as e:
            if isinstance(e, KeyError) and "doesn't exist" in str(e):
                raise                       # an object the store does not have, not damage
            raise StoreError(f"{self.dir} is damaged ({_short(e)}); {repair_hint(self.dir)}, "
                             f"and `features verify {self.dir}` to check it") from None
    return read


def _short(exc) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:160]


class Store:
    """Read access to a finished store (a directory, or its store.h5).

    Opening checks that every shard the store was merged from is there with its size; a
    store with a missing or changed shard is refused with one line naming the repair."""

    def __init__(self, path, *, check_shards=True, open_shards=False):
        path = Path(path)
        self.dir = path if path.is_dir() else path.parent
        self.path = path / "store.h5" if path.is_dir() else path
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
        """Geometry records (``features.verify``) of images ``ids``, concatenated, and the
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
                self._shards[k] = h5py.File(self.dir / "shards" / name, "r")
            except OSError as e:
                raise StoreError(f"{self.dir}: shard shards/{name} is unreadable "
                                 f"({_short(e)}); {repair_hint(self.dir)}") from None
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
                with h5py.File(path, "r") as f:
                    d = f[name]
                    ok = d.chunks is None and d.compression is None and d.dtype == self.dtype
                    self.base[k] = d.id.get_offset() if ok else None
            except (OSError, KeyError) as e:
                raise StoreError(f"{path}: cannot read {name} ({e})") from None
        return self.base[k]

    def read(self, ids):
        n = self.store.n_images
        if len(ids) and (ids.min() < 0 or ids.max() >= n):
            raise ValueError(f"image numbers must lie in [0, {n}), got {ids.min()}..{ids.max()}")
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
