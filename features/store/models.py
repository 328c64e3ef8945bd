"""Models that encodings learn (``models/NAME`` in ``store.h5``), and their checksums.

``models/NAME`` is a group of arrays with their parameters as attributes and a ``checksum``
attribute (sha256 of its arrays in name order, with dtypes and shapes:
:func:`model_checksum`). Every encoding carries a ``models`` attribute (JSON: model name ->
checksum of the models it was computed with; ``bovw``: ``idf``, the checksum of
``encodings/idf``), so that two stores can be compared without reading the arrays.

==============  =============================================  ==========================
model           arrays                                         used by
==============  =============================================  ==========================
kmeans-vlad     ``centers`` (k, d)                             ``vlad``
pca             ``mean``, ``components``, ``explained_variance``  ``fisher``
gmm             ``means``, ``covariances``, ``priors``         ``fisher``
==============  =============================================  ==========================

A model is kept as ``{"arrays": {name: ndarray}, "attrs": {name: value}}``.
"""
from __future__ import annotations

import json

from .._shared.hashing import array_sha256
from ..encodings.methods import METHODS
from .encodings import attr_value
from .h5files import write_h5


def model_checksum(arrays: dict) -> str:
    """The checksum of one model: its arrays in name order."""
    return array_sha256(*[arrays[k] for k in sorted(arrays)])


def read_models(h5) -> dict:
    """Every model under ``models/`` of an open HDF5 file."""
    out = {}
    g = h5.get("models")
    if g is None:
        return out
    for model in g:
        out[model] = {"arrays": {k: g[model][k][:] for k in g[model]},
                      "attrs": {k: attr_value(v) for k, v in g[model].attrs.items()}}
    return out


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
    for model in _models_of(_text(obj.attrs.get("method", ""))):
        g = h5.get("models/" + model)
        if g is None:
            continue
        out[model] = _text(g.attrs.get("checksum", "")) or model_checksum(
            {k: g[k][:] for k in g.keys()})
    return out


def _text(v) -> str:
    return str(attr_value(v))


def _models_of(method) -> tuple:
    return METHODS[method].models if method in METHODS else ()
