"""Rows of an encoding computed from images' features: the one computation behind a stored
row and a query's row.

``features aggregate`` encodes a shard at a time and a query encodes one image, both with
:func:`encode_rows`, so a query by a stored image's own file gives exactly its stored row
(after :func:`as_stored`, the cast to the stored dtype). Arrays in, arrays out: the models
are the store's plain form, ``{"arrays": {...}, "attrs": {...}}`` per model name
(``features.store.models``).

Inputs for ``n`` images, concatenated: ``words`` (M,) and ``frames`` (M, 4) for ``bovw``
and ``spm``; ``descriptors`` (M, 128) for ``vlad`` and ``fisher`` (with ``frames`` when
Fisher vectors are pooled over ``grids``); ``offsets`` (n + 1): image i's features are
rows ``offsets[i]:offsets[i + 1]``; ``widths``, ``heights`` (n,) of the original images.
"""
from __future__ import annotations

import numpy as np

from .._shared.threads import one_blas_thread
from ..exceptions import ParameterError
from .fisher import fisher_vector_batch
from .kernel_map import HomogeneousKernelMap
from .methods import METHODS, dimension
from .positions import append_positions, centred_positions, unit_positions
from .spm import parse_grids, spatial_pyramid
from .vlad import vlad_batch


def encode_rows(method, params, *, offsets, widths, heights, words=None, frames=None,
                descriptors=None, n_words=0, models=None, units="pixels"):
    """Rows of encoding ``method`` with its checked ``params`` (``methods.check_options``)
    for the images ``offsets`` delimits: a ``scipy.sparse`` CSR matrix for the sparse
    methods, a float32 (n, dim) array for the dense ones, before the cast to the
    stored dtype. ``n_words``: the codebook's size (sparse methods); ``models``: the
    store's models the method uses; ``units``: those of ``frames`` (the store's
    ``frame_units``)."""
    m = METHODS.get(method)
    if m is None:
        raise ParameterError(f"method must be one of {', '.join(METHODS)}, got {method!r}",
                             "method")
    offsets = np.asarray(offsets, np.int64)
    widths, heights = np.asarray(widths), np.asarray(heights)
    if m.sparse:
        hkm = (HomogeneousKernelMap(params["kernel_map"], params["kernel_order"])
               if params.get("kernel_map") else None)
        return spatial_pyramid(words, frames, offsets, widths, heights, n_words,
                               params.get("grids", "1x1"), weights=params.get("weights", "lazebnik"),
                               normalization=params["normalization"], kernel_map=hkm, units=units)
    models = models or {}
    missing = [name for name in m.models if name not in models]
    if missing:
        raise ParameterError(f"method {method} needs the model(s) {', '.join(missing)}",
                             "models")
    descriptors = np.asarray(descriptors)
    desc_dim = descriptors.shape[1] if descriptors.ndim == 2 else 128
    n = len(offsets) - 1
    rows = np.zeros((n, dimension(method, params, n_words, desc_dim)), np.float32)
    if method == "vlad":
        vlad_batch(descriptors, offsets, models["kmeans-vlad"]["arrays"]["centers"], out=rows)
        return rows
    y = project(descriptors, models["pca"], offsets)
    if params.get("xy_weight") is not None:
        y = append_positions(y, centred_positions(frames, offsets, widths, heights, units),
                             params["xy_weight"])
    g = models["gmm"]["arrays"]
    grids = params.get("grids")
    if grids:
        order, seg, n_cells = cell_order(frames, offsets, widths, heights, grids, units)
        fisher_vector_batch(y[order], seg, g["means"], g["covariances"], g["priors"],
                            improved=True, out=rows.reshape(n * n_cells, -1))
        # Each cell's vector is improved (signed sqrt, L2); the whole pyramid is then
        # L2-normalized so that every image has unit norm.
        norms = np.linalg.norm(rows, axis=1, keepdims=True)
        np.divide(rows, norms, out=rows, where=norms > 0)
    else:
        fisher_vector_batch(y, offsets, g["means"], g["covariances"], g["priors"],
                            improved=True, out=rows)
    return rows


def as_stored(rows, dtype) -> np.ndarray:
    """Dense rows as the store keeps them (``dtype``: float16 or float32), back in float32:
    what a reader of the stored rows gets."""
    return np.asarray(np.asarray(rows, dtype), np.float32)


def project(x, pca_model, offsets=None) -> np.ndarray:
    """Descriptors (M, d) projected by a stored PCA model (and whitened if it was learned
    so): float32 (M, dims). With ``offsets``, each image's descriptors are projected on
    their own, and always on one BLAS thread, so that a row depends neither on the images
    encoded with it nor on the threads (the rounding of a BLAS product depends on both)."""
    a = pca_model["arrays"]
    x = np.asarray(x, np.float32)
    mean, basis = a["mean"], a["components"].T
    y = np.empty((len(x), basis.shape[1]), np.float32)
    spans = [(0, len(x))] if offsets is None else zip(offsets[:-1], offsets[1:])
    with one_blas_thread():
        for lo, hi in spans:
            if hi > lo:
                np.matmul(x[lo:hi] - mean, basis, out=y[lo:hi])
    if pca_model["attrs"].get("whiten"):
        y /= np.sqrt(a["explained_variance"] + pca_model["attrs"]["eps"]).astype(np.float32)
    return y


def cell_order(frames, offsets, widths, heights, grids, units):
    """Descriptor order that groups each image's descriptors by pyramid cell, and the offsets
    of the (image, cell) segments: a pyramid of per-cell encodings is then one batch call."""
    grids = parse_grids(grids)
    n = len(offsets) - 1
    counts = np.diff(offsets)
    image = np.repeat(np.arange(n, dtype=np.int64), counts)
    fx, fy = unit_positions(frames, offsets, widths, heights, units)
    n_cells = sum(r * c for r, c in grids)
    # A descriptor belongs to one cell per grid, so it is listed once per grid.
    keys, rows = [], []
    at = 0
    for rows_, cols in grids:
        r = np.clip(np.floor(fy * rows_), 0, rows_ - 1).astype(np.int64)
        c = np.clip(np.floor(fx * cols), 0, cols - 1).astype(np.int64)
        keys.append(image * n_cells + at + r * cols + c)
        rows.append(np.arange(len(image)))
        at += rows_ * cols
    keys = np.concatenate(keys)
    rows = np.concatenate(rows)
    order = np.argsort(keys, kind="stable")
    seg_offsets = np.zeros(n * n_cells + 1, np.int64)
    np.cumsum(np.bincount(keys, minlength=n * n_cells), out=seg_offsets[1:])
    return rows[order], seg_offsets, n_cells
