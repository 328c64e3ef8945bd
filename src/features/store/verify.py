"""The store half of ``features verify``: is every part of the store what was written?

Checks, each reported as damage with the path it concerns:

- ``manifest.json`` readable and of the right shape;
- every shard recorded present, of the recorded size and checksum (SHA-256), and holding
  the number of images and descriptors recorded;
- ``store.h5`` readable throughout: per-image tables of one length, ``offsets`` starting
  at 0, non-decreasing and ending at the number of descriptors, each image's word counts
  adding up to its number of descriptors (offsets against counts), the shards it was merged
  from equal to those of the manifest;
- the virtual datasets (frames, words, scale, descriptors) resolving: every source file
  present with the dataset and shape they map;
- no HDF5 file of the store reading a file outside it (external storage, external links,
  virtual datasets mapping files elsewhere: :mod:`.confined`), checked before it is read;
- the codebook: ``K x 128`` float32, K equal to the configured words, to ``codebook.npy``
  and to the width of the encodings;
- the models of every encoding (``models/ENCODING/*``, ``encodings/idf`` for ``bovw``):
  present, and equal to the checksums the encoding recorded.

``store.h5`` is read a block of rows at a time (``BLOCK_IMAGES`` images, ``BLOCK_VALUES``
values of an encoding), so that memory stays flat in the number of images; what grows is
the list of the images to index, 8 bytes per image, handed to the index half.

The index half is :mod:`features.index.verify`; ``features.pipeline.verify`` runs both.
"""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from .._shared.hashing import file_sha256
from ..exceptions import ParameterError, StoreError, first_line
from .confined import check_confined, open_confined
from .layout import CODEBOOK_FILE, MANIFEST_FILE, OK, SHARDS_DIR, STORE_FILE, word_dtype
from .encodings import list_encodings
from .manifest import Manifest
from .models import model_problems

# Rows of the per-image tables, and values of an encoding, read at a time: verify's memory
# stays flat in the number of images.
BLOCK_IMAGES = 1 << 15         # the chunk of the image tables (store.write)
BLOCK_VALUES = 1 << 18


class Damage:
    """The damage found so far, and what was checked."""

    def __init__(self):
        self.found = []
        self.checked = {"shards": 0, "images": 0, "descriptors": 0, "index_vectors": None}

    def __call__(self, path, problem):
        self.found.append({"path": str(path), "problem": problem})


def tree_problems(f, centroids) -> list[str]:
    """What is wrong with ``codebook/tree`` (a recipe with ``tree_branching`` has one): missing,
    not the checksum it was written with, or not a tree whose leaves are the codebook."""
    from ..codebook.tree import VocabularyTree
    from .write import tree_checksum
    if "codebook/tree" not in f:
        return ["codebook/tree is missing (the recipe learns a vocabulary tree)"]
    g = f["codebook/tree"]
    try:
        arrays = {name: g[name][:] for name in ("child_start", "child_next", "centers")}
    except KeyError as e:
        return [f"codebook/tree is incomplete ({first_line(e)})"]
    if tree_checksum(arrays) != g.attrs.get("checksum"):
        return ["codebook/tree differs from its checksum"]
    try:
        VocabularyTree.from_arrays(centroids, branching=2, **arrays)
    except ParameterError as e:
        return [f"codebook/tree is not a vocabulary tree ({first_line(e)})"]
    return []

def check_store(directory, bad: Damage):
    """Check the manifest, the shards and ``store.h5`` of a store, reporting to ``bad``.

    Returns the image numbers that are ok and have features (what the index must hold), or
    None when ``store.h5`` is missing or too damaged to tell."""
    directory = Path(directory)
    checked = bad.checked
    if not (directory / MANIFEST_FILE).exists() and not (directory / STORE_FILE).exists():
        raise StoreError(f"{directory} is not a features store (no manifest.json or store.h5)")
    records, config, steps = {}, {}, {}
    try:
        manifest = Manifest(directory)
        records, steps = manifest.data["shards"], manifest.data["steps"]
        config = manifest.data.get("config") or {}
    except StoreError as e:
        bad(directory / MANIFEST_FILE, str(e).split(": ", 1)[-1])

    for number, r in sorted(records.items(), key=lambda kv: int(kv[0])):
        _check_shard(directory / SHARDS_DIR / r["file"], r, bad)
        checked["shards"] += 1

    store_path = directory / STORE_FILE
    if not store_path.exists():
        if "encode" not in steps and not bad.found:
            # a job stopped before its merge: nothing to call sound (search refuses it too)
            order = ("sample", "codebook", "encode")
            done = ", ".join(sorted(steps, key=lambda s: (s not in order, order.index(s)
                                                          if s in order else 0, s))) or "none"
            raise StoreError(f"{directory} is not a finished store: the job stopped before "
                             f"store.h5 was written (steps done: {done}); rerun it to finish")
        bad(store_path, "missing")
        return None
    try:
        return _check_store_h5(directory, store_path, records, config, bad, checked)
    except StoreError as e:             # reads a file outside the store (confined)
        bad(*_split(e))
    except (OSError, RuntimeError, KeyError, ValueError) as e:
        bad(store_path, f"unreadable ({first_line(e)})")
    return None


