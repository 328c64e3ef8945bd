"""Stores encoded ``--like`` another: the models they reuse, and the checksums that prove it.

``features run VAL -o VALSTORE --like TRAINSTORE`` encodes the val images exactly as the train
images were: the recipe, the codebook and the idf weights of ``bovw`` are the train store's
(``pipeline.reuse_codebook``, ``store.merge``), and so are the models its encodings learned (``models/pca``, ``models/gmm``,
``models/kmeans-vlad``): an encoding added to a ``--like`` store, by ``run --encodings`` or
by ``features aggregate``, takes them from the train store and never learns its own (a val
set must not shape the features it is scored on).  Its options default to those of the train
store's encoding of the same name.

Every ``models/NAME`` group carries a ``checksum`` attribute (sha256 of its arrays, in name
order, with their dtypes and shapes) and every encoding a ``models`` attribute (JSON: model
name -> checksum of the models it was computed with; ``bovw``: ``idf``, the checksum of
``encodings/idf``), so `features baseline --val` compares what each scored encoding used
without reading the arrays.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from .store import Manifest, Store, StoreError

__all__ = ["array_checksum", "model_checksum", "like_of", "models_for", "models_from_like",
           "like_params", "check_like_models", "encoding_models"]

# The models each method needs (names under models/ in store.h5).
METHOD_MODELS = {"vlad": ("kmeans-vlad",), "fisher": ("pca", "gmm")}


def array_checksum(*arrays) -> str:
    """sha256 over the arrays' dtypes, shapes and bytes, in the order given."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def model_checksum(arrays: dict) -> str:
    """The checksum of one model: its arrays in name order."""
    return array_checksum(*[arrays[k] for k in sorted(arrays)])


def like_of(store_dir) -> Path | None:
    """The store that ``store_dir`` was encoded ``--like`` (from its manifest), or None."""
    manifest = Path(store_dir) / "manifest.json"
    if not manifest.exists():
        return None
    like = (Manifest(store_dir).data.get("steps", {}).get("codebook") or {}).get("like")
    return Path(like) if like else None


def models_for(method) -> tuple:
    return METHOD_MODELS.get(method, ())


def _read_models(h5):
    from .aggregate import _read_models as read
    return read(h5)


def like_params(store_dir, method, name) -> dict | None:
    """Default options of an encoding added to a store encoded ``--like`` another: those of
    the other store's ``encodings/NAME`` when it was made by ``method`` (same recipe), and
    the sizes of the other store's models (``--pca-dims``, ``--whiten``, ``--components``,
    ``--centers``), which an encoding of another name must fit too.  None for other stores."""
    like = like_of(store_dir)
    if like is None or not (like / "store.h5").exists():
        return None
    with Store(like) as other:
        h5 = other.h5
        params = {}
        obj = h5.get("encodings/" + name)
        if obj is not None and _str(obj.attrs.get("method", "")) == method:
            params = json.loads(_str(obj.attrs.get("params", "{}")))
        if method == "fisher":
            if "models/pca/components" in h5:
                params["pca_dims"] = int(h5["models/pca/components"].shape[0])
                params["whiten"] = bool(h5["models/pca"].attrs.get("whiten", False))
            if "models/gmm/means" in h5:
                params["components"] = int(h5["models/gmm/means"].shape[0])
        elif method == "vlad" and "models/kmeans-vlad/centers" in h5:
            params["centers"] = int(h5["models/kmeans-vlad/centers"].shape[0])
    return params


def _str(v):
    return v.decode() if isinstance(v, bytes) else str(v)


def models_from_like(store_dir, method, stored) -> dict | None:
    """The models ``method`` uses in a store encoded ``--like`` another: the other store's
    (read now, so models it learned after the val store was made are found), or, when that
    store is gone, the copies this store already holds (``stored``), which came from it.
    None when ``store_dir`` is not a ``--like`` store.  A model neither has is refused:
    a ``--like`` store never learns one."""
    like = like_of(store_dir)
    if like is None:
        return None
    wanted = models_for(method)
    if (like / "store.h5").exists():
        with Store(like) as other:
            theirs = _read_models(other.h5)
    else:
        theirs = stored
    missing = [m for m in wanted if m not in theirs]
    if missing:
        where = like if (like / "store.h5").exists() else f"{store_dir} (its --like store " \
                                                          f"{like} is gone)"
        raise StoreError(f"{store_dir} is encoded --like {like}, which has no models/{missing[0]} "
                         f"for --method {method}; add the encoding to {where} first "
                         f"(`features aggregate {like} --method {method}`): a --like store "
                         f"never learns models of its own")
    out = {}
    for m in wanted:
        model = {"arrays": theirs[m]["arrays"], "attrs": dict(theirs[m]["attrs"])}
        model["attrs"]["like"] = str(like)
        out[m] = model
    return out


def check_like_models(like, methods):
    """Before a ``run --like`` encodes anything: the other store must hold the models of the
    encodings asked for (one line and exit 2 rather than a failure after pass 2)."""
    needed = [(m, model) for m in dict.fromkeys(methods) for model in models_for(m)]
    if not needed:
        return
    with Store(like) as other:
        have = set(other.h5.get("models", {}).keys())
    for method, model in needed:
        if model not in have:
            raise StoreError(f"{like} has no models/{model}, which --encodings {method} needs "
                             f"to encode --like it; add the encoding to {like} first "
                             f"(`features aggregate {like} --method {method}`)")


def encoding_models(h5, name) -> dict:
    """model name -> checksum of the models ``encodings/NAME`` was computed with.

    Recorded in the encoding's ``models`` attribute; for encodings written before it was,
    the store's models of the encoding's method (their recorded or computed checksums)."""
    obj = h5.get("encodings/" + name)
    if obj is None:
        return {}
    recorded = obj.attrs.get("models")
    if recorded is not None:
        return json.loads(_str(recorded))
    out = {}
    for model in models_for(_str(obj.attrs.get("method", ""))):
        g = h5.get("models/" + model)
        if g is None:
            continue
        out[model] = _str(g.attrs.get("checksum", "")) or model_checksum(
            {k: g[k][:] for k in g.keys()})
    return out
