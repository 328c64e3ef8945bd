"""Search-time parameters of an index: how much of it a query reads.

``nprobe`` is how many inverted lists of an IVF index a query scans (FAISS's default, 1,
reads one list in ``nlist``: fast, and it misses neighbours in the others); ``k_factor`` is
how many times ``k`` candidates a refine stage re-scores (FAISS's ``IndexRefine``, or our
sparse one). Any other parameter FAISS's ``ParameterSpace`` knows (``efSearch``,
``max_codes``, ``ht`` ...) is passed to it by name. Parameters are written as FAISS writes
them: ``"nprobe=8,k_factor=4"``.

The manifest records the defaults of a store's index (chosen with the index, or given to
``features index``); :func:`apply_params` sets them on an opened index once. A query that
asks for other values passes them to FAISS with that search only (:func:`query_params`), so
threads sharing one index never see each other's values.
"""
from __future__ import annotations

import math
import re

import faiss

from ..exceptions import ParameterError
from .factory import walk

_INTEGER = ("nprobe", "efSearch", "max_codes", "quantizer_nprobe", "quantizer_efSearch", "ht")


def parse_params(text, param="search_params") -> dict:
    """``"nprobe=8,k_factor=4"`` (or a dict) as a checked dict of numbers."""
    if isinstance(text, dict):
        return {name: check_value(name, value) for name, value in text.items()}
    out = {}
    for item in str(text).split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, raw = item.partition("=")
        name = name.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_]\w*", name):
            raise ParameterError(f"{param} {item!r} is not NAME=VALUE (for example "
                                 f"nprobe=8,k_factor=4)", param)
        try:
            value = float(raw)
        except ValueError:
            raise ParameterError(f"{param} {item!r}: {raw.strip()!r} is not a number",
                                 param) from None
        try:
            out[name] = check_value(name, value)
        except ParameterError as e:
            raise ParameterError(f"{param} {item!r}: {e}", param) from None
    return out


def check_value(name: str, value):
    """``value`` of parameter ``name`` as the number it is, or ParameterError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value):
        raise ParameterError(f"{name} must be a number, got {value!r}", name)
    if name in _INTEGER:
        lowest = 1 if name == "nprobe" else 0
        if value != int(value) or value < lowest:
            raise ParameterError(f"{name} must be an integer >= {lowest}, got {value:g}", name)
        return int(value)
    if name == "k_factor" and value < 1:
        raise ParameterError(f"{name} must be >= 1, got {value:g}", name)
    return float(value)


def _parts(index):
    """(the FAISS index, our sparse refine stage or None)."""
    base = getattr(index, "base", None)
    return (base, index) if base is not None else (index, None)


def _ivfs(index):
    return [sub for sub in walk(index) if isinstance(sub, faiss.IndexIVF)]


def _refines(index):
    return [sub for sub in walk(index) if isinstance(sub, faiss.IndexRefine)]


def _refuse(name, value, what, reason):
    shown = f"{value:g}" if isinstance(value, (int, float)) else repr(value)
    on = f" ({what})" if what else ""
    return ParameterError(f"{name} {shown} does not apply to this index{on}: {reason}", name)


def apply_params(index, params: dict, what: str | None = None) -> dict:
    """Set search parameters on an opened index (once, before it is shared): ParameterError
    for a value out of range or a parameter the index does not have. ``what`` names the
    index in messages (its factory string). Returns the checked parameters."""
    params = parse_params(params)
    faiss_index, sparse = _parts(index)
    space = faiss.ParameterSpace()
    for name, value in params.items():
        if name == "nprobe":
            ivfs = _ivfs(faiss_index)
            if not ivfs:
                raise _refuse(name, value, what, "nprobe is for IVF indexes (inverted lists)")
            for ivf in ivfs:
                ivf.nprobe = value
        elif name == "k_factor":
            refines = _refines(faiss_index)
            if sparse is None and not refines:
                raise _refuse(name, value, what, "k_factor is for indexes with a refine stage")
            if sparse is not None:
                sparse.k_factor = value
            for refine in refines:
                refine.k_factor = value
        else:
            try:
                space.set_index_parameter(faiss_index, name, value)
            except RuntimeError:
                raise _refuse(name, value, what, f"FAISS has no parameter {name!r} for "
                                                 f"it") from None
    return params


def current_params(index) -> dict:
    """The nprobe and k_factor an opened index searches with."""
    faiss_index, sparse = _parts(index)
    out = {}
    ivfs, refines = _ivfs(faiss_index), _refines(faiss_index)
    if ivfs:
        out["nprobe"] = int(ivfs[0].nprobe)
    if sparse is not None:
        out["k_factor"] = float(sparse.k_factor)
    elif refines:
        out["k_factor"] = float(refines[0].k_factor)
    return out


def query_params(index, nprobe=None, k_factor=None, what: str | None = None):
    """(FAISS SearchParameters or None, k_factor of a sparse refine stage or None) for one
    search with these values instead of the index's own; ParameterError as
    :func:`apply_params`."""
    if nprobe is None and k_factor is None:
        return None, None
    faiss_index, sparse = _parts(index)
    if nprobe is not None:
        nprobe = check_value("nprobe", nprobe)
        if not _ivfs(faiss_index):
            raise _refuse("nprobe", nprobe, what, "nprobe is for IVF indexes (inverted lists)")
    if k_factor is not None:
        k_factor = check_value("k_factor", k_factor)
        if sparse is None and not _refines(faiss_index):
            raise _refuse("k_factor", k_factor, what,
                          "k_factor is for indexes with a refine stage")
    params = _search_parameters(faiss.downcast_index(faiss_index), nprobe,
                                None if sparse is not None else k_factor)
    return params, (k_factor if sparse is not None else None)


def _search_parameters(index, nprobe, k_factor):
    """FAISS's per-search parameter objects, nested as the index is (an object holds the
    next one by pointer only: each keeps a reference to its inner one)."""
    if isinstance(index, faiss.IndexIDMap):
        return _search_parameters(faiss.downcast_index(index.index), nprobe, k_factor)
    if isinstance(index, faiss.IndexRefine):
        inner = _search_parameters(faiss.downcast_index(index.base_index), nprobe, None)
        params = faiss.IndexRefineSearchParameters()
        params.k_factor = float(k_factor if k_factor is not None else index.k_factor)
        if inner is not None:
            params.base_index_params = inner
            params.referenced_objects = [inner]
        return params
    if isinstance(index, faiss.IndexPreTransform):
        inner = _search_parameters(faiss.downcast_index(index.index), nprobe, k_factor)
        if inner is None:
            return None
        params = faiss.SearchParametersPreTransform()
        params.index_params = inner
        params.referenced_objects = [inner]
        return params
    if isinstance(index, faiss.IndexIVF) and nprobe is not None:
        params = faiss.SearchParametersIVF()
        params.nprobe = int(nprobe)
        params.max_codes = index.max_codes   # the index's own, not the object's default
        return params
    return None