def _check_shard(path, record, bad):
    try:
        size = path.stat().st_size
    except OSError:
        bad(path, "missing")
        return
    if "size" in record and size != record["size"]:
        bad(path, f"size {size} bytes, {record['size']} when written")
        return
    if "checksum" in record and file_sha256(path) != record["checksum"]:
        bad(path, "checksum differs from when written")
        return
    try:
        with open_confined(path, path.parent.parent) as s:
            count = int(s.attrs["count"])
            offsets = s["offsets"][:]
            if count != record["count"] or len(offsets) != count + 1:
                bad(path, f"holds {count} images, {record['count']} recorded")
            elif "descriptors" in record and int(offsets[-1]) != record["descriptors"]:
                bad(path, f"holds {int(offsets[-1])} descriptors, {record['descriptors']} recorded")
    except StoreError as e:
        bad(*_split(e))
    except (OSError, KeyError, RuntimeError) as e:
        bad(path, f"unreadable ({first_line(e)})")


def _check_store_h5(directory, path, records, config, bad, checked):
    with h5py.File(path, "r") as f:
        check_confined(f, directory, path)      # before anything of it is read
        n = int(f.attrs["n_images"])
        checked["images"] = n
        for name in ("key", "label", "width", "height", "status", "reason", "sha256"):
            if name == "sha256" and name not in f["images"]:
                continue                    # a store written before the digests
            column = f["images/" + name]
            _read_through(column, BLOCK_IMAGES)     # every chunk: a damaged one raises
            if len(column) != n:
                bad(path, f"images/{name} has {len(column)} rows, {n} images")
        status, offsets = f["images/status"], f["offsets"]
        if len(offsets) != n + 1 or not _starts_at_zero_non_decreasing(offsets):
            bad(path, "offsets are not 0, non-decreasing, one per image + 1")
            return None
        m = int(offsets[-1])
        checked["descriptors"] = m

        merged = json.loads(f.attrs.get("shards", "[]"))
        recorded = [records[k]["file"] for k in sorted(records, key=int)
                    if int(k) < len(merged)] if records else []
        if records and [r["file"] for r in merged] != recorded:
            bad(path, "merged from other shards than the manifest records; rerun the job")
        # the first record of each file, found without a scan of them all per shard
        by_file = {x.get("file"): x for x in reversed(list(records.values()))}
        for r in merged:
            rec = by_file.get(r["file"])
            if rec is not None and rec.get("checksum") and r.get("checksum") != rec["checksum"]:
                bad(directory / SHARDS_DIR / r["file"], "differs from the shard store.h5 was "
                                                     "merged from")

        counts = f["encodings/bovw_counts"]
        indptr, data = counts["indptr"], counts["data"]
        if len(indptr) != n + 1:
            bad(path, f"encodings/bovw_counts has {len(indptr) - 1} rows, {n} images")
            return None
        if not _starts_at_zero_non_decreasing(indptr) or int(indptr[-1]) > len(data):
            bad(path, "encodings/bovw_counts has row pointers that are not 0, non-decreasing "
                      "and within its data")
            return None
        # a block of images at a time, so that memory does not grow with the store (the
        # images that are ok and have features excepted: 8 bytes each, what the index needs)
        n_wrong, first_wrong, with_features = 0, None, []
        for a in range(0, n, BLOCK_IMAGES):
            b = min(a + BLOCK_IMAGES, n)
            ok = status[a:b] == OK
            lengths = np.diff(offsets[a:b + 1])
            per_image = _row_sums(data, indptr[a:b + 1].astype(np.int64), BLOCK_VALUES)
            wrong = np.flatnonzero((per_image != lengths) & ok)
            if len(wrong) and first_wrong is None:
                first_wrong = a + int(wrong[0])
            n_wrong += len(wrong)
            with_features.append(a + np.flatnonzero(ok & (lengths > 0)))
        if n_wrong:
            bad(path, f"word counts differ from offsets for {n_wrong} images "
                      f"(first: image {first_wrong})")
        _read_through(f["encodings/bovw/data"], BLOCK_VALUES)

        for name, tail in (("frames", (4,)), ("words", ()), ("scale", ()), ("descriptors", (128,))):
            if name not in f:
                if name != "descriptors":
                    bad(path, f"{name} is missing")
                continue
            ds = f[name]
            if ds.shape != (m,) + tail:
                bad(path, f"{name} has shape {ds.shape}, expected {(m,) + tail}")
            if ds.is_virtual:
                _check_vds(directory, path, name, ds, bad)

        k = config.get("words")
        centroids = f["codebook/centroids"]
        if centroids.ndim != 2 or centroids.shape[1] != 128 or centroids.dtype != np.float32:
            bad(path, f"codebook/centroids has shape {centroids.shape} {centroids.dtype}, "
                      f"expected K x 128 float32")
        else:
            if k is not None and centroids.shape[0] != k:
                bad(path, f"codebook has {centroids.shape[0]} words, the configuration {k}")
            npy = directory / CODEBOOK_FILE
            if npy.exists():
                try:
                    c = np.load(npy, mmap_mode="r")
                    if c.shape != centroids.shape:
                        bad(npy, f"shape {c.shape}, store.h5's codebook {centroids.shape}")
                except (OSError, ValueError) as e:
                    bad(npy, f"unreadable ({first_line(e)})")
            width = int(np.asarray(f["encodings/bovw"].attrs["shape"])[1])
            if width != centroids.shape[0]:
                bad(path, f"encodings are {width} words wide, the codebook has "
                          f"{centroids.shape[0]}")
            if "words" in f and len(f["words"]):
                if f["words"].dtype != word_dtype(centroids.shape[0]):
                    bad(path, f"words are {f['words'].dtype}")
            if config.get("tree_branching") or "codebook/tree" in f:
                for problem in tree_problems(f, centroids[:]):
                    bad(path, problem)
        for name in list_encodings(f):
            for where, problem in model_problems(f, name):
                bad(path, f"{where} {problem}")
        return np.concatenate(with_features) if with_features else np.zeros(0, np.int64)


