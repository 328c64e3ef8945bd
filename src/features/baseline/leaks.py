"""What a baseline must never score: an image it trained on, or one that shaped its features.

- :func:`check_not_same`: a val store is not the train store itself, by path or as a copy
  (the same shard files, by checksum);
- :func:`check_disjoint`: the images that score share none with those that train: by the
  sha256 of their file bytes (``images/sha256``), which finds the same image under another
  name too; a store written before the digests were recorded is compared by key only, and
  the description returned says so;
- :func:`model_sample_rows`: the images the codebook sample (and so every model learned from
  it: PCA, GMM, VLAD centers) was drawn from, as pass 1 chose them: the images of smallest
  hash of seed and key among the store's images (its ``train`` split only when the codebook
  records ``sample_splits = "train"``; none of them when it records ``"none"``, a store
  encoded ``--like`` another).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..codebook.sample import sample_priority
from ..exceptions import BaselineError

HINT = "score images the classifiers and the models never saw"


def check_not_same(store, val_store):
    """Refuse a val store that is the train store (the same folder, or a copy of it)."""
    if val_store is None:
        return
    if Path(store.dir).resolve() == Path(val_store.dir).resolve():
        raise BaselineError(f"val store {val_store.dir} is the train store: {HINT} "
                            f"(encode them with `features run VAL -o VALSTORE --like "
                            f"{store.dir}`)")
    ours, theirs = _shard_checksums(store), _shard_checksums(val_store)
    if ours and ours == theirs:
        raise BaselineError(f"val store {val_store.dir} is a copy of the train store "
                            f"{store.dir} (the same shards): {HINT}")


def _shard_checksums(store) -> list:
    try:
        records = json.loads(store.h5.attrs.get("shards", "[]"))
    except ValueError:
        return []
    return [r.get("checksum") for r in records if r.get("checksum")]


def digests(store) -> np.ndarray | None:
    """``images/sha256`` as str ("" where unknown), or None for a store without them."""
    if "images/sha256" not in store.h5:
        return None
    return store.h5["images/sha256"].asstr()[:]


def check_disjoint(train_store, train_rows, val_store, val_rows, *, what="val store") -> str:
    """Refuse scored images (``val_rows`` of ``val_store``) that are training images
    (``train_rows`` of ``train_store``): one line with how many and one example.

    Compared by file digest where both stores have them; in two stores, images without a
    digest (stores or shards written before them) by key. Returns how they were compared."""
    a, b = digests(train_store), digests(val_store)
    train_rows, val_rows = np.asarray(train_rows, np.int64), np.asarray(val_rows, np.int64)
    train_keys, val_keys = train_store.keys, val_store.keys
    shared = []                       # (val key, train key, what they share)
    by_key = val_rows
    how = "keys only (a store without file digests, images/sha256)"
    if a is not None and b is not None:
        where = {d: k for d, k in zip(a[train_rows], train_keys[train_rows]) if d}
        db = b[val_rows]
        shared = [(k, where[d], "the same file bytes")
                  for d, k in zip(db, val_keys[val_rows]) if d in where]
        by_key = val_rows[db == ""]
        how = "sha256 of the file bytes" + (
            f", keys for {len(by_key)} images without one" if len(by_key) else "")
    if train_store is not val_store and len(by_key):
        # a key is a path inside its source: in two stores without digests, the same key is
        # taken for the same image, the only sign left
        common = set(train_keys[train_rows].tolist()) & set(val_keys[by_key].tolist())
        shared += [(k, k, "the same key") for k in sorted(common)]
    if shared:
        val_key, train_key, same = shared[0]
        example = repr(val_key) if val_key == train_key else \
            f"{val_key!r} is the training image {train_key!r}"
        raise BaselineError(f"{what} {val_store.dir} shares {len(shared)} images with the "
                            f"training images of {train_store.dir} ({same}; e.g. {example}): "
                            f"{HINT}")
    return f"no scored image is a training image (compared by {how})"


def model_sample_rows(store) -> np.ndarray:
    """Rows of the images the store's codebook and models were learned from (module doc)."""
    h5 = store.h5
    attrs = h5["codebook"].attrs if "codebook" in h5 else {}
    splits = str(attrs.get("sample_splits", "all"))
    if splits == "none" or "codebook" not in h5:
        return np.zeros(0, np.int64)
    candidates = np.arange(len(store.keys))
    if splits == "train" and "images/split" in h5:
        candidates = np.flatnonzero(h5["images/split"].asstr()[:] == "train")
    config = store.config
    k = config.images_to_sample
    if k >= len(candidates):
        return candidates
    keys = store.keys
    priority = np.array([sample_priority(keys[i], config.seed) for i in candidates])
    return np.sort(candidates[np.argsort(priority, kind="stable")[:k]])


def sample_splits(store) -> str | None:
    """The ``sample_splits`` the codebook records, or None (a store written before)."""
    if "codebook" not in store.h5:
        return None
    value = store.h5["codebook"].attrs.get("sample_splits")
    return None if value is None else str(value)
