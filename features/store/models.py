"""Models that encodings learn (``models/ENCODING/MODEL`` in ``store.h5``), and their checksums.

Each encoding owns its models: ``models/ENCODING/MODEL`` is a group of arrays with their
parameters as attributes and a ``checksum`` attribute (sha256 of its arrays in name order,
with dtypes and shapes: :func:`model_checksum`). Two encodings of one method with other
options (``fisher`` with 256 components, ``f4`` with 4) keep a GMM each, and replacing one
never touches the other's. Every encoding carries a ``models`` attribute (JSON: model name ->
checksum of the models it was computed with; ``bovw``: ``idf``, the checksum of
``encodings/idf``), so that two stores can be compared without reading the arrays, and a
store checked (:func:`model_problems`: ``features verify``).

==============  =============================================  ==========================
model           arrays                                         used by
==============  =============================================  ==========================
kmeans-vlad     ``centers`` (k, d)                             ``vlad``
pca             ``mean``, ``components``, ``explained_variance``  ``fisher``
gmm             ``means``, ``covariances``, ``priors``         ``fisher``
==============  =============================================  ==========================

Besides their parameters, models record what they were learned from: ``rows`` (the
descriptors of their training set), ``rows_wanted`` and ``images`` (see
:mod:`features.encodings.training`).

Stores of format version 1 held one model of each kind, ``models/MODEL`` (``models/gmm``):
such a model is still read as the model of every encoding that recorded its checksum (or
of the method's encodings that recorded none). A store is written as version 2 once it holds
models per encoding (:data:`MODELS_VERSION`), which earlier code would misread.

A model is kept as ``{"arrays": {name: ndarray}, "attrs": {name: value}}``.
"""
from __future__ import annotations

import json
from pathlib import Path

import h5py

from .._shared.hashing import array_sha256
from ..encodings.methods import METHODS
from ..exceptions import StoreError
from .encodings import attr_value, list_encodings
from .layout import VERSION
from .write import idf_checksum
from .h5files import write_h5

__all__ = ["MODELS_VERSION", "model_checksum", "read_model_groups", "write_models",
           "write_models_file", "write_encoding_models", "encoding_models", "model_path",
           "read_encoding_models", "model_problems", "all_encoding_models", "models_info"]

# the format version of a store with models per encoding (version 1: models/MODEL)
MODELS_VERSION = VERSION


def model_checksum(arrays: dict) -> str:
    """The checksum of one model: its arrays in name order."""
    return array_sha256(*[arrays[k] for k in sorted(arrays)])


def _read_model(g) -> dict:
    return {"arrays": {k: g[k][:] for k in g},
            "attrs": {k: attr_value(v) for k, v in g.attrs.items()}}


def _is_model(obj) -> bool:
    """A group of arrays (a model), rather than an encoding's group of models."""
    return isinstance(obj, h5py.Group) and all(isinstance(obj[k], h5py.Dataset) for k in obj)


def read_model_groups(group) -> dict:
    """Every model (a group of arrays) directly under ``group`` of an open HDF5 file:
    ``models/ENCODING`` of a store, or ``models`` of a model file."""
    if group is None:
        return {}
    return {name: _read_model(group[name]) for name in group if _is_model(group[name])}


def write_models(group, models):
    """``models`` into ``group`` (replacing models of the same name), with checksums."""
    for model, m in models.items():
        if model in group:
            del group[model]
        g = group.create_group(model)
        for k, v in m["arrays"].items():
            g.create_dataset(k, data=v)
        for k, v in m["attrs"].items():
            g.attrs[k] = v
        # what `features baseline --val` compares: a val store encoded --like this one
        # holds the same arrays, hence the same checksum
        g.attrs["checksum"] = model_checksum(m["arrays"])


def write_models_file(path, models):
    """``models`` as a file of their own, written atomically."""
    write_h5(path, lambda f: write_models(f.create_group("models"), models))


def write_encoding_models(f, name, models):
    """The models of ``encodings/NAME`` in an open ``store.h5``: ``models/NAME/*`` (replacing
    what the name held), recorded by checksum in the encoding's ``models`` attribute, and
    the store's version raised to :data:`MODELS_VERSION`."""
    root = f.require_group("models")
    if name in root and not _is_model(root[name]):
        del root[name]
    if models:
        write_models(root.create_group(name), models)
    f["encodings/" + name].attrs["models"] = json.dumps(
        {m: model_checksum(models[m]["arrays"]) for m in sorted(models)}, sort_keys=True)
    f.attrs["version"] = max(MODELS_VERSION, int(f.attrs.get("version", 1)))


def _method(h5, name) -> str:
    obj = h5.get("encodings/" + name)
    return "" if obj is None else _text(obj.attrs.get("method", ""))


def _models_of(method) -> tuple:
    return METHODS[method].models if method in METHODS else ()