def _read_through(ds, block):
    """Read every chunk of a 1-D dataset, ``block`` rows at a time (a damaged chunk
    raises)."""
    for a in range(0, len(ds), block):
        ds[a:a + block]


def _starts_at_zero_non_decreasing(ds) -> bool:
    """Whether a 1-D dataset of integers starts at 0 and never decreases, read a block at
    a time."""
    if len(ds) == 0 or ds[0] != 0:
        return False
    last = 0
    for a in range(0, len(ds), BLOCK_IMAGES):
        x = ds[a:a + BLOCK_IMAGES].astype(np.int64)
        if x[0] < last or (np.diff(x) < 0).any():
            return False
        last = int(x[-1])
    return True


def _row_sums(data, indptr, block) -> np.ndarray:
    """The sum of each row's values of a CSR dataset (row i: ``data[indptr[i]:indptr[i+1]]``,
    ``indptr`` non-decreasing), reading about ``block`` values at a time (a longer row in one
    read)."""
    n = len(indptr) - 1
    out = np.empty(n, np.int64)
    i = 0
    while i < n:
        # the rows i..j-1 whose values fit in a block, at least one
        j = int(np.searchsorted(indptr, indptr[i] + block, side="right")) - 1
        j = min(max(j, i + 1), n)
        lo = int(indptr[i])
        cumulative = np.concatenate([[0], np.cumsum(data[lo:int(indptr[j])], dtype=np.int64)])
        out[i:j] = cumulative[indptr[i + 1:j + 1] - lo] - cumulative[indptr[i:j] - lo]
        i = j
    return out


def _check_vds(directory, path, name, ds, bad):
    for vs in ds.virtual_sources():
        src = Path(vs.file_name)
        src = src if src.is_absolute() else directory / src
        try:
            with open_confined(src, directory) as s:
                if vs.dset_name.lstrip("/") not in s:
                    bad(src, f"has no {vs.dset_name} (mapped by {name})")
                    continue
                shape = s[vs.dset_name].shape
                mapped = vs.vspace.get_select_npoints()
                if int(np.prod(shape)) != mapped:
                    bad(src, f"{vs.dset_name} has {int(np.prod(shape))} values, {name} maps "
                             f"{mapped}")
        except FileNotFoundError:
            bad(src, f"missing (mapped by {name} of store.h5)")
        except StoreError as e:
            bad(*_split(e))
        except (OSError, RuntimeError) as e:
            bad(src, f"unreadable ({first_line(e)}), mapped by {name}")


def _split(error) -> tuple[str, str]:
    """(path, problem) of a ``PATH: problem`` error."""
    path, _, problem = first_line(error, None).partition(": ")
    return path, problem
