"""Shard files: the images of one shard of a job, written by the worker that computed them.

A shard is built in memory and written to a temporary file that is renamed into place; its
manifest record keeps its size and checksum, which readers and reruns check.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from .._shared.hashing import bytes_sha256, file_sha256
from ..encodings.bovw import word_counts_csr
from ..extract.geometry import COLUMNS as GEOMETRY_COLUMNS
from ..extract.geometry import record_dtype
from ..exceptions import first_line
from .atomic import atomic_file
from .confined import open_confined
from .encodings import write_csr
from .layout import DIGEST, FORMAT, OK, SHARDS_DIR, STR, chunked, word_dtype


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
    geometry: np.ndarray | None = None     # packed record (features.extract.geometry)
    sha256: str = ""                       # hex digest of the file bytes, "" if not read


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

    def cat(attr, empty, dtype=None):
        parts = [getattr(r, attr) for r in results if len(r.frames)]
        # one copy, straight into the stored dtype
        return np.concatenate(parts, dtype=dtype, casting="unsafe") if parts else empty

    words = cat("words", np.zeros(0, word_dtype(n_words)), word_dtype(n_words))
    # the word counts of all images at once (per image, a call cost more than the counting)
    counts = word_counts_csr(words, offsets, n_words)
    with h5py.File(f"shard-{first}", "w", driver="core", backing_store=False) as f:
        f.attrs["format"] = FORMAT + "-shard"
        f.attrs["first"] = first
        f.attrs["count"] = n
        g = f.create_group("images")
        g.create_dataset("key", data=np.array([r.key for r in results], dtype=object), dtype=STR)
        g.create_dataset("label", data=np.array([r.label for r in results], np.int32))
        g.create_dataset("width", data=np.array([r.width for r in results], np.int32))
        g.create_dataset("height", data=np.array([r.height for r in results], np.int32))
        g.create_dataset("status", data=np.array([r.status for r in results], np.uint8))
        g.create_dataset("reason", data=np.array([r.reason for r in results], dtype=object),
                         dtype=STR)
        g.create_dataset("sha256", data=np.array([r.sha256 for r in results], "S64"),
                         dtype=DIGEST)
        f.create_dataset("offsets", data=offsets)
        # a dense grid's x, y and size take a few hundred values, the contrast norm all
        # different: compressed apart, the frames shrink 2.6x, 2.6x faster (sbow: 2.24 ->
        # 0.87 MB and 56 -> 21 ms per 300 images, most of the shard's write)
        chunked(f, "frames", cat("frames", np.zeros((0, 4), np.float32), np.float32), 8192,
                by_column=True)
        chunked(f, "words", words, 1 << 16)
        chunked(f, "scale", cat("scale", np.zeros(0, np.int8), np.int8), 1 << 16)
        if keep_descriptors:
            chunked(f, "descriptors",
                     cat("descriptors", np.zeros((0, 128), np.uint8), np.uint8), 4096)
        if geometry:
            f.create_dataset("geometry", data=cat("geometry", np.zeros(
                (0, len(GEOMETRY_COLUMNS)), record_dtype(n_words))))
        write_csr(f.create_group("counts"), counts)
        f.flush()
        return f.id.get_file_image()


def write_shard(path, results: list[ImageResult], *, n_words, first, keep_descriptors,
                geometry=False) -> dict:
    """Write one shard to a temporary file, then rename it into place (atomic on POSIX).

    Each image's word counts (``counts``, a CSR of int32) are counted here, from its words.
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
            "size": len(image), "checksum": bytes_sha256(image)}


def relabel_shard(path, labels) -> dict:
    """Rewrite the labels of a shard's images (and nothing else), atomically: a rerun whose
    source gives other labels to the same images needs no features computed again.

    Returns the fields of its manifest record that change: size and checksum."""
    path = Path(path)
    buffer = io.BytesIO(path.read_bytes())
    with h5py.File(buffer, "r+") as f:
        if len(labels) != len(f["images/label"]):
            raise ValueError(f"{len(labels)} labels for the {len(f['images/label'])} images "
                             f"of {path}")
        f["images/label"][:] = np.asarray(labels, np.int32)
    image = buffer.getvalue()
    with atomic_file(path) as tmp:
        with open(tmp, "wb") as out:
            out.write(image)
    return {"size": len(image), "checksum": bytes_sha256(image)}


def shard_problems(directory, records, *, checksums=False, open_files=False) -> list[dict]:
    """Shards that are missing or differ from their record: size; if asked, whether HDF5
    opens them and finds their image count, and their checksum."""
    problems = []
    for r in records:
        path = Path(directory) / SHARDS_DIR / str(r.get("file"))
        try:
            size = path.stat().st_size
        except OSError:
            problems.append({"shard": str(path), "problem": "missing"})
            continue
        if r.get("size") is not None and size != r["size"]:
            problems.append({"shard": str(path),
                             "problem": f"size {size} bytes, {r['size']} when written"})
        elif checksums and r.get("checksum") and file_sha256(path) != r["checksum"]:
            problems.append({"shard": str(path), "problem": "checksum differs from when written"})
        elif open_files:
            try:
                with open_confined(path, directory) as s:
                    if r.get("count") is not None and int(s.attrs["count"]) != r["count"]:
                        raise OSError("another image count")
            except (OSError, KeyError, RuntimeError) as e:
                problems.append({"shard": str(path),
                                 "problem": f"unreadable ({first_line(e, 160)})"})
    return problems