def model_path(h5, name, model) -> str:
    """Where the model ``model`` of ``encodings/NAME`` is in an open ``store.h5``:
    ``models/NAME/MODEL``, or a version-1 store's ``models/MODEL`` when the encoding has no
    group of its own; ``encodings/idf`` for ``bovw``'s word weights."""
    if model == "idf":
        return "encodings/idf"
    own = h5.get(f"models/{name}")
    legacy = h5.get(f"models/{model}")
    if (own is None or _is_model(own)) and legacy is not None and _is_model(legacy):
        return f"models/{model}"
    return f"models/{name}/{model}"


def encoding_models(h5, name) -> dict:
    """model name -> checksum of the models ``encodings/NAME`` was computed with.

    Recorded in the encoding's ``models`` attribute; for encodings written before it was,
    the store's models of the encoding's method (their recorded or computed checksums)."""
    obj = h5.get("encodings/" + name)
    if obj is None:
        return {}
    recorded = obj.attrs.get("models")
    if recorded is not None:
        return json.loads(_text(recorded))
    out = {}
    for model in _models_of(_method(h5, name)):
        g = h5.get(model_path(h5, name, model))
        if g is None or not _is_model(g):
            continue
        out[model] = _text(g.attrs.get("checksum", "")) or model_checksum(
            {k: g[k][:] for k in g.keys()})
    return out


def _checksum_of(h5, name, model):
    """The checksum of what is stored for ``model`` of encoding NAME, or None if absent."""
    obj = h5.get(model_path(h5, name, model))
    if obj is None:
        return None
    if model == "idf":
        return idf_checksum(obj[:]) if isinstance(obj, h5py.Dataset) else None
    if not _is_model(obj):
        return None
    return model_checksum({k: obj[k][:] for k in obj})


def model_problems(h5, name) -> list:
    """What is wrong with the models of ``encodings/NAME`` in an open ``store.h5``: a
    (path, problem) for each model it was computed with that is missing, or whose arrays
    differ from the checksum the encoding recorded (a model replaced or damaged)."""
    problems = []
    redo = (f"compute the encoding again (`features aggregate {Path(h5.filename).parent} "
            f"--method {_method(h5, name)} --name {name} --replace`)")
    # the models the encoding recorded (an encoding written before they were recorded, or
    # made without models, as a synthetic store's, names those present, if any)
    recorded = encoding_models(h5, name)
    for model, checksum in sorted(recorded.items()):
        path = model_path(h5, name, model)
        try:
            got = _checksum_of(h5, name, model)
        except (OSError, KeyError, RuntimeError) as e:
            problems.append((path, f"is unreadable ({e}); encodings/{name} uses it"))
            continue
        if got is None:
            problems.append((path, f"is missing (encodings/{name} was computed with it); "
                                   f"{redo}"))
        elif got != checksum:
            problems.append((path, f"is not the {model} encodings/{name} was computed with "
                                   f"(its checksum differs: replaced or damaged); {redo}"))
    return problems


def read_encoding_models(h5, name, where="") -> dict:
    """The models of ``encodings/NAME`` in an open ``store.h5`` (model -> {"arrays",
    "attrs"}), each the one the encoding recorded: a missing or different model is a
    :class:`StoreError` naming it (``where``: the store, for the message)."""
    problems = [p for p in model_problems(h5, name) if not p[0].startswith("encodings/")]
    if problems:
        path, problem = problems[0]
        raise StoreError(f"{where or h5.filename}: {path} {problem}")
    out = {}
    for model in encoding_models(h5, name):
        if model != "idf":
            out[model] = _read_model(h5[model_path(h5, name, model)])
    return out


def all_encoding_models(h5) -> dict:
    """encoding name -> its models, for every encoding of an open ``store.h5`` that
    learned some and whose models are sound (others are left out)."""
    out = {}
    for name in list_encodings(h5):
        if not _models_of(_method(h5, name)):
            continue
        try:
            out[name] = read_encoding_models(h5, name)
        except (StoreError, OSError, KeyError):
            continue
    return out


def models_info(h5) -> dict:
    """encoding name -> model -> {path, shape (of its first array in name order), rows,
    learned_from} for every encoding with models in an open ``store.h5`` (attributes and
    shapes only; ``rows`` None for models learned before it was recorded)."""
    out = {}
    for name in list_encodings(h5):
        for model in encoding_models(h5, name):
            if model == "idf":
                continue
            path = model_path(h5, name, model)
            g = h5.get(path)
            entry = {"path": path, "shape": None, "rows": None, "learned_from": None}
            if g is not None and _is_model(g) and len(g):
                entry["shape"] = list(g[sorted(g)[0]].shape)
                entry["rows"] = attr_value(g.attrs["rows"]) if "rows" in g.attrs else None
                entry["learned_from"] = (_text(g.attrs["learned_from"])
                                         if "learned_from" in g.attrs else None)
            out.setdefault(name, {})[model] = entry
    return out


def _text(v) -> str:
    return str(attr_value(v))
