"""Stores encoded ``--like`` another: the models they reuse, and the checksums that prove it.

``features run VAL -o VALSTORE --like TRAINSTORE`` encodes the val images exactly as the train
images were: the recipe, the codebook and the idf weights of ``bovw`` are the train store's
(``steps.reuse_codebook``, ``features.store.merge``), and so are the models its
encodings learned (``models/pca``, ``models/gmm``,
``models/kmeans-vlad``): an encoding added to a ``--like`` store, by ``run --encodings`` or
by ``features aggregate``, takes them from the train store and never learns its own (a val
set must not shape the features it is scored on).  Its options default to those of the train
store's encoding of the same name.

The checksums that prove it are those of :mod:`features.store.models`: `features baseline
--val` compares what each scored encoding used without reading the arrays.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..encodings.methods import METHODS
from ..exceptions import StoreError
from ..store import Manifest, Store
from ..store.encodings import encoding_attrs
from ..store.models import read_models

__all__ = ["like_of", "models_for", "models_from_like", "like_params", "check_like_models"]


def like_of(store_dir) -> Path | None:
    """The store that ``store_dir`` was encoded ``--like`` (from its manifest), or None."""
    manifest = Path(store_dir) / "manifest.json"
    if not manifest.exists():
        return None
    like = (Manifest(store_dir).data.get("steps", {}).get("codebook") or {}).get("like")
    return Path(like) if like else None


def models_for(method) -> tuple:
    """Names of the models ``method`` learns (under models/ in store.h5)."""
    return METHODS[method].models if method in METHODS else ()


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
        attrs = encoding_attrs(h5, name)
        if attrs.get("method", "") == method:
            params = json.loads(attrs.get("params", "{}"))
        if method == "fisher":
            if "models/pca/components" in h5:
                params["pca_dims"] = int(h5["models/pca/components"].shape[0])
                params["whiten"] = bool(h5["models/pca"].attrs.get("whiten", False))
            if "models/gmm/means" in h5:
                params["components"] = int(h5["models/gmm/means"].shape[0])
        elif method == "vlad" and "models/kmeans-vlad/centers" in h5:
            params["centers"] = int(h5["models/kmeans-vlad/centers"].shape[0])
    return params


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
            theirs = read_models(other.h5)
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
