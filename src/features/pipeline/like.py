"""Stores encoded ``--like`` another: the models they reuse, and the checksums that prove it.

``features run VAL -o VALSTORE --like TRAINSTORE`` encodes the val images exactly as the train
images were: the recipe, the codebook and the idf weights of ``bovw`` are the train store's
(``steps.reuse_codebook``, ``features.store.merge``), and so are the models its
encodings learned (``models/ENCODING/{pca,gmm,kmeans-vlad}``): an encoding added to a
``--like`` store, by ``run --encodings`` or by ``features aggregate``, takes the models of
the train store's encoding of the same name (or, for another name, of the train store's
encoding of that method whose models fit its options) and never learns its own (a val set
must not shape the features it is scored on).  Its options default to those of the train
store's encoding of the same name, so each encoding is reproduced exactly: ``fisher`` and
``f4`` of a train store with 256 and 4 components are ``fisher`` and ``f4`` of the val
store with the same options, dimensions and models.

The checksums that prove it are those of :mod:`features.store.models`: `features baseline
--val` compares what each scored encoding used without reading the arrays.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..encodings.methods import METHODS
from ..encodings.training import model_spec, shape_problem
from ..exceptions import StoreError
from ..store import Manifest, Store
from ..store.encodings import encoding_attrs, list_encodings
from ..store.models import model_path, read_encoding_models

__all__ = ["like_of", "models_for", "models_from_like", "like_params", "like_encoding",
           "like_encodings", "check_like_models"]

# the options that size an encoding's models: an encoding of another name must fit them
MODEL_OPTIONS = ("pca_dims", "whiten", "components", "xy_weight", "centers")


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


def _of_method(h5, method) -> list:
    """The encodings of ``method`` in an open store.h5, in name order."""
    return [n for n in list_encodings(h5) if encoding_attrs(h5, n).get("method") == method]


def _fits(h5, name, method, params, desc_dim) -> bool:
    """Whether the models of ``encodings/NAME`` have the sizes ``params`` ask for."""
    spec = model_spec(method, params, desc_dim, 0)
    for model, sizes in spec.items():
        g = h5.get(model_path(h5, name, model))
        if g is None:
            return False
        if shape_problem(model, {k: g[k] for k in g}, sizes) is not None:
            return False
    return True


def like_encoding(h5, method, name, params=None, desc_dim=128) -> str | None:
    """The encoding of a ``--like`` store (open store.h5 ``h5``) whose models and options an
    encoding ``name`` of ``method`` takes: ``encodings/NAME`` when it is of that method;
    else, of the encodings of that method, the only one, or the first in name order whose
    models fit ``params`` (when given). None when there is none."""
    if encoding_attrs(h5, name).get("method") == method:
        return name
    candidates = _of_method(h5, method)
    if params is not None and len(candidates) > 1:
        candidates = [c for c in candidates if _fits(h5, c, method, params, desc_dim)]
    return candidates[0] if candidates else None


def like_params(store_dir, method, name) -> dict | None:
    """Default options of an encoding added to a store encoded ``--like`` another: those of
    the other store's ``encodings/NAME`` when it was made by ``method`` (same recipe); for
    another name, the model sizes (``--pca-dims``, ``--whiten``, ``--components``,
    ``--centers``) of the other store's only encoding of that method, which it must fit.
    None for other stores."""
    like = like_of(store_dir)
    if like is None or not (like / "store.h5").exists():
        return None
    with Store(like) as other:
        h5 = other.h5
        if encoding_attrs(h5, name).get("method") == method:
            return json.loads(encoding_attrs(h5, name).get("params", "{}"))
        candidates = _of_method(h5, method)
        if len(candidates) != 1:
            return {}
        theirs = json.loads(encoding_attrs(h5, candidates[0]).get("params", "{}"))
    return {k: v for k, v in theirs.items() if k in MODEL_OPTIONS}


def models_from_like(store_dir, method, name, params, desc_dim, stored) -> dict | None:
    """The models an encoding ``name`` of ``method`` uses in a store encoded ``--like``
    another: those of the other store's encoding chosen by :func:`like_encoding` (read now,
    so models it learned after the val store was made are found), or, when that store is
    gone, the copies this store already holds for ``name`` (``stored``), which came from it.
    None when ``store_dir`` is not a ``--like`` store.  A model neither has is refused:
    a ``--like`` store never learns one."""
    like = like_of(store_dir)
    if like is None:
        return None
    wanted = models_for(method)
    source = name
    if (like / "store.h5").exists():
        with Store(like) as other:
            source = like_encoding(other.h5, method, name, params, desc_dim)
            theirs = {} if source is None else read_encoding_models(other.h5, source, like)
        where = like
    else:
        theirs = stored
        where = f"{store_dir} (its --like store {like} is gone)"
    missing = [m for m in wanted if m not in theirs]
    if missing:
        raise StoreError(f"{store_dir} is encoded --like {like}, which has no {method} "
                         f"encoding with models/{missing[0]} that fits these options; add the "
                         f"encoding to {where} first (`features aggregate {like} --method "
                         f"{method}`): a --like store never learns models of its own")
    out = {}
    for m in wanted:
        model = {"arrays": theirs[m]["arrays"], "attrs": dict(theirs[m]["attrs"])}
        model["attrs"]["like"] = str(like)
        model["attrs"]["like_encoding"] = str(source)
        out[m] = model
    return out


def like_encodings(like) -> dict:
    """name -> method of the encodings of store ``like`` (``run --like --encodings`` takes
    their names as well as methods)."""
    with Store(like) as other:
        return {n: str(encoding_attrs(other.h5, n).get("method") or "bovw")
                for n in list_encodings(other.h5)}


def check_like_models(like, encodings):
    """Before a ``run --like`` encodes anything: the other store must hold, for each
    encoding asked for (a method, or the name of one of its encodings), an encoding with
    its models (one line and exit 2 rather than a failure after pass 2)."""
    names = like_encodings(like)
    needed = [(n if n in METHODS else names.get(n, n), n) for n in dict.fromkeys(encodings)]
    needed = [(m, n) for m, n in needed if models_for(m)]
    if not needed:
        return
    with Store(like) as other:
        for method, name in needed:
            source = like_encoding(other.h5, method, name)
            if source is None:
                raise StoreError(f"{like} has no {method} encoding, whose models --encodings "
                                 f"{method} needs to encode --like it; add the encoding to "
                                 f"{like} first (`features aggregate {like} --method {method}`)")
            read_encoding_models(other.h5, source, like)      # present and sound
